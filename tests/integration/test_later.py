"""Statements sent later (`iod.infra.db.later`): on PostgreSQL a write's statements that
nothing waits for go with the next round trip or the COMMIT; the server still runs every
statement in the order the code issued it, a rollback sends nothing, and a check of a
queued result can still roll the transaction back. On SQLite each runs at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Table, exc, func, insert, select, update

from iod.infra.db import Database, TransactionSelect, TransactionWrite, later
from iod.models import Customer

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
_customers = cast(Table, Customer.__table__)
_INSERT = TransactionWrite(insert(_customers))
_RENAME = TransactionSelect(
    update(_customers)
    .where(_customers.c.id == "cus_a")
    .values(name=_customers.c.name + "!")
    .returning(_customers.c.name)
)


def _row(customer_id: str, name: str = "A") -> dict[str, Any]:
    return {"id": customer_id, "name": name, "created_at": NOW, "customer_number": None}


def _names(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Customer.name).order_by(Customer.id)))


class Refused(Exception):
    pass


def test_queued_statements_run_before_the_next_one_in_order(database: Database) -> None:
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))
        _INSERT.later(session, [_row("cus_b", "B"), _row("cus_c", "C")])
        seen: list[list[Any]] = []
        _RENAME.later(session, seen.append)
        # SQLAlchemy's own execution (the engine's hook sends the queue first)…
        assert session.scalar(select(func.count()).select_from(Customer)) == 3
        assert seen == [[("A!",)]]
        _INSERT.later(session, _row("cus_d", "D"))
        # …and a statement run straight on the connection (sent with the queue).
        assert [r.name for r in _RENAME.rows(session)] == ["A!!"]
    assert _names(database) == ["A!!", "B", "C", "D"]


def test_the_queue_goes_with_the_commit(database: Database, monkeypatch: Any) -> None:
    sent: list[tuple[int, bool]] = []
    original = later.send

    def spy(connection: Any, *, commit: bool = False) -> None:
        sent.append((len(connection.info.get("iod_later") or []), commit))
        original(connection, commit=commit)

    monkeypatch.setattr(later, "send", spy)
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))
        _INSERT.later(session, _row("cus_b", "B"))
    assert _names(database) == ["A", "B"]
    if database.is_sqlite:
        assert sent == []  # run at once
    else:
        assert sent == [(2, True)]  # both and the COMMIT in one round trip


def test_a_rollback_sends_nothing_and_leaves_no_queue(database: Database) -> None:
    with pytest.raises(RuntimeError), database.write() as session:
        _INSERT.later(session, _row("cus_a"))
        raise RuntimeError("the work failed")
    # The pooled connections are used again: nothing queued before comes with them.
    for n in range(8):
        with database.write() as session:
            _INSERT.later(session, _row(f"cus_{n}", str(n)))
    assert _names(database) == [str(n) for n in range(8)]


def test_a_check_of_a_queued_result_rolls_the_transaction_back(database: Database) -> None:
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))

    def refuse(rows: list[Any]) -> None:
        raise Refused(rows[0].name)

    with pytest.raises(Refused, match="A!"), database.write() as session:
        _INSERT.later(session, _row("cus_b", "B"))
        _RENAME.later(session, refuse)
        # nothing after it waits for a result: the check runs before the COMMIT
    assert _names(database) == ["A"]


def test_a_row_count_check_before_the_commit(database: Database) -> None:
    def one(count: int) -> None:
        if count != 1:
            raise Refused(f"{count} rows")

    with pytest.raises(Refused, match="0 rows"), database.write() as session:
        _INSERT.later(session, _row("cus_a"))
        TransactionWrite(update(_customers).where(_customers.c.id == "cus_zzz").values(
            name="nobody")).later(session, {}, one)  # fmt: skip
    assert _names(database) == []


def test_a_failing_queued_statement_fails_the_transaction(database: Database) -> None:
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))
    with pytest.raises(exc.IntegrityError), database.write() as session:
        _INSERT.later(session, _row("cus_b", "B"))
        _INSERT.later(session, _row("cus_a", "again"))  # its primary key is taken
    assert _names(database) == ["A"]
    with database.write() as session:  # the connection is usable again
        _INSERT.later(session, _row("cus_b", "B"))
    assert _names(database) == ["A", "B"]


def test_inside_a_savepoint_statements_run_at_once(database: Database) -> None:
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))
        with pytest.raises(Refused), session.begin_nested():
            _INSERT.later(session, _row("cus_b", "B"))
            connection = session.connection()
            assert not later.pending(connection)  # run, not queued
            raise Refused("roll the savepoint back")
        _INSERT.later(session, _row("cus_c", "C"))
    assert _names(database) == ["A", "C"]


def test_only_where_the_engine_was_enabled(database: Database) -> None:
    with database.write() as session:
        connection = session.connection()
        assert later.defers(connection) is (not database.is_sqlite)


def test_a_connection_lost_with_statements_queued(database: Database) -> None:
    """The server ends the backend while statements wait to be sent: the commit fails as an
    outage (503), nothing is stored, and the next transaction gets a working connection."""
    if database.is_sqlite:
        pytest.skip("a server-side disconnect (pg_terminate_backend) exists on PostgreSQL only")
    from iod.infra.db import is_unavailable

    with pytest.raises(exc.DBAPIError) as caught, database.write() as session:
        pid = session.scalar(select(func.pg_backend_pid()))
        _INSERT.later(session, _row("cus_a"))
        with database.engine.connect() as other:
            other.execute(select(func.pg_terminate_backend(pid)))
            other.commit()
    assert caught.value.connection_invalidated and is_unavailable(caught.value)
    with database.write() as session:
        _INSERT.later(session, _row("cus_b", "B"))
    assert _names(database) == ["B"]


def test_a_check_that_reads_runs_before_the_commit(database: Database) -> None:
    """A check still queued when the work ends runs while the session can still read (a
    capacity refusal reads the figures it reports), not from inside the commit."""
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))

    def refuse(rows: list[Any]) -> None:
        count = session.scalar(select(func.count()).select_from(Customer))
        raise Refused(f"{rows[0].name} of {count}")

    with pytest.raises(Refused, match="A! of 1"), database.write() as session:
        _RENAME.later(session, refuse)  # nothing after it sends the queue
    assert _names(database) == ["A"]


def test_a_failed_check_that_was_caught_still_stops_the_commit(database: Database) -> None:
    """A savepoint sends the queue first, so a check's exception comes out of the
    savepoint's start, where a caller may catch it; the commit raises it again."""
    with database.write() as session:
        _INSERT.later(session, _row("cus_a"))

    def refuse(rows: list[Any]) -> None:
        raise Refused("no")

    with pytest.raises(Refused), database.write() as session:
        _INSERT.later(session, _row("cus_x", "X"))
        _RENAME.later(session, refuse)
        caught = False
        try:
            with session.begin_nested():
                session.execute(select(1))  # the SAVEPOINT is sent here, the queue first
        except Refused:
            caught = True  # e.g. a worker's careful path around one job
        assert caught or database.is_sqlite  # SQLite: checked at once, raised above
    assert _names(database) == ["A"]
    with database.write() as session:  # nothing of it is left on the connection
        _INSERT.later(session, _row("cus_b", "B"))
    assert _names(database) == ["A", "B"]
