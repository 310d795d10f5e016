"""an index of the free IPv4 blocks only

Revision ID: 20261204_0016
Revises: 20261201_0015
Create Date: 2026-12-04 18:10:00.000000

`ix_ipv4_blocks_location_id_prefix_length_connection_id` held every block with its
connection; the one query it was for (`addressing.allocate`: the lowest free block of a size
at a location, `connection_id IS NULL ORDER BY offset LIMIT 1`) did not use it on SQLite,
whose planner walked the location's blocks in the primary key's order instead: each order
at a location with n blocks in use read n index entries. Its replacement,
`ix_ipv4_blocks_location_id_prefix_length_offset`, holds the free blocks only (partial,
`connection_id IS NULL`), in the query's order: the first entry is the answer, and a new
block in use adds no entry (docs/performance.md, "Fifteenth step: the free-block index").

The previous release's code runs on this schema correctly, not faster: PostgreSQL plans its
query on the new index from its statistics, but SQLite's planner, without statistics, takes
the unique index of `connection_id` for `IS NULL` (every free block of every location, then
a sort), which is why this release names the index on SQLite (`INDEXED BY`). The new index
is built before the old one is dropped: while it is built, writes to `ipv4_blocks` wait
(reads go on), and the DROP's lock, which blocks reads too, is held for a moment at the end.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_0016"
down_revision: str | None = "20261201_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "ix_ipv4_blocks_location_id_prefix_length_connection_id"
_NEW = "ix_ipv4_blocks_location_id_prefix_length_offset"
_FREE = sa.text("connection_id IS NULL")


def upgrade() -> None:
    op.create_index(_NEW, "ipv4_blocks", ["location_id", "prefix_length", "offset"],
                    postgresql_where=_FREE, sqlite_where=_FREE)  # fmt: skip
    op.drop_index(_OLD, table_name="ipv4_blocks")


def downgrade() -> None:
    op.create_index(_OLD, "ipv4_blocks", ["location_id", "prefix_length", "connection_id"])
    op.drop_index(_NEW, table_name="ipv4_blocks")
