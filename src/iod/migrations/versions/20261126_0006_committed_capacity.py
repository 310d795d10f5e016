"""maintained committed capacity: connections.committed_mbps and locations.committed_mbps

Revision ID: 20261126_0006
Revises: 20261126_0005
Create Date: 2026-11-26 21:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261126_0006"
down_revision: str | None = "20261126_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("committed_mbps", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("committed_mbps", sa.Integer(), server_default="0", nullable=False)
        )
    _backfill(op.get_bind())


def _backfill(bind: sa.engine.Connection) -> None:
    """The figures as `committed_at_location` computes them at this revision: a live
    connection commits the most of its bandwidth and its pending changes' (scheduled or
    applying), a terminated one 0; a location the sum of its connections'."""
    # The one interpolation below is one of these two function names.
    greatest = "max" if bind.dialect.name == "sqlite" else "greatest"
    bind.execute(
        sa.text(
            "UPDATE connections SET committed_mbps = CASE WHEN status = 'terminated' THEN 0"  # noqa: S608
            f" ELSE {greatest}(bandwidth_mbps, COALESCE((SELECT max(c.to_mbps)"
            " FROM bandwidth_changes c WHERE c.connection_id = connections.id"
            " AND c.status IN ('scheduled', 'applying')), 0)) END"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE locations SET committed_mbps = (SELECT COALESCE(sum(k.committed_mbps), 0)"
            " FROM connections k WHERE k.location_id = locations.id)"
        )
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has it): a batch operation would copy `locations`
    # and drop the original, which SQLite's foreign keys refuse once connections exist.
    op.execute("ALTER TABLE locations DROP COLUMN committed_mbps")
    op.execute("ALTER TABLE connections DROP COLUMN committed_mbps")
