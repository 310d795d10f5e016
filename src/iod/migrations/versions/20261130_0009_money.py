"""money: price book, quotes, metered usage, statements (issue 15)

Revision ID: 20261130_0009
Revises: 20261130_0008
Create Date: 2026-11-30 12:30:00.000000

New tables only: the previous release's code runs unchanged on this schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0009"
down_revision: str | None = "20261130_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, iod.infra.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("tier_mbps", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hourly_minor", sa.Integer(), nullable=False),
        sa.Column("monthly_cap_minor", sa.Integer(), nullable=True),
        _at("effective_from"),
        _at("created_at"),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_prices_location_id_locations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint(
            "location_id",
            "tier_mbps",
            "effective_from",
            name=op.f("uq_prices_location_id_tier_mbps_effective_from"),
        ),
    )
    op.create_table(
        "quotes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=True),
        sa.Column("tier_mbps", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hourly_minor", sa.Integer(), nullable=False),
        sa.Column("monthly_cap_minor", sa.Integer(), nullable=True),
        sa.Column("price_id", sa.String(length=40), nullable=False),
        _at("effective_at", True),
        _at("revert_at", True),
        _at("created_at"),
        _at("expires_at"),
        _at("used_at", True),
        sa.Column("used_connection_id", sa.String(length=40), nullable=True),
        sa.Column("used_change_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
    )
    op.create_index(op.f("ix_quotes_customer_id_id"), "quotes", ["customer_id", "id"])
    op.create_index(op.f("ix_quotes_used_connection_id"), "quotes", ["used_connection_id"])
    op.create_table(
        "usage_hours",
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        _at("hour"),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        _at("rated_at"),
        sa.PrimaryKeyConstraint("connection_id", "hour", name=op.f("pk_usage_hours")),
    )
    op.create_table(
        "usage_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        _at("hour"),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        _at("start_at"),
        _at("end_at"),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("tier_mbps", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hourly_minor", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("monthly_cap_minor", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=48), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_lines")),
        sa.UniqueConstraint(
            "connection_id",
            "hour",
            "start_at",
            name=op.f("uq_usage_lines_connection_id_hour_start_at"),
        ),
    )
    op.create_index(op.f("ix_usage_lines_customer_id_hour"), "usage_lines", ["customer_id", "hour"])
    op.create_table(
        "metered_hours",
        _at("hour"),
        _at("completed_at"),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_metered_hours")),
    )
    op.create_table(
        "statement_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("tier_mbps", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hourly_minor", sa.Integer(), nullable=False),
        sa.Column("monthly_cap_minor", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=48), nullable=False),
        _at("start_at"),
        _at("end_at"),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_intervals")),
    )
    op.create_index(
        op.f("ix_statement_intervals_customer_id_month_connection_id"),
        "statement_intervals",
        ["customer_id", "month", "connection_id"],
    )
    op.create_index(
        op.f("ix_statement_intervals_connection_id_end_at"),
        "statement_intervals",
        ["connection_id", "end_at"],
    )
    op.create_table(
        "statements",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        _at("created_at"),
        _at("closed_at", True),
        sa.Column("document", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint("customer_id", "month", name=op.f("uq_statements_customer_id_month")),
    )


def downgrade() -> None:
    op.drop_table("statements")
    op.drop_table("statement_intervals")
    op.drop_table("metered_hours")
    op.drop_index(op.f("ix_usage_lines_customer_id_hour"), table_name="usage_lines")
    op.drop_table("usage_lines")
    op.drop_table("usage_hours")
    op.drop_index(op.f("ix_quotes_used_connection_id"), table_name="quotes")
    op.drop_index(op.f("ix_quotes_customer_id_id"), table_name="quotes")
    op.drop_table("quotes")
    op.drop_table("prices")
