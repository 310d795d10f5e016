"""Revision 20261204_0016 (the index of free IPv4 blocks replaces the index of all blocks)
with blocks in the table: the upgrade and the downgrade keep them and swap the indexes, and
a free block is found the same after each. On SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from iod.infra.db import Database
from tests.conftest import migrate_to
from tests.integration.test_partial_indexes import _seed_blocks

BEFORE = "20261201_0015"
OLD = "ix_ipv4_blocks_location_id_prefix_length_connection_id"
NEW = "ix_ipv4_blocks_location_id_prefix_length_offset"


def _indexes(database: Database) -> dict[str, list[str | None]]:
    return {
        str(ix["name"]): list(ix["column_names"])
        for ix in inspect(database.engine).get_indexes("ipv4_blocks")
    }


def _first_free(database: Database) -> list[tuple[int, str]]:
    with database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT \"offset\", network FROM ipv4_blocks WHERE location_id = 'PLX'"
                ' AND prefix_length = 30 AND connection_id IS NULL ORDER BY "offset" LIMIT 1'
            )
        )
        return [(row[0], row[1]) for row in rows]


def _count(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM ipv4_blocks")).scalar_one())


def test_blocks_survive_the_upgrade_and_the_downgrade(database: Database) -> None:
    migrate_to(database, BEFORE, down=True)
    assert _indexes(database).get(OLD) == ["location_id", "prefix_length", "connection_id"]
    _seed_blocks(database, used=2, free=[1, 3])  # /30s at 0 and 8 in use, 4 and 12 free
    migrate_to(database, "head", down=False)
    indexes = _indexes(database)
    assert OLD not in indexes
    assert indexes[NEW] == ["location_id", "prefix_length", "offset"]
    assert _count(database) == 7 and _first_free(database) == [(4, "net1")]
    migrate_to(database, BEFORE, down=True)
    indexes = _indexes(database)
    assert NEW not in indexes and OLD in indexes
    assert _count(database) == 7 and _first_free(database) == [(4, "net1")]
    migrate_to(database, "head", down=False)
    assert NEW in _indexes(database) and _count(database) == 7
