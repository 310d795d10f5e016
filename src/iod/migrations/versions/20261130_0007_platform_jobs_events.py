"""generic jobs (args, lock key, queue), periodic runs, domain events with positions

Revision ID: 20261130_0007
Revises: 20261126_0006
Create Date: 2026-11-30 09:00:00.000000

Existing jobs keep running: each gets the lock key `connection:<its connection>`, so the
order and exclusion per connection that the previous release's code kept by connection id
stay exactly as they were. The previous release's code still works on this schema (it
writes connection jobs, which get the column defaults: no lock key, which only the new
code reads) but a deploy should not mix the two workers for long.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0007"
down_revision: str | None = "20261126_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=32), type_=sa.String(length=64)
        )
        batch_op.alter_column("connection_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.add_column(sa.Column("args", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("lock_key", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("queue", sa.String(length=32), server_default="default", nullable=False)
        )
        batch_op.drop_index("ix_jobs_connection_id_state_scheduled_at")
        batch_op.create_index(
            "ix_jobs_lock_key_state_scheduled_at", ["lock_key", "state", "scheduled_at"]
        )
        batch_op.create_index("ix_jobs_finished_at", ["finished_at"])
    # Only unfinished jobs take part in ordering: the history (never purged before 0007) is
    # left as it is, so the upgrade does not rewrite every job row ever written.
    op.execute(
        "UPDATE jobs SET lock_key = 'connection:' || connection_id"
        " WHERE connection_id IS NOT NULL AND state IN ('queued', 'running')"
    )
    op.create_table(
        "periodic_runs",
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("period_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task", "period_at", name=op.f("pk_periodic_runs")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("actor", sa.JSON(), nullable=True),
        sa.Column("at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("customer_id", "position", name=op.f("uq_events_customer_id_position")),
    )
    op.create_index(op.f("ix_events_at"), "events", ["at"], unique=False)
    op.create_table(
        "event_streams",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_event_streams")),
    )


def downgrade() -> None:
    op.drop_table("event_streams")
    op.drop_index(op.f("ix_events_at"), table_name="events")
    op.drop_table("events")
    op.drop_table("periodic_runs")
    # The previous schema only knows connection jobs with short kind names.
    op.execute("DELETE FROM jobs WHERE connection_id IS NULL OR length(kind) > 32")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_index("ix_jobs_lock_key_state_scheduled_at")
        batch_op.create_index(
            "ix_jobs_connection_id_state_scheduled_at", ["connection_id", "state", "scheduled_at"]
        )
        batch_op.drop_column("queue")
        batch_op.drop_column("lock_key")
        batch_op.drop_column("args")
        batch_op.alter_column("connection_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=64), type_=sa.String(length=32)
        )
