"""Race conditions (OWASP API6, unrestricted access to sensitive business flows, by speed):
requests that run at the same moment cannot get more than they could one after the other.

- Lost update: clients that read the same ETag and then act with `If-Match` at once: exactly
  one wins, every other gets 412.
- The pending-change cap holds when many changes arrive at once.
- The same Idempotency-Key sent many times at once orders once.

Run on SQLite and PostgreSQL (row locks there, the write lock here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from iod.models import BandwidthChange, Connection
from tests.security.conftest import BASE, LOC, World

THREADS = 8


def at_once(count: int, call: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(call, range(count)))


def pending_of(world: World, connection_id: str) -> int:
    with world.services.db.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(BandwidthChange)
                .where(
                    BandwidthChange.connection_id == connection_id,
                    BandwidthChange.status.in_(("scheduled", "applying")),
                )
            )
            or 0
        )


def test_lost_update_concurrent_if_match_writes_one_wins(world: World) -> None:
    url = f"{BASE}/{world.connection_id}"
    tag = world.api.get(url, headers=world.acme_headers).headers["etag"]
    before = pending_of(world, world.connection_id)
    headers = {**world.acme_headers, "If-Match": tag}

    def change(n: int) -> int:
        body = {"bandwidth": ["200 Mbps", "500 Mbps"][n % 2]}
        return world.api.put(f"{url}/bandwidth", json=body, headers=headers).status_code

    statuses = at_once(THREADS, change)
    assert sorted(statuses) == [200] + [412] * (THREADS - 1), statuses
    assert pending_of(world, world.connection_id) == before + 1


def test_lost_update_concurrent_if_match_actions_one_wins(world: World) -> None:
    url = f"{BASE}/{world.connection_id}"
    tag = world.api.get(url, headers=world.acme_headers).headers["etag"]
    headers = {**world.acme_headers, "If-Match": tag}

    def act(n: int) -> int:
        action = ["suspend", "terminate"][n % 2]
        return world.api.post(f"{url}/{action}", headers=headers).status_code

    statuses = at_once(THREADS, act)
    assert sorted(statuses) == [202] + [412] * (THREADS - 1), statuses


def test_pending_change_cap_holds_under_concurrent_requests(world: World, limited: Any) -> None:
    app = limited(max_pending_changes=4, rate_limit_writes_per_second=0)
    url = f"{BASE}/{world.connection_id}/bandwidth"  # one change pending already

    # Two bandwidths in turn: a request for what will be in force at its date anyway is a
    # 200 that records nothing, so what counts is the changes created.
    def change(n: int) -> str:
        bandwidth = ("200 Mbps", "300 Mbps")[n % 2]
        body = {"bandwidth": bandwidth, "effectiveDate": f"2030-02-{n + 1:02d}T00:00:00Z"}
        response = app.api.put(url, json=body, headers=world.acme_headers)
        if response.status_code == 200:
            return "created" if "change" in response.json() else "no-op"
        return str(response.status_code)

    outcomes = at_once(THREADS * 2, change)
    assert outcomes.count("created") == 3, outcomes
    assert set(outcomes) <= {"created", "no-op", "409"} and "409" in outcomes, outcomes
    assert pending_of(world, world.connection_id) == 4


def test_concurrent_requests_with_one_idempotency_key_order_once(world: World) -> None:
    headers = {**world.acme_headers, "Idempotency-Key": "race-order-1"}
    body = {"bandwidth": "10 Mbps", "locationId": LOC}

    def order(_: int) -> tuple[int, str | None]:
        response = world.api.post(BASE, json=body, headers=headers)
        return response.status_code, response.json().get("id")

    results = at_once(THREADS, order)
    created = {conn_id for status, conn_id in results if status == 201}
    assert len(created) == 1, results
    assert {status for status, _ in results} == {201}, results  # the repeats wait, then replay
    with world.services.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Connection)
            .where(Connection.customer_id == world.acme.customer_id)
        )
    assert count == 2  # the world's connection and this one
