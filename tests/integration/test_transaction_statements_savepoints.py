"""The hot writes' statements behind the ORM's back (infra/db: insert_loaded,
update_loaded; capacity.recommit_locked) inside savepoints, which the worker's careful path
uses: after a rollback the session must agree with the database, as with the ORM's own
flush. Found by a review of the third step of issue 14; each failed before its fix."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import bindparam, exc, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from iod.connections import capacity
from iod.infra.db import (
    Database,
    TransactionSelect,
    TransactionWrite,
    insert_loaded,
    update_loaded,
)
from iod.models import Connection, Location
from tests.integration.test_prepared_select import NOW, _seed

LATER = NOW + timedelta(hours=1)


def _new_connection(connection_id: str = "con_new") -> Connection:
    return Connection(
        id=connection_id, customer_id="cus_a", location_id="LOC-1", status="provisioning",
        target_status=None, bandwidth_mbps=100, committed_mbps=0, description=None,
        ipv4_block=None, created_by="cli_a", created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_orm_reference_a_flushed_insert_is_expunged_by_its_savepoints_rollback(
    database: Database,
) -> None:
    """What the ORM does (the behaviour insert_loaded should match)."""
    _seed(database)
    with database.write() as session:
        savepoint = session.begin_nested()
        connection = _new_connection()
        session.add(connection)
        session.flush()
        savepoint.rollback()
        assert inspect(connection).transient
        assert session.get(Connection, "con_new") is None


def _inserted_in_a_rolled_back_savepoint(session: Session) -> Connection:
    savepoint = session.begin_nested()
    connection = _new_connection()
    insert_loaded(session, connection)
    savepoint.rollback()
    return connection


def test_insert_loaded_is_undone_by_its_savepoints_rollback(database: Database) -> None:
    """It once stayed persistent, unexpired, in the identity map."""
    _seed(database)
    with database.write() as session:
        _inserted_in_a_rolled_back_savepoint(session)
        stored = session.scalar(select(Connection.id).where(Connection.id == "con_new"))
        assert stored is None  # the database agrees the row is gone
        ghost = session.get(Connection, "con_new")
        assert ghost is None, (
            f"session still holds {ghost!r} (persistent={inspect(ghost).persistent}, "
            f"expired={inspect(ghost).expired}) for a row that does not exist"
        )


def test_update_loaded_of_a_row_that_is_not_there_is_an_error(database: Database) -> None:
    """The UPDATE matching nothing once went unnoticed and the object showed the new value
    (the ORM's flush raises StaleDataError)."""
    _seed(database)
    with database.write() as session:
        connection = _inserted_in_a_rolled_back_savepoint(session)
        with pytest.raises((StaleDataError, exc.SQLAlchemyError)):
            update_loaded(session, connection, {"ipv4_block": "10.0.0.0/29"})
        assert connection.ipv4_block != "10.0.0.0/29"


def test_update_loaded_of_an_object_outside_the_session_writes_or_refuses(
    database: Database,
) -> None:
    """A transient (or detached) object was once only assigned to, silently, and nothing
    reached the database."""
    _seed(database)
    with database.write() as session:
        stranger = Connection(id="con_1", bandwidth_mbps=100)  # transient, row exists
        with pytest.raises(exc.InvalidRequestError):
            update_loaded(session, stranger, {"bandwidth_mbps": 999})


def test_location_counters_after_a_rolled_back_recommit_locked(database: Database) -> None:
    """`recommit_locked(check=False)` syncs a held Location with the UPDATE's RETURNING
    values (set_committed_value); inside a savepoint that rolls back, the object is not
    expired (not dirty) and kept the rolled-back figure; it is now expired, as `recommit`
    does."""
    _seed(database)
    with database.write() as session:
        location = session.get(Location, "LOC-1")
        connection = session.get(Connection, "con_1")
        assert location is not None and connection is not None
        before = location.committed_mbps
        savepoint = session.begin_nested()
        capacity.recommit_locked(session, connection, [], {"bandwidth_mbps": 900})
        savepoint.rollback()
        stored = session.execute(
            select(Location.__table__.c.committed_mbps).where(Location.__table__.c.id == "LOC-1")
        ).scalar_one()
        assert stored == before
        assert location.committed_mbps == stored, (
            f"held Location says {location.committed_mbps}, the database {stored}"
        )


def test_reference_recommit_in_a_rolled_back_savepoint_leaves_the_location_right(
    database: Database,
) -> None:
    """The same with the old `recommit` (it expires the held Location): passes."""
    _seed(database)
    with database.write() as session:
        location = session.get(Location, "LOC-1")
        connection = session.get(Connection, "con_1")
        assert location is not None and connection is not None
        savepoint = session.begin_nested()
        connection.bandwidth_mbps = 900
        capacity.recommit(session, connection, [])
        savepoint.rollback()
        stored = session.execute(
            select(Location.__table__.c.committed_mbps).where(Location.__table__.c.id == "LOC-1")
        ).scalar_one()
        assert location.committed_mbps == stored


def test_a_lost_postgres_connection_is_an_outage(database: Database) -> None:
    """Checks the docs' claim: a server-side disconnect in TransactionWrite/Select is
    OperationalError with connection_invalidated, i.e. `is_unavailable` (503)."""
    from sqlalchemy import text

    from iod.connections import repository
    from iod.infra.db import is_unavailable

    if database.is_sqlite:
        pytest.skip("a server-side disconnect (pg_terminate_backend) exists on PostgreSQL only")
    _seed(database)
    with pytest.raises(exc.DBAPIError) as raised, database.write() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with database.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            other.commit()
        repository.pending_of(session, "con_0")
    assert is_unavailable(raised.value), repr(raised.value)
    with database.write() as session:  # and the pool recovers
        assert len(repository.pending_of(session, "con_0")) == 2


_RENAME = TransactionWrite(
    update(Location).where(Location.id == bindparam("of_id")).values(name=bindparam("name"))
)
_NAME = TransactionSelect(select(Location.name).where(Location.id == bindparam("of_id")))


def test_statements_before_during_and_after_a_savepoint_run_where_they_belong(
    database: Database,
) -> None:
    """The transaction's connection is kept between statements (issue 14), but a savepoint
    begun after the first statement still gets its SAVEPOINT: what ran in it is undone by its
    rollback, what ran before and after it stays. Without that, the rollback failed or undid
    nothing (found by tests/integration/test_schedules_planner_equivalence.py)."""
    _seed(database)
    with database.write() as session:
        _RENAME.execute(session, {"of_id": "LOC-1", "name": "before"})
        savepoint = session.begin_nested()
        _RENAME.execute(session, {"of_id": "LOC-1", "name": "inside"})
        assert _NAME.rows(session, of_id="LOC-1")[0].name == "inside"
        savepoint.rollback()
        assert _NAME.rows(session, of_id="LOC-1")[0].name == "before"
        with session.begin_nested():
            _RENAME.execute(session, {"of_id": "LOC-1", "name": "kept"})
    with database.read() as session:
        assert session.scalar(select(Location.name).where(Location.id == "LOC-1")) == "kept"
    with database.write() as session:  # a new transaction: its own connection again
        assert _NAME.rows(session, of_id="LOC-1")[0].name == "kept"


def test_a_statement_after_a_failed_flush_raises_as_the_session_would(database: Database) -> None:
    """The kept connection is not used once the session's transaction has failed: the
    statement raises SQLAlchemy's PendingRollbackError, as `session.execute` does, instead
    of running in a transaction the session considers dead (on SQLite it would have run)."""
    _seed(database)
    with pytest.raises(exc.PendingRollbackError), database.write() as session:
        assert _NAME.rows(session, of_id="LOC-1")  # the connection is now kept
        session.add(_new_connection("con_dup"))
        session.add(_new_connection("con_dup"))  # the same primary key: the flush fails
        with pytest.raises((exc.IntegrityError, exc.SAWarning)):
            session.flush()
        _RENAME.execute(session, {"of_id": "LOC-1", "name": "after a failed flush"})
    with database.read() as session:
        assert session.scalar(select(Location.name).where(Location.id == "LOC-1")) != (
            "after a failed flush"
        )
