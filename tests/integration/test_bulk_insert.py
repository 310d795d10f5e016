"""`bulk.insert_rows` stores rows as SQLAlchemy's INSERT does: the same text in the JSON
columns (None as JSON `null`), the same instants, the defaults for the columns not given
(a serial id), whether it COPYs (PostgreSQL, many rows) or INSERTs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.types import Text

from iod.app import Services
from iod.infra.db import bulk
from iod.models import Event, Job

_events = cast(Table, Event.__table__)
_jobs = cast(Table, Job.__table__)


def _rows(customer: str, count: int) -> list[dict[str, Any]]:
    at = datetime(2030, 3, 10, 7, 30, tzinfo=UTC)
    return [
        {"customer_id": customer, "position": n + 1, "name": "schedule.transition_planned",
         "subject_id": f"con_{n}", "at": at + timedelta(microseconds=n),
         "payload": {"n": n, "text": "é \\ \" \t", "none": None, "list": [1, 2.5]},
         "actor": None if n % 2 else {"type": "client", "id": "cli_x"}}
        for n in range(count)
    ]  # fmt: skip


def _stored(services: Services, customer: str) -> list[tuple[Any, ...]]:
    c = _events.c
    with services.db.read() as session:
        rows = session.execute(
            select(c.position, c.name, c.subject_id, c.at, sql_cast(c.payload, Text),
                   sql_cast(c.actor, Text), c.actor.is_(None), c.id.is_(None))
            .where(c.customer_id == customer)
            .order_by(c.position)
        ).all()  # fmt: skip
    return [tuple(row) for row in rows]


def test_copy_stores_what_insert_stores(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    with services.db.write() as session:
        session.connection().execute(insert(_events), _rows("cus_insert", 5))
    monkeypatch.setattr(bulk, "COPY_FROM", 1)  # COPY on PostgreSQL, INSERT on SQLite
    with services.db.write() as session:
        bulk.insert_rows(session, _events, _rows("cus_copy", 5))
    assert _stored(services, "cus_copy") == _stored(services, "cus_insert")
    assert len(_stored(services, "cus_copy")) == 5


def test_columns_not_given_take_their_defaults(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "COPY_FROM", 1)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    job = {"kind": "k", "state": "queued", "run_at": now, "scheduled_at": now, "attempts": 0,
           "max_attempts": 3, "created_at": now, "args": {"a": 1}}  # fmt: skip
    with services.db.write() as session:
        bulk.insert_rows(session, _jobs, [job, {**job, "kind": "l"}])
    with services.db.read() as session:
        rows = session.execute(select(Job).where(Job.kind.in_(["k", "l"])).order_by(Job.id))
        jobs = [row[0] for row in rows]
    assert [j.kind for j in jobs] == ["k", "l"]
    assert jobs[0].id < jobs[1].id and jobs[0].queue == "default" and jobs[0].args == {"a": 1}
    assert jobs[0].run_at == now and jobs[0].lease_until is None


@pytest.mark.parametrize("copy_from", [1, 1000])  # COPY (PostgreSQL), INSERT
def test_tuples_and_streamed_rows_store_what_insert_stores(
    services: Services, monkeypatch: pytest.MonkeyPatch, copy_from: int
) -> None:
    with services.db.write() as session:
        session.connection().execute(insert(_events), _rows("cus_reference", 5))
    monkeypatch.setattr(bulk, "COPY_FROM", copy_from)
    names = ["customer_id", "position", "name", "subject_id", "at", "payload", "actor"]
    tuples = [tuple(row[name] for name in names) for row in _rows("cus_tuples", 5)]
    streamed = [tuple(row[name] for name in names) for row in _rows("cus_streamed", 5)]
    with services.db.write() as session:
        bulk.insert_tuples(session, _events, names, tuples)
        with bulk.rows_into(session, _events, names, len(streamed)) as write:
            for row in streamed:
                write(row)
    assert _stored(services, "cus_tuples") == _stored(services, "cus_reference")
    assert _stored(services, "cus_streamed") == _stored(services, "cus_reference")


@pytest.mark.parametrize("copy_from", [1, 1000])
def test_an_encoded_object_is_stored_as_its_text(
    services: Services, monkeypatch: pytest.MonkeyPatch, copy_from: int
) -> None:
    """COPY writes `Encoded.text` as it is (so the caller's text is what is stored); an
    INSERT encodes the dict: both read back as the same object."""
    monkeypatch.setattr(bulk, "COPY_FROM", copy_from)
    at = datetime(2030, 3, 10, tzinfo=UTC)
    text = '{"b": 1,  "a": null}'  # not as json.dumps writes it: shows which was stored
    row = ("cus_encoded", 1, "usage.rated", "x", at, bulk.Encoded(text, b=1, a=None), None)
    names = ["customer_id", "position", "name", "subject_id", "at", "payload", "actor"]
    with services.db.write() as session:
        bulk.insert_tuples(session, _events, names, [row])
    stored = _stored(services, "cus_encoded")
    dialect = services.db.engine.dialect.name
    assert stored[0][4] == (text if dialect == "postgresql" and copy_from == 1 else
                            '{"b": 1, "a": null}')  # fmt: skip
    with services.db.read() as session:
        payload = session.scalars(select(Event.payload).where(Event.customer_id == "cus_encoded"))
        assert list(payload) == [{"b": 1, "a": None}]
