"""The events feed and stream through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import re
import string
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from iod import events
from iod.app import Services
from iod.customers import service as customers
from iod.events import service as feed
from iod.infra.db import Database, make_engine
from iod.jobs.listener import Listener
from tests.conftest import Tenant, get_token, postgres_url, run_jobs

FEED = "/internet-on-demand/events"
BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def create(api: TestClient, headers: dict[str, str]) -> str:
    response = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def record(db: Database, services: Services, customer_id: str, subject: str = "con_x") -> None:
    with db.write() as session:
        events.record(
            session,
            "connection.activated",
            customer_id=customer_id,
            subject_id=subject,
            at=services.clock.now(),
            connectionId=subject,
            fromStatus="provisioning",
            reason="test",
        )


def test_feed_in_commit_order_with_cursor(api: TestClient, headers, services: Services) -> None:
    first = create(api, headers)
    run_jobs(services)
    second = create(api, headers)
    page = api.get(FEED, headers=headers).json()
    got = [(e["type"], e["connectionId"]) for e in page["events"]]
    assert got == [
        ("connection.ordered", first),
        ("connection.activated", first),
        ("connection.ordered", second),
    ]
    event = page["events"][0]
    assert event["data"]["bandwidth"] == "100 Mbps" and event["occurredAt"].endswith("Z")
    assert page["nextCursor"] == page["events"][-1]["id"]
    one = api.get(FEED, params={"limit": 1}, headers=headers).json()
    assert [e["id"] for e in one["events"]] == [event["id"]]
    rest = api.get(FEED, params={"after": one["nextCursor"]}, headers=headers).json()
    assert [e["id"] for e in rest["events"]] == [e["id"] for e in page["events"][1:]]
    empty = api.get(FEED, params={"after": page["nextCursor"]}, headers=headers).json()
    assert empty == {"events": [], "nextCursor": page["nextCursor"]}
    now = api.get(FEED, params={"after": "now"}, headers=headers).json()
    assert now == empty


def test_filters(api: TestClient, headers, services: Services) -> None:
    first = create(api, headers)
    run_jobs(services)
    second = create(api, headers)
    by_type = api.get(FEED, params={"type": "connection.act"}, headers=headers).json()
    assert [e["type"] for e in by_type["events"]] == ["connection.activated"]
    # Filtered out or not, what was looked at is passed: the cursor moves to the end.
    assert by_type["nextCursor"] == api.get(FEED, headers=headers).json()["nextCursor"]
    by_connection = api.get(FEED, params={"connectionId": second}, headers=headers).json()
    assert [e["connectionId"] for e in by_connection["events"]] == [second]
    both = api.get(
        FEED,
        params=[("type", "connection.ordered"), ("type", "bandwidth_change.")],
        headers=headers,
    ).json()
    assert [e["connectionId"] for e in both["events"]] == [first, second]
    # `_` is not a LIKE wildcard here.
    assert api.get(FEED, params={"type": "connection_"}, headers=headers).json()["events"] == []


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"after": "nope"}, "after"),
        ({"after": feed.encode_cursor(5)[:-1] + "!"}, "after"),
        ({"wait": "61"}, "wait"),
        ({"limit": "0"}, "limit"),
        ({"type": "Connection"}, "type"),
        ({"connectionId": "a b"}, "connectionId"),
    ],
)
def test_bad_parameters_are_400(api: TestClient, headers, params, pointer: str) -> None:
    response = api.get(FEED, params=params, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert pointer in response.text


def test_cursor_round_trip() -> None:
    for position in (0, 1, 255, 2**40):
        assert feed.decode_cursor(feed.encode_cursor(position)) == position
    with pytest.raises(ValueError):
        feed.decode_cursor("ev" + "A" * 10 + "=")
    # Every string the documented pattern allows is a cursor (schemathesis sends such).
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits + "_-"
    for _ in range(2000):
        value = "ev" + rng.choice("ABCDEFGHIJKLMNOP") + "".join(rng.choices(alphabet, k=9))
        value += rng.choice("AEIMQUYcgkosw048")
        assert re.fullmatch(feed.CURSOR_PATTERN, value)
        assert feed.encode_cursor(feed.decode_cursor(value)) == value
    assert not re.fullmatch(feed.CURSOR_PATTERN, "evvAQXICDxMCC")  # past 2**62


def test_tenancy(api: TestClient, headers, services: Services, make_tenant) -> None:
    mine = create(api, headers)
    other: Tenant = make_tenant(name="Other")
    theirs = {"Authorization": f"Bearer {get_token(api, other)}"}
    assert api.get(FEED, headers=theirs).json()["events"] == []
    assert api.get(FEED, params={"connectionId": mine}, headers=theirs).json()["events"] == []


def test_read_scope_and_token_needed(api: TestClient) -> None:
    assert api.get(FEED).status_code == 401
    assert api.get(f"{FEED}/stream").status_code == 401


def test_rolled_back_transaction_shows_nothing(
    api: TestClient, headers, services: Services, tenant: Tenant
) -> None:
    with pytest.raises(RuntimeError), services.db.write() as session:
        events.record(
            session,
            "connection.activated",
            customer_id=tenant.customer_id,
            subject_id="con_x",
            at=services.clock.now(),
            connectionId="con_x",
        )
        raise RuntimeError("roll back")
    assert api.get(FEED, headers=headers).json() == {
        "events": [],
        "nextCursor": feed.encode_cursor(0),
    }


def test_long_poll_is_woken_by_a_commit(
    api: TestClient, headers, services: Services, tenant: Tenant, database: Database
) -> None:
    # Rechecks far apart, so only the wakeup can answer in time.
    services.settings.events_recheck_seconds = 30
    other = None
    if not database.is_sqlite:  # another process's commit: heard through NOTIFY only
        other = Database(make_engine(postgres_url(), pool_size=1))
    answer: dict[str, object] = {}

    def poll() -> None:
        response = api.get(FEED, params={"after": "now", "wait": 20}, headers=headers)
        answer["ended"] = time.monotonic()
        answer["body"] = response.json()

    hub = feed.hub_of(services.db)
    thread = threading.Thread(target=poll)
    thread.start()
    # The poll is waiting in the hub (not a guess from a sleep: a loaded machine may take
    # longer to get there) and, on PostgreSQL, the hub's LISTEN thread is listening.
    wait_until(lambda: hub._waiters, 30)
    if other is not None:
        wait_until(lambda: any(listener.listening.is_set() for listener in listeners_of(hub)), 30)
    assert "body" not in answer  # still waiting
    committed = time.monotonic()
    record(other or database, services, tenant.customer_id)
    thread.join(30)
    if other is not None:
        other.dispose()
    assert [e["type"] for e in answer["body"]["events"]] == ["connection.activated"]  # type: ignore[index]
    # Woken by the commit: the recheck (30 s) or the poll's wait (20 s) would be later.
    assert answer["ended"] - committed < 10  # type: ignore[operator]


def wait_until(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def listeners_of(hub: feed.Hub) -> list[Listener]:
    """The LISTEN threads that wake `hub` (hub_of keeps no reference to its own)."""
    return [
        thread
        for thread in threading.enumerate()
        if isinstance(thread, Listener) and getattr(thread.wakeup, "_hub", None) is hub
    ]


def test_long_poll_times_out_empty(api: TestClient, headers) -> None:
    started = time.monotonic()
    page = api.get(FEED, params={"wait": 1}, headers=headers).json()
    # Its own wait (1 s), not the longest one (60 s): a generous bound for a loaded machine.
    assert page["events"] == [] and 0.9 < time.monotonic() - started < 15


def test_pruned_cursor_is_410(api: TestClient, headers, services: Services, tenant: Tenant) -> None:
    for _ in range(3):
        record(services.db, services, tenant.customer_id)
    cursor = api.get(FEED, params={"limit": 1}, headers=headers).json()["nextCursor"]
    with services.db.write() as session:
        events.prune(session, services.clock.now() + timedelta(seconds=1))
    response = api.get(FEED, params={"after": cursor}, headers=headers)
    assert response.status_code == 410
    assert response.json()["type"].endswith("/cursor-expired")
    assert api.get(FEED, headers=headers).json()["events"] == []


def _sse(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "id" in fields:
            out.append(fields)
    return out


def test_stream_resumes_with_last_event_id_and_beats(
    api: TestClient, headers, services: Services, tenant: Tenant
) -> None:
    services.settings.events_stream_max_seconds = 1.2
    services.settings.events_heartbeat_seconds = 0.3
    services.settings.events_recheck_seconds = 0.2
    for _ in range(3):
        record(services.db, services, tenant.customer_id)
    response = api.get(f"{FEED}/stream", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = _sse(response.text)
    assert [e["event"] for e in got] == ["connection.activated"] * 3
    assert ": heartbeat" in response.text
    resumed = api.get(f"{FEED}/stream", headers={**headers, "Last-Event-ID": got[0]["id"]})
    assert [e["id"] for e in _sse(resumed.text)] == [e["id"] for e in got[1:]]
    bad = api.get(f"{FEED}/stream", headers={**headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_stream_limit_per_client(
    api: TestClient, headers, services: Services, tenant: Tenant
) -> None:
    services.settings.events_stream_max_seconds = 0.2
    hub = feed.hub_of(services.db)
    most = services.settings.events_streams_per_client
    for _ in range(most):
        assert hub.open_stream(tenant.client_id, most)
    response = api.get(f"{FEED}/stream", headers=headers)
    assert response.status_code == 429 and "Retry-After" in response.headers
    hub.close_stream(tenant.client_id)
    assert api.get(f"{FEED}/stream", headers=headers).status_code == 200
    assert hub.streams[tenant.client_id] == most - 1  # the finished stream gave its slot back


def test_a_cursor_beyond_the_last_event_is_400(
    api: TestClient, headers, services: Services, tenant: Tenant
) -> None:
    """A well-formed cursor past the customer's last position would skip every event up to
    it, later, without a word: it is refused where it was given (the feed, its long poll,
    the stream's `after` and `Last-Event-ID`). The last position itself is valid."""
    for _ in range(2):
        record(services.db, services, tenant.customer_id)
    last = api.get(FEED, headers=headers).json()["nextCursor"]
    assert feed.decode_cursor(last) == 2
    for beyond in (feed.encode_cursor(3), "evP_________8"):
        for params in ({"after": beyond}, {"after": beyond, "wait": 20}):
            started = time.monotonic()
            answer = api.get(FEED, params=params, headers=headers)
            assert answer.status_code == 400, answer.text
            # Refused at once, not after the wait (a generous bound, far below the 20 s).
            assert time.monotonic() - started < 10
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert [e["pointer"] for e in answer.json()["errors"]] == ["/query/after"]
            assert "beyond the last event" in answer.json()["detail"]
        stream = api.get(f"{FEED}/stream", params={"after": beyond}, headers=headers)
        assert stream.status_code == 400
        assert [e["pointer"] for e in stream.json()["errors"]] == ["/query/after"]
        resumed = api.get(f"{FEED}/stream", headers={**headers, "Last-Event-ID": beyond})
        assert resumed.status_code == 400
        assert [e["pointer"] for e in resumed.json()["errors"]] == ["/header/Last-Event-ID"]
    # Another customer's positions are not this one's: its last position is its own.
    with services.db.write() as session:
        stranger = customers.create_customer(session, services.clock, "Other").id
    for _ in range(5):
        record(services.db, services, stranger)
    assert (
        api.get(FEED, params={"after": feed.encode_cursor(3)}, headers=headers).status_code == 400
    )
    # The last position is valid: nothing new yet (and the long poll waits for it).
    assert api.get(FEED, params={"after": last}, headers=headers).json() == {
        "events": [],
        "nextCursor": last,
    }
    assert api.get(FEED, params={"after": last, "wait": 0}, headers=headers).status_code == 200
