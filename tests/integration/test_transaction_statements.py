"""The hot writes' statements on the transaction's own connection (infra/db, issue 14):
`TransactionSelect`, `TransactionWrite`, and the objects they keep in step
(`update_loaded`, `insert_loaded`, `as_loaded`), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import Integer, String, bindparam, exc, insert, inspect, select, update

import iod.infra.db as db_module
from iod.infra.db import (
    Database,
    TransactionSelect,
    TransactionSelectIn,
    TransactionWrite,
    as_loaded,
    insert_loaded,
    update_loaded,
)
from iod.models import BandwidthChange, Connection, Job
from tests.integration.test_prepared_select import NOW, _seed

LATER = NOW + timedelta(hours=1, microseconds=1)
_changes = BandwidthChange.__table__.c
_CHANGE = TransactionSelect(
    select(_changes.id, _changes.to_mbps, _changes.effective_at, _changes.applied_at).where(
        _changes.id == bindparam("id", type_=String)
    )
)
_INSERT_CHANGES = TransactionWrite(insert(BandwidthChange))


def _change(change_id: str, mbps: int) -> dict[str, object]:
    return {"id": change_id, "connection_id": "con_1", "to_mbps": mbps, "effective_at": LATER,
            "status": "scheduled", "requested_by": "cli_a", "requested_at": NOW}  # fmt: skip


def test_written_and_read_in_the_transaction_as_sqlalchemy_would(database: Database) -> None:
    _seed(database)
    with database.write() as session:
        assert _INSERT_CHANGES.execute(session, [_change("chg_x", 700), _change("chg_y", 800)])
        (row,) = _CHANGE.rows(session, id="chg_y")  # the transaction sees its own rows
        core = session.execute(
            select(_changes.id, _changes.to_mbps, _changes.effective_at, _changes.applied_at)
            .where(_changes.id == "chg_y")
        ).one()  # fmt: skip
        assert tuple(row) == tuple(core) == ("chg_y", 800, LATER, None)
        assert row.effective_at.tzinfo is not None
    with database.read() as session:
        stored = session.get(BandwidthChange, "chg_x")
        assert stored is not None and (stored.to_mbps, stored.effective_at) == (700, LATER)


def test_a_list_of_one_is_one_execute(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """One parameter set in a list runs as `execute`, not `executemany` (psycopg's enters
    pipeline mode); more run as one `executemany`. The rows and counts are the same."""
    _seed(database)
    calls: list[bool] = []
    original = db_module._run

    def spy(connection: Any, sql: str, *args: Any, many: bool = False, **kwargs: Any) -> Any:
        if sql.startswith("INSERT INTO bandwidth_changes"):
            calls.append(many)
        return original(connection, sql, *args, many=many, **kwargs)

    monkeypatch.setattr(db_module, "_run", spy)
    with database.write() as session:
        assert _INSERT_CHANGES.execute(session, [_change("chg_x", 700)]) == 1
        assert _INSERT_CHANGES.execute(session, [_change("chg_y", 800), _change("chg_z", 900)])
        assert _INSERT_CHANGES.execute(session, []) == 0
    assert calls == [False, True]
    with database.read() as session:
        stored = session.get(BandwidthChange, "chg_x")
        assert stored is not None and stored.to_mbps == 700
        assert session.get(BandwidthChange, "chg_z") is not None


def test_a_rolled_back_transaction_keeps_nothing_of_them(database: Database) -> None:
    _seed(database)
    with pytest.raises(RuntimeError), database.write() as session:
        _INSERT_CHANGES.execute(session, _change("chg_x", 700))
        raise RuntimeError
    with database.read() as session:
        assert session.get(BandwidthChange, "chg_x") is None


def test_database_errors_are_sqlalchemys(database: Database) -> None:
    _seed(database)
    with pytest.raises(exc.IntegrityError), database.write() as session:
        _INSERT_CHANGES.execute(session, _change("chg_0", 700))  # chg_0 is taken
    with database.write() as session:  # the pool's connection is still good
        assert _CHANGE.rows(session, id="chg_0")[0].to_mbps == 500


def test_a_column_left_to_a_python_default_is_refused(database: Database) -> None:
    job = {
        "kind": "provision",
        "lock_key": None,
        "queue": "default",
        "connection_id": None,
        "change_id": None,
        "state": "queued",
        "run_at": NOW,
        "scheduled_at": NOW,
        "attempts": 0,
        "max_attempts": 5,
        "created_at": NOW,
    }  # fmt: skip (no "args")
    with pytest.raises(TypeError, match="args"), database.write() as session:
        TransactionWrite(insert(Job)).execute(session, job)


def test_update_loaded_writes_the_row_and_leaves_the_object_clean(database: Database) -> None:
    _seed(database)
    with database.write() as session:
        connection = session.get(Connection, "con_1")
        assert connection is not None
        update_loaded(session, connection, {"bandwidth_mbps": 999, "updated_at": LATER})
        assert (connection.bandwidth_mbps, connection.updated_at) == (999, LATER)
        assert not inspect(connection).modified
        stored = session.scalar(select(Connection.bandwidth_mbps).where(Connection.id == "con_1"))
        assert stored == 999
    with database.read() as session:
        again = session.get(Connection, "con_1")
        assert again is not None and (again.bandwidth_mbps, again.updated_at) == (999, LATER)


def test_update_loaded_in_a_savepoint_is_undone_with_it(database: Database) -> None:
    _seed(database)
    with database.write() as session:
        connection = session.get(Connection, "con_1")
        assert connection is not None
        savepoint = session.begin_nested()
        update_loaded(session, connection, {"bandwidth_mbps": 999})
        assert inspect(connection).modified  # the ORM's way: a savepoint's rollback expires it
        session.flush()
        savepoint.rollback()
        assert connection.bandwidth_mbps == 200


def test_update_loaded_leaves_unflushed_changes_to_the_flush(database: Database) -> None:
    _seed(database)
    with database.write() as session:
        connection = session.get(Connection, "con_1")
        assert connection is not None
        connection.description = "mine"
        update_loaded(session, connection, {"bandwidth_mbps": 999})
        session.flush()
    with database.read() as session:
        again = session.get(Connection, "con_1")
        assert again is not None and (again.description, again.bandwidth_mbps) == ("mine", 999)


def test_as_loaded_is_the_sessions_object_with_the_rows_values(database: Database) -> None:
    _seed(database)
    everything = TransactionSelect(
        select(*Connection.__table__.c).where(
            Connection.__table__.c.id == bindparam("id", type_=String)
        )
    )
    with database.write() as session:
        (row,) = everything.rows(session, id="con_2")
        fresh = as_loaded(session, Connection, row)
        assert session.get(Connection, "con_2") is fresh and not inspect(fresh).modified
        assert fresh.bandwidth_mbps == 300

        held = session.get(Connection, "con_1")
        assert held is not None
        session.execute(Connection.__table__.update().where(Connection.__table__.c.id == "con_1")
                        .values(bandwidth_mbps=555))  # fmt: skip
        (row,) = everything.rows(session, id="con_1")
        assert as_loaded(session, Connection, row) is held and held.bandwidth_mbps == 555

        held.description = "unflushed"
        assert as_loaded(session, Connection, row) is None  # the caller asks the ORM


def test_insert_loaded_makes_a_persistent_object(database: Database) -> None:
    _seed(database)
    with database.write() as session:
        connection = Connection(
            id="con_new", customer_id="cus_a", location_id="LOC-1", status="provisioning",
            target_status=None, bandwidth_mbps=100, committed_mbps=0, description=None,
            ipv4_block=None, created_by="cli_a", created_at=NOW, updated_at=NOW,
        )  # fmt: skip
        insert_loaded(session, connection)
        assert inspect(connection).persistent and not inspect(connection).modified
        update_loaded(session, connection, {"ipv4_block": "10.0.0.0/29"})
    with database.read() as session:
        stored = session.get(Connection, "con_new")
        assert stored is not None and stored.ipv4_block == "10.0.0.0/29"
        assert stored.created_at == NOW and stored.created_at.tzinfo == UTC


_APPLY = TransactionSelect(
    update(BandwidthChange.__table__)
    .where(
        _changes.id == bindparam("id", type_=String),
        _changes.effective_at <= bindparam("now", type_=_changes.effective_at.type),
    )
    .values(status="applied", applied_at=bindparam("at", type_=_changes.applied_at.type),
            to_mbps=_changes.to_mbps + 1)
    .returning(_changes.id, _changes.to_mbps, _changes.applied_at)
)  # fmt: skip


def test_an_update_returning_binds_and_reads_its_columns_types(database: Database) -> None:
    """An UPDATE … RETURNING as a `TransactionSelect`: datetime parameters go through the
    column type's bind processor (a wrong text on SQLite would match no row), the RETURNING
    columns through their result processors, and values fixed in the statement are bound."""
    _seed(database)
    with database.write() as session:
        _INSERT_CHANGES.execute(session, _change("chg_x", 700))
        assert _APPLY.rows(session, id="chg_x", now=NOW, at=NOW) == []  # due at LATER only
        (row,) = _APPLY.rows(session, id="chg_x", now=LATER, at=LATER)
        assert tuple(row) == ("chg_x", 701, LATER) and row.applied_at.tzinfo is not None
        stored = session.execute(
            select(_changes.status, _changes.to_mbps, _changes.applied_at)
            .where(_changes.id == "chg_x")
        ).one()  # fmt: skip
        assert tuple(stored) == ("applied", 701, LATER)


def test_a_write_binds_the_values_written_in_the_statement(database: Database) -> None:
    """A `TransactionWrite` whose statement holds values of its own (a literal, `+ 1`) binds
    them at each call beside the caller's parameters; a parameter left out is refused."""
    _seed(database)
    bump = TransactionWrite(
        update(BandwidthChange.__table__)
        .where(_changes.id == bindparam("id_", type_=String))
        .values(status="cancelled", to_mbps=_changes.to_mbps + 1,
                failure_reason=bindparam("why", type_=String))
    )  # fmt: skip
    with database.write() as session:
        _INSERT_CHANGES.execute(session, [_change("chg_x", 700), _change("chg_y", 800)])
        assert bump.execute(session, [{"id_": "chg_x", "why": "a"}, {"id_": "chg_y", "why": "b"}])
        with pytest.raises(TypeError, match="why"):
            bump.execute(session, {"id_": "chg_x"})
    with database.read() as session:
        rows = session.execute(
            select(_changes.id, _changes.status, _changes.to_mbps, _changes.failure_reason)
            .where(_changes.id.in_(["chg_x", "chg_y"])).order_by(_changes.id)
        ).all()  # fmt: skip
        assert [tuple(r) for r in rows] == [
            ("chg_x", "cancelled", 701, "a"),
            ("chg_y", "cancelled", 801, "b"),
        ]


_BY_IDS = TransactionSelectIn(
    _changes.id,
    lambda ids: (
        select(_changes.id, _changes.to_mbps)
        .where(ids, _changes.to_mbps >= bindparam("least", type_=Integer))
        .order_by(_changes.id)
    ),
)


@pytest.mark.parametrize("count", [1, 3, 4, 70])
def test_a_list_parameter_is_one_statement_per_power_of_two(database: Database, count: int) -> None:
    """`TransactionSelectIn`: the list padded to a power of two with its last item (no
    row twice), longer lists in chunks, other parameters beside it."""
    _seed(database)
    ids = [f"chg_n{i:03d}" for i in range(count)]
    with database.write() as session:
        _INSERT_CHANGES.execute(session, [_change(cid, 100 + i) for i, cid in enumerate(ids)])
        rows = _BY_IDS.rows(session, ids, least=0)
        assert [(r.id, r.to_mbps) for r in rows] == [(c, 100 + i) for i, c in enumerate(ids)]
        assert [r.id for r in _BY_IDS.rows(session, ids, least=100 + count - 1)] == ids[-1:]
        assert _BY_IDS.rows(session, [], least=0) == []
        assert _BY_IDS.rows(session, ["chg_none", ids[0]], least=0)[0].id == ids[0]
