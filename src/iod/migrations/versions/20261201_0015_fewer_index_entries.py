"""fewer index entries and foreign-key checks per planned transition

Revision ID: 20261201_0015
Revises: 20261130_0014
Create Date: 2026-12-01 07:20:00.000000

Three indexes become partial, without their NULLs, which no query reads (each is looked up
only by value: `revert_of = x`, `schedule_id = x`, `finished_at < x`):
`ix_bandwidth_changes_revert_of`, `ix_bandwidth_changes_schedule_id`, `ix_jobs_finished_at`.
And `schedule_transitions` loses its foreign key to `schedules` (the planner writes a
transition with the schedule's row locked; deleting a schedule deletes its transitions
first). docs/performance.md, "Fewer index entries and foreign-key checks per planned
transition".

The previous release's code runs on this schema unchanged (its queries use the partial
indexes alike; it deletes transitions before their schedule). The indexes are rebuilt: on a
large `jobs` or `bandwidth_changes` table the upgrade holds their write lock meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261201_0015"
down_revision: str | None = "20261130_0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, column) of the indexes that become partial
_PARTIAL = (
    ("ix_bandwidth_changes_revert_of", "bandwidth_changes", "revert_of"),
    ("ix_bandwidth_changes_schedule_id", "bandwidth_changes", "schedule_id"),
    ("ix_jobs_finished_at", "jobs", "finished_at"),
)
_FK = "fk_schedule_transitions_schedule_id_schedules"


def upgrade() -> None:
    for name, table, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        predicate = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], postgresql_where=predicate, sqlite_where=predicate)
    with op.batch_alter_table("schedule_transitions", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")


def downgrade() -> None:
    # Rows of a deleted schedule would fail the foreign key; the code leaves none (it deletes
    # a schedule's transitions with it), but this schema no longer refused them.
    op.execute(
        "DELETE FROM schedule_transitions WHERE schedule_id NOT IN (SELECT id FROM schedules)"
    )
    with op.batch_alter_table("schedule_transitions", schema=None) as batch_op:
        batch_op.create_foreign_key(_FK, "schedules", ["schedule_id"], ["id"])
    for name, table, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
