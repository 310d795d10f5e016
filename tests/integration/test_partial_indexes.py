"""The partial indexes (`models._index_not_null`, migration 20261201_0015; the free IPv4
blocks', migration 20261204_0016): the database has the models' predicates (alembic's
comparison, tests/integration/test_migrations.py, does not look at them), and the queries
they are for still use them on both databases."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Index, event, inspect, text
from sqlalchemy.orm import Session

from iod.connections import repository as connections
from iod.infra.db import Base, Database
from iod.jobs import queue
from iod.locations import addressing
from iod.schedules import repository as schedules


def _predicate(value: Any) -> str | None:
    """A WHERE of an index as text, without the parentheses and case the database adds."""
    if value is None:
        return None
    return re.sub(r"\s+", " ", str(value).replace("(", "").replace(")", "")).strip().lower()


def test_partial_indexes_match_models(database: Database) -> None:
    dialect = database.engine.dialect.name
    inspector = inspect(database.engine)
    partial = 0
    for table in Base.metadata.sorted_tables:
        reflected = {ix["name"]: ix for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            assert isinstance(index, Index) and isinstance(index.name, str)
            wanted = _predicate(index.dialect_options[dialect].get("where"))
            found = reflected[index.name].get("dialect_options", {}).get(f"{dialect}_where")
            assert _predicate(found) == wanted, index.name
            partial += wanted is not None
    # revert_of, schedule_id (bandwidth_changes), finished_at (jobs), the free ipv4_blocks
    assert partial == 4


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and their parameters) run on `engine` meanwhile."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# A job history where `finished_at < 2030` is the selective condition (every job finished
# later), as in a table that purging keeps short: the index the purge is for is the best plan.
_FINISHED_LATER = (
    "INSERT INTO jobs (kind, args, queue, state, run_at, scheduled_at, attempts, max_attempts,"
    " created_at, finished_at) VALUES ('t', '{}', 'default', :state, :at, :at, 1, 1, :at, :at)"
)


def _seed_jobs(session: Session) -> None:
    at = datetime(2031, 1, 1, tzinfo=UTC)
    rows = [{"state": ("done", "failed")[i % 2], "at": at} for i in range(2000)]
    session.execute(text(_FINISHED_LATER), rows)


_QUERIES: list[tuple[str, Callable[[Session], object], Callable[[Session], None] | None]] = [
    ("ix_bandwidth_changes_revert_of", lambda s: connections.revert_of(s, "chg_1"), None),
    ("ix_bandwidth_changes_schedule_id", lambda s: schedules.unstarted_changes(s, "sch_1"), None),
    ("ix_jobs_finished_at",
     lambda s: queue.purge_finished(s, datetime(2030, 1, 1, tzinfo=UTC)), _seed_jobs),
]  # fmt: skip


@pytest.mark.parametrize(("index", "query", "seed"), _QUERIES, ids=[q[0] for q in _QUERIES])
def test_queries_use_the_partial_indexes(
    database: Database,
    index: str,
    query: Callable[[Session], object],
    seed: Callable[[Session], None] | None,
) -> None:
    """The query's own SQL, explained: its condition (`= x`, `< x`) implies `IS NOT NULL`,
    so the planner may use the partial index (PostgreSQL with sequential scans disabled, so
    the plan shows whether the index is usable at all)."""
    postgres = database.engine.dialect.name == "postgresql"
    if seed is not None:
        with database.write() as session:
            seed(session)
        with database.engine.begin() as conn:
            conn.execute(text("ANALYZE jobs" if postgres else "ANALYZE"))
    with database.write() as session:
        with _statements(database.engine) as seen:
            query(session)
        statement, parameters = seen[0]
        if postgres:
            session.execute(text("SET LOCAL enable_seqscan = off"))
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        raw = session.connection().exec_driver_sql(explain + statement, parameters)
        plan = "\n".join(str(row[-1]) for row in raw)
    assert index in plan, plan


def _seed_blocks(database: Database, used: int, free: list[int]) -> None:
    """A location whose pool has `used` /30 blocks in use and free ones at `free` (offsets
    in blocks), and a few free /29s beside them."""
    at = datetime(2030, 1, 1, tzinfo=UTC)
    t = at.replace(tzinfo=None) if database.is_sqlite else at
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO locations (id, name, address, capacity_mbps, tiers_mbps, ipv4_pool,"
                " ipv4_next, committed_mbps, created_at, updated_at) VALUES ('PLX', 'n', 'a',"
                " 1000, '[100]', '10.0.0.0/8', :next, 0, :t, :t)"
            ),
            {"next": (used + len(free)) * 4 + 64, "t": t},
        )
        blocks = [
            {"offset": n * 4, "size": 30, "network": f"net{n}",
             "connection": None if n in free else f"con_{n}"}
            for n in range(used + len(free))
        ] + [
            {"offset": (used + len(free)) * 4 + n * 8, "size": 29, "network": f"net{n}",
             "connection": None}
            for n in range(3)
        ]  # fmt: skip
        conn.execute(
            text(
                'INSERT INTO ipv4_blocks (location_id, "offset", prefix_length, network,'
                " connection_id) VALUES ('PLX', :offset, :size, :network, :connection)"
            ),
            blocks,
        )
        conn.execute(text("ANALYZE"))


def test_a_free_block_is_found_in_the_index_of_free_blocks(database: Database) -> None:
    """An order's free-block query (`addressing.free_blocks`) reads the partial index of the
    free blocks, in its order: no walk over the blocks in use (SQLite's planner walked the
    primary key, a location's every block, with the index of all blocks before 0016), no
    sort. And it finds the lowest free block of the size asked for."""
    postgres = database.engine.dialect.name == "postgresql"
    _seed_blocks(database, used=3000, free=[1700, 2400])
    with database.write() as session:
        found = addressing.free_blocks(session).rows(session, location="PLX", prefix=30)
        assert [row.offset for row in found] == [1700 * 4]
        assert addressing.free_blocks(session).rows(session, location="PLX", prefix=28) == []
        connection = session.connection()
        compiled = addressing.free_blocks(session)._compiled_for(connection)
        bound = compiled.bind({"location": "PLX", "prefix": 30})
        if postgres:
            session.execute(text("SET LOCAL enable_seqscan = off"))
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        raw = connection.exec_driver_sql(explain + compiled.sql, bound)
        plan = "\n".join(str(row[-1]) for row in raw)
    assert "ix_ipv4_blocks_location_id_prefix_length_offset" in plan, plan
    assert "sort" not in plan.lower() and "TEMP B-TREE" not in plan, plan
