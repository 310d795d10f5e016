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
indexes alike; it deletes transitions before their schedule), so it may keep serving during
the upgrade. While the new indexes are built, writes to `jobs` and `bandwidth_changes` wait
(reads go on); the old indexes are dropped only at the end (`_rebuild`), so the lock that
also blocks reads is held for moments, not for the builds of a large table.
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


def _rebuild(partial: bool) -> None:
    """The indexes of _PARTIAL made anew, partial (without NULLs) or whole. Each new one is
    built beside the old one first (CREATE INDEX takes a SHARE lock: writes wait, reads go
    on); only then are the old ones dropped and the new ones renamed. A DROP INDEX takes an
    ACCESS EXCLUSIVE lock, which blocks reads too and is held to the commit, so it comes
    last, just before the commit, instead of being held through the builds."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, column in _PARTIAL:
        predicate = sa.text(f"{column} IS NOT NULL") if partial else None
        if not postgres:  # SQLite renames no index; its writer holds the whole file anyway
            op.drop_index(name, table_name=table)
        op.create_index(f"{name}_new" if postgres else name, table, [column],
                        postgresql_where=predicate, sqlite_where=predicate)  # fmt: skip
    for name, table, _ in _PARTIAL if postgres else ():
        op.drop_index(name, table_name=table)
        op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    _rebuild(partial=True)
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
    _rebuild(partial=False)
