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
