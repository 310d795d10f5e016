"""the customer portal: people (portal users), one-time sign-in links, server-side sessions

Revision ID: 20261130_0011
Revises: 20261130_0010
Create Date: 2026-11-30 12:30:00.000000

New tables only: the previous release's code never reads them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0011"
down_revision: str | None = "20261130_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_users",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failed_sign_ins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_portal_users_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_users")),
        sa.UniqueConstraint("email", name=op.f("uq_portal_users_email")),
    )
    op.create_index(
        op.f("ix_portal_users_customer_id"), "portal_users", ["customer_id"], unique=False
    )
    op.create_table(
        "portal_sign_in_links",
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["portal_users.id"],
            name=op.f("fk_portal_sign_in_links_user_id_portal_users"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_portal_sign_in_links")),
    )
    op.create_index(
        op.f("ix_portal_sign_in_links_expires_at"), "portal_sign_in_links", ["expires_at"]
    )
    op.create_index(op.f("ix_portal_sign_in_links_user_id"), "portal_sign_in_links", ["user_id"])
    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["portal_users.id"], name=op.f("fk_portal_sessions_user_id_portal_users")
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_portal_sessions")),
    )
    op.create_index(op.f("ix_portal_sessions_expires_at"), "portal_sessions", ["expires_at"])
    op.create_index(op.f("ix_portal_sessions_user_id"), "portal_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_portal_sessions_user_id"), table_name="portal_sessions")
    op.drop_index(op.f("ix_portal_sessions_expires_at"), table_name="portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_index(op.f("ix_portal_sign_in_links_user_id"), table_name="portal_sign_in_links")
    op.drop_index(op.f("ix_portal_sign_in_links_expires_at"), table_name="portal_sign_in_links")
    op.drop_table("portal_sign_in_links")
    op.drop_index(op.f("ix_portal_users_customer_id"), table_name="portal_users")
    op.drop_table("portal_users")
