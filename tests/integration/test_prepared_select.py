"""`PreparedSelect` (db.py), the hottest reads' way around SQLAlchemy's execution: the same
rows and values as SQLAlchemy Core gives, and database errors as SQLAlchemy's exceptions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, exc, insert, select

from iod.connections import repository
from iod.infra.db import Database, PreparedSelect
from iod.models import BandwidthChange, Connection, Customer, Location
from tests.conftest import _prepare_postgres

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _seed(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(Customer), [{"id": "cus_a", "name": "A", "created_at": NOW}])
        conn.execute(
            insert(Location),
            [{"id": "LOC-1", "name": "L", "address": "x", "capacity_mbps": 10_000,
              "tiers_mbps": [100, 200, 300], "ipv4_pool": "10.0.0.0/16",
              "created_at": NOW, "updated_at": NOW}],
        )  # fmt: skip
        conn.execute(
            insert(Connection),
            [
                {"id": f"con_{i}", "customer_id": "cus_a", "location_id": "LOC-1",
                 "status": "active", "bandwidth_mbps": 100 * (i + 1), "description": None,
                 "created_by": "cli_a", "created_at": NOW, "updated_at": NOW}
                for i in range(3)
            ],
        )  # fmt: skip
        conn.execute(
            insert(BandwidthChange),
            [
                {"id": f"chg_{i}", "connection_id": "con_0", "to_mbps": 500 + i,
                 "effective_at": NOW, "status": status, "requested_by": "cli_a",
                 "requested_at": NOW}
                for i, status in enumerate(["scheduled", "applied", "applying"])
            ],
        )  # fmt: skip


def test_rows_are_what_sqlalchemy_core_gives(database: Database) -> None:
    _seed(database)
    prepared = database.prepared(repository._VIEW)
    assert database.prepared(repository._VIEW) is prepared  # compiled once per database
    params = {"connection_id": "con_0", "customer_id": "cus_a"}
    with database.engine.connect() as conn:
        expected = [tuple(row) for row in conn.execute(repository._VIEW, params)]
    rows = prepared.rows(**params)
    assert [tuple(row) for row in rows] == expected
    assert len(rows) == 2  # the scheduled and the applying change, not the applied one
    assert rows[0].created_at == NOW and rows[0].created_at.tzinfo is not None
    assert rows[0]._fields[:2] == ("id", "status")
    assert prepared.rows(connection_id="con_0", customer_id="cus_other") == []


def test_a_page_and_its_pending_changes_in_one_statement(database: Database) -> None:
    _seed(database)
    rows = repository.page_for_customer(
        database, "cus_a", statuses=["active"], location_id=None, after_id=None, limit=2
    )
    assert [(r.id, r.change_id) for r in rows] == [
        ("con_0", "chg_0"), ("con_0", "chg_2"), ("con_1", None),
    ]  # fmt: skip
    rows = repository.page_for_customer(
        database, "cus_a", statuses=["active", "suspended"], location_id="LOC-1",
        after_id="con_1", limit=10,
    )  # fmt: skip
    assert [r.id for r in rows] == ["con_2"]


def test_database_errors_come_out_as_sqlalchemy_exceptions(database: Database) -> None:
    broken = PreparedSelect(
        database.engine,
        database._readers,
        select(Connection.__table__.c.id).where(
            Connection.__table__.c.id == bindparam("connection_id")
        ),
    )
    broken.sql = "SELECT id FROM no_such_table WHERE id = " + (
        "?" if database.is_sqlite else "%(connection_id)s"
    )
    with pytest.raises(exc.DBAPIError) as raised:
        broken.rows(connection_id="con_0")
    assert "no_such_table" in str(raised.value)
    # The failed read closed the thread's kept connection; the next read takes a new one.
    assert not database._readers._kept
    _seed(database)
    assert database.prepared(repository._VIEW).rows(connection_id="con_1", customer_id="cus_a")


def test_a_dead_pooled_connection_is_replaced() -> None:
    """PostgreSQL: the server ends the pooled connections (as a restart does)."""
    database = _prepare_postgres()
    _seed(database)
    prepared = database.prepared(repository._VIEW)
    assert prepared.rows(connection_id="con_1", customer_id="cus_a")  # pools a connection
    with database.engine.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # The kept connection is dead: the read notices and is tried once more on a new one.
    assert prepared.rows(connection_id="con_1", customer_id="cus_a")
    database.dispose()


def test_a_missing_parameter_is_an_error_not_null(database: Database) -> None:
    with pytest.raises(TypeError, match="customer_id"):
        database.prepared(repository._VIEW).rows(connection_id="con_0")


def test_a_thread_that_ends_gives_its_connection_back(database: Database) -> None:
    """Each reading thread keeps one connection from a pool as large as the engine's: when
    threads come and go, the pool must not run dry. (No `gc.collect()` per thread: in a
    worker that has run hundreds of tests it took about 3 s each, 70 s for this test.)"""
    _seed(database)
    prepared = database.prepared(repository._VIEW)
    for _ in range(database._readers.pool.size() + 5):
        worker = threading.Thread(
            target=prepared.rows, kwargs={"connection_id": "con_1", "customer_id": "cus_a"}
        )
        worker.start()
        worker.join()  # its thread-local holder is freed here, by reference counting
    assert len(database._readers._kept) <= 1
    assert prepared.rows(connection_id="con_1", customer_id="cus_a")


def test_reads_after_dispose_reconnect(database: Database) -> None:
    _seed(database)
    prepared = database.prepared(repository._VIEW)
    assert prepared.rows(connection_id="con_1", customer_id="cus_a")
    database.dispose()
    assert prepared.rows(connection_id="con_1", customer_id="cus_a")
