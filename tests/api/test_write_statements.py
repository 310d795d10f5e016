"""The statements of the hottest writes, one by one, on both databases (issue 14).

A create and a bandwidth change are measured against a durable-write baseline
(docs/performance.md): each statement a write runs costs the driver's and SQLAlchemy's
Python as well as the database's work. These tests name every statement of their
transactions in order, so one added to them (or folded away) is a decision seen in review,
and they check the folds keep their meaning: an order's connection row is written once with
its committed figure, its Lumen service id is one INSERT, and a change reads its connection
and its location's tiers in one SELECT.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text

import iod.infra.db as db_module
from iod.app import Services
from iod.connections import capacity, repository
from iod.infra.db import later
from iod.models import Connection, Location, LumenService

BASE = "/internet-on-demand/connections"
_NAME = re.compile(
    r"^\s*(?:(INSERT) INTO|(UPDATE)|(DELETE) FROM)\s+\"?(\w+)|^\s*(SELECT)\b.*?\bFROM\s+\"?(\w+)",
    re.S | re.I,
)


def _named(sql: str) -> str | None:
    if sql.lstrip().upper().startswith("WITH "):  # a data-modifying WITH: its parts
        parts = re.findall(r"\b(UPDATE|INSERT INTO|DELETE FROM)\s+\"?(\w+)", sql, re.I)
        return " + ".join(f"{verb.split()[0].upper()} {table}" for verb, table in parts)
    return _one(sql)


def _one(sql: str) -> str | None:
    """The statement's verb and table ("INSERT jobs"); "SELECT" for one without FROM (as
    `pg_notify` was in the transaction); None for what is no row statement (BEGIN…)."""
    match = _NAME.match(sql)
    if match:
        verb = next(g for g in match.groups()[:3] + match.groups()[4:5] if g)
        table = match.group(4) or match.group(6)
        return f"{verb.upper()} {table}"
    return "SELECT" if sql.lstrip().upper().startswith("SELECT") else None


class Seen(list[str]):
    """The statements by name, in order; `trips`: the same grouped by the round trip that
    sent them (`later.py` sends several in one on PostgreSQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[list[str]] = []

    def sent(self, names: list[str], *, commit: bool = False) -> None:
        if names:
            self.extend(names)
            self.trips.append([*names, "COMMIT"] if commit else names)


@pytest.fixture
def statements(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """The row statements run from here on, in the order they reach the database: those run
    straight on a transaction's connection (`db._run`), those sent later together
    (`later.send`, PostgreSQL) and those SQLAlchemy executes. Each round trip of the
    transaction is also kept (`Seen.trips`)."""
    seen = Seen()
    original, original_send = db_module._run, later.send

    def spy(connection: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        name = _named(sql)
        if name and not later.pending(connection):  # else sent with the queue, below
            seen.sent([name])
        return original(connection, sql, *args, **kwargs)

    def send_spy(connection: Any, **kwargs: Any) -> None:
        queued = connection.info.get("iod_later") or []
        seen.sent([name for item in queued if (name := _named(item.sql))],
                  commit=kwargs.get("commit", False))  # fmt: skip
        original_send(connection, **kwargs)

    def executed(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        name = _named(sql)
        if name:
            seen.sent([name])

    monkeypatch.setattr(db_module, "_run", spy)
    monkeypatch.setattr(later, "send", send_spy)
    engine = services.db.engine
    event.listen(engine, "before_cursor_execute", executed)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", executed)


# The commit's part, after the work: the customer's event position and its event (one
# statement on PostgreSQL), the events' subscribers (the audit row; the customer's webhook
# endpoints, none here; those given as `then`). PostgreSQL's NOTIFY is sent after the
# commit, on a connection of its own (infra/db/notify.py), not in the transaction.
def _commit(services: Services, then: tuple[str, ...] = ()) -> list[str]:
    # The webhook endpoints are read just before the events are written (`read_ahead`:
    # with them in one round trip on PostgreSQL), the audit row after.
    if services.db.engine.dialect.name == "postgresql":  # one statement (events/__init__.py)
        written = ["UPDATE event_streams + INSERT events"]
    else:
        written = ["UPDATE event_streams", "INSERT events"]
    return ["SELECT webhook_endpoints", *written, "INSERT audit_events", *then]


def test_an_order_runs_these_statements(
    api: TestClient, headers: dict[str, str], services: Services, statements: Seen
) -> None:
    location = "PL0001247634"
    order = {"locationId": location, "bandwidth": "20 Mbps"}
    api.post(BASE, json=order, headers=headers)  # the customer's first event makes its stream
    statements.clear()
    response = api.post(BASE, json=order, headers=headers)
    assert response.status_code == 201, response.text
    assert statements == [
        "SELECT locations",
        "INSERT connections",  # with its committed figure: written once before its block
        "INSERT status_transitions",
        "INSERT jobs",
        "UPDATE locations",  # the capacity check, the location's row locked from here
        "SELECT ipv4_blocks",  # a freed block to reuse
        "INSERT ipv4_blocks",
        "UPDATE locations",  # the pool's next offset
        "UPDATE connections",  # its block
        *_commit(services, then=("INSERT lumen_services",)),  # its Lumen service id
    ]
    with services.db.read() as session:
        connection = session.get(Connection, response.json()["id"])
        assert connection is not None
        assert connection.committed_mbps == 20
        assert connection.ipv4_block == response.json()["ipv4Block"]
        committed = session.scalar(select(Location.committed_mbps).where(Location.id == location))
        assert committed == 40
        service_ids = session.scalars(
            select(LumenService.service_id).where(LumenService.connection_id == connection.id)
        ).all()
        assert len(service_ids) == 1 and re.fullmatch(r"77\d{9}", service_ids[0])
        assert capacity.check(session) == []  # every stored figure as recomputed


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "Idempotency-Key"])
def test_a_change_runs_these_statements(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    statements: Seen,
    keyed: bool,
) -> None:
    order = {"locationId": "PL0001247634", "bandwidth": "20 Mbps"}
    connection_id = api.post(BASE, json=order, headers=headers).json()["id"]
    statements.clear()
    key = {"Idempotency-Key": "change-1"} if keyed else {}
    response = api.put(f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "50 Mbps"},
                       headers={**headers, **key})  # fmt: skip
    assert response.status_code == 200, response.text
    claim, store = (["INSERT idempotency_keys"], ["UPDATE idempotency_keys"]) if keyed else ([], [])
    assert statements == [
        *claim,
        "SELECT connections",  # locked, with its location's tiers (joined)
        "SELECT bandwidth_changes",  # its pending changes, read after the lock
        "INSERT bandwidth_changes",
        "INSERT jobs",
        "UPDATE connections",  # its committed figure and updated_at
        "UPDATE locations",  # the capacity check
        *store,
        *_commit(services),
    ]
    assert [c["bandwidth"] for c in response.json()["pendingBandwidthChanges"]] == ["50 Mbps"]
    with services.db.read() as session:
        assert session.scalar(select(Location.committed_mbps).where(
            Location.id == "PL0001247634")) == 50  # fmt: skip
        assert capacity.check(session) == []


def test_a_change_does_not_wait_for_its_locations_row(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """The connection's row is locked with its location's tiers read in the same SELECT
    (`FOR UPDATE OF connections`): the location's row is not locked by it, so a change does
    not queue behind the orders in flight at its location until its capacity check."""
    if services.db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: no row locks")
    order = {"locationId": "PL0001247634", "bandwidth": "20 Mbps"}
    connection_id = api.post(BASE, json=order, headers=headers).json()["id"]
    with services.db.read() as session:
        customer_id = session.scalar(
            select(Connection.customer_id).where(Connection.id == connection_id)
        )
    assert customer_id is not None
    found: list[bool] = []

    def read_to_change() -> None:
        with services.db.write() as session:
            found.append(repository.get_to_change(session, customer_id, connection_id) is not None)

    with services.db.engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT 1 FROM locations WHERE id = 'PL0001247634' FOR UPDATE"))
        reader = threading.Thread(target=read_to_change)
        reader.start()
        reader.join(10)
        waited = reader.is_alive()
    reader.join(10)
    assert not waited, "the change waited for its location's row lock"
    assert found == [True]


def test_a_change_refuses_a_tier_its_location_does_not_offer(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """The tiers read with the connection's row are the location's own."""
    order = {"locationId": "PL0001247634", "bandwidth": "20 Mbps"}
    connection_id = api.post(BASE, json=order, headers=headers).json()["id"]
    with services.db.write() as session:
        location = session.get(Location, "PL0001247634")
        assert location is not None
        location.tiers_mbps = [20, 100]
    refused = api.put(f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "50 Mbps"},
                      headers=headers)  # fmt: skip
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["pointer"] == "/bandwidth"
    accepted = api.put(f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "100 Mbps"},
                       headers=headers)  # fmt: skip
    assert accepted.status_code == 200, accepted.text


def test_a_keyed_change_on_postgresql_is_a_few_round_trips(
    api: TestClient, headers: dict[str, str], services: Services, statements: Seen
) -> None:
    """The statements after the pending changes' read go together (`db/later.py`), the
    location's checked UPDATE with them: its row is locked for a round trip or two, not
    for one per statement (issue 14, the surge at one location)."""
    if services.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's pipeline mode; SQLite runs each statement in-process")
    order = {"locationId": "PL0001247634", "bandwidth": "20 Mbps"}
    connection_id = api.post(BASE, json=order, headers=headers).json()["id"]
    statements.clear()
    statements.trips.clear()
    response = api.put(f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "50 Mbps"},
                       headers={**headers, "Idempotency-Key": "k"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert statements.trips == [
        ["INSERT idempotency_keys"],  # the key's claim: a replay answers from it
        ["SELECT connections"],  # locked: what follows depends on it
        ["SELECT bandwidth_changes"],
        [
            "INSERT bandwidth_changes", "INSERT jobs", "UPDATE connections",
            "UPDATE locations",  # the capacity check: the location's row locked from here
            "UPDATE idempotency_keys",  # the answer
            "SELECT webhook_endpoints",  # read ahead of the events, for their fan-out
            "UPDATE event_streams + INSERT events",  # its positions are waited for
        ],
        ["INSERT audit_events", "COMMIT"],  # one round trip
    ]  # fmt: skip
