"""recurring bandwidth schedules: schedules, their planned transitions, changes' schedule

Revision ID: 20261130_0010
Revises: 20261130_0009
Create Date: 2026-11-30 12:30:00.000000

Additive only: two new tables and a nullable column (with its index) on bandwidth_changes,
so the previous release's code runs on this schema unchanged.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0010"
down_revision: str | None = "20261130_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("default_mbps", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("exceptions", sa.JSON(), nullable=False),
        sa.Column("valid_from", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("anchor", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("planned_until", iod.infra.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"]),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id"),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_customer_id_id", ["customer_id", "id"], unique=False)
        batch_op.create_index(
            "ix_schedules_paused_planned_until", ["paused", "planned_until"], unique=False
        )
    op.create_table(
        "schedule_transitions",
        sa.Column("schedule_id", sa.String(length=40), nullable=False),
        sa.Column("at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("mbps", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("change_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"]),
        sa.PrimaryKeyConstraint("schedule_id", "at"),
    )
    with op.batch_alter_table("bandwidth_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule_id", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_bandwidth_changes_schedule_id", ["schedule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bandwidth_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_bandwidth_changes_schedule_id")
        batch_op.drop_column("schedule_id")
    op.drop_table("schedule_transitions")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_paused_planned_until")
        batch_op.drop_index("ix_schedules_customer_id_id")
    op.drop_table("schedules")
