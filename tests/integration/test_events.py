"""Domain events through the unit of work: written with the transaction that records them
(an outbox), numbered per customer without gaps in commit order, nothing published on a
rollback. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from iod import events
from iod.app import Services
from iod.infra.clock import FrozenClock
from iod.infra.db import Database
from iod.models import AuditEvent, Event, EventStream
from tests.conftest import Tenant, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


# Events about connections that do not exist: a name no feature turns into rows that refer
# to its connection (the Lumen service id of `connection.ordered` would).
SYNTHETIC = "connection.activated"


def _record(session: Any, customer: str, subject: str, clock: FrozenClock) -> None:
    events.record(session, SYNTHETIC, customer_id=customer, subject_id=subject, at=clock.now())


def _all(db: Database, customer: str | None = None) -> list[Event]:
    with db.read() as session:
        query = select(Event).order_by(Event.customer_id, Event.position)
        if customer is not None:
            query = query.where(Event.customer_id == customer)
        return list(session.scalars(query))


def test_a_rollback_publishes_nothing(database: Database, clock: FrozenClock) -> None:
    woken: list[str] = []
    database.listen("events", lambda: woken.append("events"))
    with pytest.raises(RuntimeError), database.write() as session:
        _record(session, "cus_a", "con_1", clock)
        session.flush()
        raise RuntimeError("forced rollback")
    assert _all(database) == []
    assert woken == []
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(EventStream)) == 0
    # The next committed transaction starts at position 1: the rollback took nothing.
    with database.write() as session:
        _record(session, "cus_a", "con_2", clock)
    assert [(e.position, e.subject_id) for e in _all(database)] == [(1, "con_2")]
    assert woken == ["events"]


def test_a_savepoint_that_rolls_back_drops_its_events(
    database: Database, clock: FrozenClock
) -> None:
    with database.write() as session:
        _record(session, "cus_a", "kept-before", clock)
        with pytest.raises(RuntimeError), session.begin_nested():
            _record(session, "cus_a", "dropped", clock)
            with session.begin_nested():
                _record(session, "cus_a", "dropped-too", clock)
            raise RuntimeError("one job of a batch fails")
        with session.begin_nested():
            _record(session, "cus_a", "kept-after", clock)
    assert [(e.position, e.subject_id) for e in _all(database)] == [
        (1, "kept-before"),
        (2, "kept-after"),
    ]


def test_positions_count_each_customer_from_one(database: Database, clock: FrozenClock) -> None:
    with database.write() as session:
        for subject in ("a1", "a2"):
            _record(session, "cus_a", subject, clock)
        _record(session, "cus_b", "b1", clock)
    with database.write() as session:
        _record(session, "cus_b", "b2", clock)
        _record(session, "cus_a", "a3", clock)
    assert [(e.customer_id, e.position, e.subject_id) for e in _all(database)] == [
        ("cus_a", 1, "a1"),
        ("cus_a", 2, "a2"),
        ("cus_a", 3, "a3"),
        ("cus_b", 1, "b1"),
        ("cus_b", 2, "b2"),
    ]


def test_one_customers_events_are_written_alike_on_either_path(
    database: Database, clock: FrozenClock
) -> None:
    """A transaction of one customer's events (the usual request) is, on PostgreSQL, one
    statement that moves the stream on and inserts the rows (`_advance_and_insert`); its
    first events, or more than eight at once, go the general way. Positions, payloads,
    actors and times come out the same either way."""
    later = clock.now() + timedelta(seconds=1)
    payload = {"bandwidth": "50 Mbps", "nested": {"n": 1, "list": [1, "ü"]}, "none": None}
    with database.write() as session:  # the customer's first: makes its stream row
        _record(session, "cus_a", "first", clock)
    for count in (1, 2, 8, 9):
        with database.write() as session:
            events.act_as(session, {"type": "client", "id": "cli_1", "source": "test"})
            for n in range(count):
                events.record(session, SYNTHETIC, customer_id="cus_a", subject_id=f"{count}.{n}",
                              at=later, **payload)  # fmt: skip
    written = _all(database, "cus_a")
    assert [e.position for e in written] == list(range(1, 1 + 1 + 1 + 2 + 8 + 9))
    assert [e.subject_id for e in written] == ["first"] + [
        f"{count}.{n}" for count in (1, 2, 8, 9) for n in range(count)
    ]
    for event in written[1:]:
        assert event.payload == payload and event.at == later and event.name == SYNTHETIC
        assert event.actor == {"type": "client", "id": "cli_1", "source": "test"}
    assert written[0].actor is None
    with database.read() as session:
        assert session.get(EventStream, "cus_a").position == 21  # type: ignore[union-attr]
    # The stored text too: the service's own events (no actor) on either path.
    with database.write() as session:
        _record(session, "cus_a", "no actor", clock)  # the one-statement path (PostgreSQL)
    with database.write() as session:
        _record(session, "cus_c", "no actor", clock)  # a first event: the general path
    if database.engine.dialect.name == "postgresql":
        with database.read() as session:
            stored = session.execute(
                text(
                    "SELECT customer_id, actor::text, actor IS NULL, payload::text FROM events"
                    " WHERE subject_id = 'no actor' ORDER BY customer_id"
                )
            ).all()
        assert [tuple(row) for row in stored] == [
            ("cus_a", "null", False, "{}"),
            ("cus_c", "null", False, "{}"),
        ]


def test_unknown_event_names_are_refused(database: Database, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="unknown event name"), database.write() as session:
        events.record(session, "connection.typo", customer_id="c", subject_id="s", at=clock.now())


def test_the_api_and_the_worker_record_a_connections_story(
    api: TestClient, services: Services, tenant: Tenant, headers: dict[str, str],
    clock: FrozenClock,
) -> None:  # fmt: skip
    created = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    conn = created.json()["id"]
    run_jobs(services)
    later = (clock.now() + timedelta(hours=1)).isoformat()
    change = api.put(
        f"{BASE}/{conn}/bandwidth", json={"bandwidth": "1 Gbps", "effectiveDate": later},
        headers=headers,
    ).json()["change"]  # fmt: skip
    api.post(f"{BASE}/{conn}/bandwidth-changes/{change['id']}/cancel", headers=headers)
    api.put(f"{BASE}/{conn}/bandwidth", json={"bandwidth": "200 Mbps"}, headers=headers)
    run_jobs(services)
    api.post(f"{BASE}/{conn}/suspend", headers=headers)
    run_jobs(services)
    api.post(f"{BASE}/{conn}/terminate", headers=headers)
    run_jobs(services)
    story = _all(services.db, tenant.customer_id)
    assert [e.position for e in story] == list(range(1, len(story) + 1))
    assert [e.name for e in story] == [
        "connection.ordered",
        "connection.activated",
        "bandwidth_change.scheduled",
        "bandwidth_change.cancelled",
        "bandwidth_change.scheduled",
        "bandwidth_change.applied",
        "connection.suspend_requested",
        "connection.suspended",
        "connection.terminate_requested",
        "connection.terminated",
    ]
    assert all(e.subject_id == conn for e in story)
    assert story[0].payload["bandwidth"] == "100 Mbps"
    assert story[0].actor is not None and story[0].actor["id"] == tenant.client_id
    assert story[1].actor is None, "the worker's own doing"
    assert story[5].payload["fromBandwidth"] == "100 Mbps"
    assert story[5].payload["bandwidth"] == "200 Mbps"
    # The audit log subscribes: one row per request, none for the worker's transitions.
    with services.db.read() as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == [
        "connection.create",
        "bandwidth.change",
        "bandwidth.cancel",
        "bandwidth.change",
        "connection.suspend",
        "connection.terminate",
    ]


def test_concurrent_writers_of_one_customer_commit_in_position_order(
    database: Database, clock: FrozenClock
) -> None:
    """Writers of one customer race (some roll back); a reader polling meanwhile always
    sees positions 1..n with none missing, so a consumer reading by position never skips
    an event that commits later. PostgreSQL runs them truly in parallel."""
    if database.is_sqlite:
        writers, per_writer = 4, 15
    else:
        writers, per_writer = 8, 25
    failures: list[str] = []
    done = threading.Event()

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                try:
                    with database.write() as session:
                        for k in range(1 + (i % 3)):
                            _record(session, "cus_race", f"w{n}-{i}-{k}", clock)
                        if i % 5 == 4:
                            raise RuntimeError("rolled back")
                except RuntimeError:
                    pass
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(repr(exc))

    def read() -> None:
        while not done.is_set():
            with database.read() as session:
                seen = list(
                    session.scalars(select(Event.position).where(Event.customer_id == "cus_race"))
                )
            if sorted(seen) != list(range(1, len(seen) + 1)):
                failures.append(f"a gap seen: {sorted(seen)[:20]}...")
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    reader.join(10)
    assert failures == []
    committed = [i for i in range(per_writer) if i % 5 != 4]
    expected = writers * sum(1 + (i % 3) for i in committed)
    positions = [e.position for e in _all(database, "cus_race")]
    assert positions == list(range(1, expected + 1))
    # Each transaction's events are consecutive (its positions were taken at once).
    by_subject = {e.subject_id: e.position for e in _all(database, "cus_race")}
    for n in range(writers):
        for i in committed:
            first = by_subject[f"w{n}-{i}-0"]
            assert [by_subject[f"w{n}-{i}-{k}"] for k in range(1 + (i % 3))] == list(
                range(first, first + 1 + (i % 3))
            )


def test_a_rollback_of_the_whole_transaction_inside_write_drops_its_events(
    database: Database, clock: FrozenClock
) -> None:
    with database.write() as session:
        session.connection()  # the transaction has begun (it has read or written)
        _record(session, "cus_a", "con_gone", clock)
        session.rollback()  # the caller gave up on what it did so far, and goes on
        _record(session, "cus_a", "con_kept", clock)
    assert [(e.position, e.subject_id) for e in _all(database)] == [(1, "con_kept")]
