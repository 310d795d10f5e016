"""Fair reads (issue 12, item 4): a list answer costs rate-limit tokens by its rows, and a
heavy list runs off the event loop, so another customer's GET is answered meanwhile. On
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.connections import service
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.ids import new_id
from iod.infra.ratelimit import row_charge
from iod.models import Connection
from tests.conftest import Tenant, get_token

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"
BURST = 200


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Reads limited, refilled so slowly (one token in 1,000 s) that every charge shows.
    return Settings(
        data_dir=tmp_path,
        simulated_provision_seconds=0,
        simulated_change_seconds=0,
        client_cache_seconds=0,
        token_ttl=86400,
        rate_limit_reads_per_second=0.001,
        rate_limit_reads_burst=BURST,
        rate_limit_writes_per_second=0,
    )


def insert_connections(services: Services, tenant: Tenant, count: int) -> list[str]:
    """`count` active connections of the tenant's customer, written directly (fast)."""
    now = services.clock.now()
    ids = [new_id("con") for _ in range(count)]
    with services.db.write() as session:
        session.add_all(
            Connection(
                id=connection_id,
                customer_id=tenant.customer_id,
                location_id=LOC,
                status="active",
                bandwidth_mbps=1,
                committed_mbps=1,
                created_by=tenant.client_id,
                created_at=now,
                updated_at=now,
            )
            for connection_id in ids
        )
    return sorted(ids)


def remaining(response: Any) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["ratelimit-remaining"])


def test_the_charge_is_one_read_plus_one_per_hundred_rows() -> None:
    assert [row_charge(n) for n in (0, 1, 99, 100, 199, 250, 1000)] == [0, 0, 0, 1, 1, 2, 10]


def test_a_list_answer_costs_one_read_plus_one_per_hundred_rows(
    api: TestClient, services: Services, make_tenant: Any, clock: FrozenClock
) -> None:
    tenant = make_tenant()
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    ids = insert_connections(services, tenant, 250)
    first = api.get(BASE, params={"limit": 1000}, headers=headers)
    assert len(first.json()["connections"]) == 250
    assert remaining(first) == BURST - 1 - 2  # 250 rows: one read and two hundreds
    small = api.get(BASE, params={"limit": 50}, headers=headers)
    assert len(small.json()["connections"]) == 50
    assert remaining(small) == BURST - 3 - 1  # fewer than 100 rows: one read
    one = api.get(f"{BASE}/{ids[0]}", headers=headers)
    assert remaining(one) == BURST - 4 - 1
    # A page that ends early is charged for what it returned, not for what it asked.
    tail = api.get(BASE, params={"limit": 1000, "cursor": ids[99]}, headers=headers)
    assert len(tail.json()["connections"]) == 150
    assert remaining(tail) == BURST - 5 - 2


def test_a_list_charge_can_leave_the_client_in_debt(
    api: TestClient, services: Services, make_tenant: Any
) -> None:
    tenant = make_tenant()
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    insert_connections(services, tenant, 300)
    # Spend the burst down to two tokens with single reads, then list 300 rows: allowed
    # (one token is there), charged 1 + 3, so the bucket is two tokens in debt.
    for _ in range(BURST - 2):
        assert api.get(BASE, params={"limit": 1}, headers=headers).status_code == 200
    listed = api.get(BASE, params={"limit": 1000}, headers=headers)
    assert remaining(listed) == 0
    refused = api.get(BASE, params={"limit": 1}, headers=headers)
    assert refused.status_code == 429, refused.text
    # The debt is paid off before the next token: three tokens at one per 1,000 s.
    assert int(refused.headers["retry-after"]) >= 2500
    # Another client of the same process is not charged for it.
    other = make_tenant(name="Other")
    other_headers = {"Authorization": f"Bearer {get_token(api, other)}"}
    assert remaining(api.get(BASE, headers=other_headers)) == BURST - 1


def test_another_customers_get_is_answered_while_a_list_is_being_built(
    api: TestClient, services: Services, make_tenant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    heavy, light = make_tenant(name="Heavy"), make_tenant(name="Light")
    heavy_headers = {"Authorization": f"Bearer {get_token(api, heavy)}"}
    light_headers = {"Authorization": f"Bearer {get_token(api, light)}"}
    insert_connections(services, heavy, 120)
    (light_id,) = insert_connections(services, light, 1)

    # The heavy list's work is held in the middle until the light GET has been answered.
    # Were the list built on the event loop, the loop would be stuck in it and the GET
    # could not be answered before the hold times out (the generous bound, 30 s).
    started, release = threading.Event(), threading.Event()
    original = service.list_connections
    events: list[str] = []

    def held(db: Any, principal: Any, **kwargs: Any) -> Any:
        if principal.customer_id != heavy.customer_id:
            return original(db, principal, **kwargs)
        started.set()
        release.wait(timeout=30)
        events.append("list built")
        return original(db, principal, **kwargs)

    monkeypatch.setattr(service, "list_connections", held)
    answers: dict[str, Any] = {}

    def heavy_list() -> None:
        answers["list"] = api.get(BASE, params={"limit": 1000}, headers=heavy_headers)

    lister = threading.Thread(target=heavy_list)
    lister.start()
    try:
        assert started.wait(timeout=30), "the list never started"
        light_answer = api.get(f"{BASE}/{light_id}", headers=light_headers)
        events.append("light GET answered")
        light_list = api.get(BASE, headers=light_headers)  # a list too, on the other thread
        events.append("light list answered")
    finally:
        release.set()
        lister.join(timeout=60)
    assert light_answer.status_code == 200 and light_answer.json()["id"] == light_id
    assert [c["id"] for c in light_list.json()["connections"]] == [light_id]
    assert events == ["light GET answered", "light list answered", "list built"]
    assert answers["list"].status_code == 200
    assert len(answers["list"].json()["connections"]) == 120
