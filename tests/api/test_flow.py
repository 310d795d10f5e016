"""The spec's flow through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.infra.clock import FrozenClock, rfc3339
from tests.conftest import run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def create(api: TestClient, headers: dict[str, str], bandwidth: str = "100 Mbps") -> dict:  # type: ignore[type-arg]
    response = api.post(BASE, json={"bandwidth": bandwidth, "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_create_provisions_then_activates(api: TestClient, headers, services: Services) -> None:
    body = create(api, headers, "100mbps")
    assert body["status"] == "provisioning"
    assert body["bandwidth"] == "100 Mbps"
    assert body["location"] == LOC
    assert body["createdAt"].endswith("Z")
    assert run_jobs(services) == 1
    got = api.get(f"{BASE}/{body['id']}", headers=headers)
    assert got.status_code == 200
    assert got.json()["status"] == "active"
    assert [c["id"] for c in api.get(BASE, headers=headers).json()["connections"]] == [body["id"]]


def test_change_now_is_applied_by_the_worker(api: TestClient, headers, services: Services) -> None:
    conn = create(api, headers)
    run_jobs(services)
    response = api.put(
        f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bandwidth"] == "100 Mbps"  # what is in force until the worker applies it
    assert body["pendingBandwidthChanges"][0]["bandwidth"] == "1 Gbps"
    assert body["change"]["status"] == "scheduled"
    run_jobs(services)
    after = api.get(f"{BASE}/{conn['id']}", headers=headers).json()
    assert after["bandwidth"] == "1 Gbps"
    assert after["pendingBandwidthChanges"] == []
    assert services.driver.inventory()[0].bandwidth_mbps == 1000  # type: ignore[attr-defined]


def test_future_change_waits_for_its_time(
    api: TestClient, headers, services: Services, clock: FrozenClock
) -> None:
    conn = create(api, headers)
    run_jobs(services)
    when = clock.now() + timedelta(hours=2)
    response = api.put(
        f"{BASE}/{conn['id']}/bandwidth",
        json={"bandwidth": "500 Mbps", "effectiveDate": rfc3339(when)},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    clock.advance(timedelta(hours=1, minutes=59))
    assert run_jobs(services) == 0
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["bandwidth"] == "100 Mbps"
    clock.advance(timedelta(minutes=1))
    assert run_jobs(services) == 1
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["bandwidth"] == "500 Mbps"


def test_past_effective_date_applies_now(
    api: TestClient, headers, services: Services, clock: FrozenClock
) -> None:
    conn = create(api, headers)
    past = rfc3339(clock.now() - timedelta(days=3))
    response = api.put(
        f"{BASE}/{conn['id']}/bandwidth",
        json={"bandwidth": "1Gbps", "effectiveDate": past},
        headers=headers,
    )
    assert response.status_code == 200
    assert run_jobs(services) == 2
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["bandwidth"] == "1 Gbps"


def test_another_customers_connection_is_404(api: TestClient, headers, make_tenant) -> None:
    from tests.conftest import get_token

    conn = create(api, headers)
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    assert api.get(f"{BASE}/{conn['id']}", headers=other).status_code == 404
    put = api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=other)
    assert put.status_code == 404
    assert api.get(BASE, headers=other).json() == {"connections": []}


def test_capacity_is_enforced(api: TestClient, headers, services: Services) -> None:
    # The 100 Mbps retail site holds one 100 Mbps connection and no more.
    body = {"bandwidth": "100 Mbps", "locationId": "PL0000774102"}
    assert api.post(BASE, json=body, headers=headers).status_code == 201
    second = api.post(
        BASE, json={"bandwidth": "1 Mbps", "locationId": "PL0000774102"}, headers=headers
    )
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["type"] == "/problems/capacity-exceeded"


def test_the_capacity_rule_is_the_domain_one(
    api: TestClient, headers, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conditional UPDATE's condition is built by `domain.capacity.fits`, not a second
    copy: a stricter rule there (10 Mbps of headroom kept free) refuses what fits today."""
    from iod.connections import capacity
    from iod.domain.capacity import fits

    def stricter(capacity_mbps, committed_total, extra_mbps):  # type: ignore[no-untyped-def]
        return fits(capacity_mbps, committed_total, extra_mbps + 10)

    monkeypatch.setattr(capacity, "fits", stricter)
    # The statement is built once at import: build it again under the stricter rule.
    monkeypatch.setattr(capacity, "_RESERVE", capacity._build_reserve())
    body = {"bandwidth": "100 Mbps", "locationId": "PL0000774102"}  # its capacity: 100 Mbps
    refused = api.post(BASE, json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/capacity-exceeded"
    body["bandwidth"] = "50 Mbps"
    assert api.post(BASE, json=body, headers=headers).status_code == 201


def test_failed_provisioning_is_retried(api: TestClient, headers, services: Services) -> None:
    services.driver.fail_next.append("provision")  # type: ignore[attr-defined]
    conn = create(api, headers)
    run_jobs(services)
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] == "active"


def test_a_batch_the_network_cannot_finish_in_half_a_lease_is_handed_back(
    api: TestClient, headers, services: Services
) -> None:
    from sqlalchemy import select

    from iod.jobs.worker import Worker, WorkerPolicy
    from iod.models import Job
    from iod.network.simulated import SimulatedDriver

    ids = [create(api, headers, "10 Mbps")["id"] for _ in range(3)]
    slow = SimulatedDriver(provision_seconds=0.15)
    worker = Worker(
        services.db, slow, services.clock, WorkerPolicy(lease_seconds=0.2, batch_size=10)
    )
    assert worker.run_once() == 3  # claimed three; the first took longer than 0.1 s
    with services.db.read() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        assert [j.state for j in jobs] == ["done", "queued", "queued"]
        assert [j.attempts for j in jobs] == [1, 0, 0], "handing back is not an attempt"
    worker.run_until_idle()
    statuses = {api.get(f"{BASE}/{i}", headers=headers).json()["status"] for i in ids}
    assert statuses == {"active"}
