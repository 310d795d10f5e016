"""Traffic telemetry through the API: counters in (the in-process sampler, an edge agent's
readings), bits per second out with peak, 95th percentile and utilisation; tenancy and bad
parameters. Both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from iod.app import Services
from iod.infra.clock import FrozenClock, rfc3339
from iod.jobs.registry import JobRef, TaskContext
from iod.traffic import service, tasks
from tests.api.test_edge_agents import edge_headers, register
from tests.conftest import get_token, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def active(api: TestClient, headers: dict[str, str], services: Services) -> dict[str, Any]:
    made = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    run_jobs(services)
    return made.json()  # type: ignore[no-any-return]


def feed(services: Services, clock: FrozenClock, cid: str, per_second: list[int]) -> None:
    """One reading every 10 s; `per_second` bytes/s downstream in each interval."""
    total = 0
    with services.db.write() as session:
        service.ingest(session, clock.now(), {cid: (0, 0, 0, 0)})
    for rate in per_second:
        clock.advance(timedelta(seconds=10))
        total += rate * 10
        with services.db.write() as session:
            service.ingest(session, clock.now(), {cid: (total, total // 4, total // 1000, 0)})


def test_traffic_rates_peak_p95_and_utilisation(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    conn = active(api, headers, services)
    start = clock.now()
    # 12.5 MB/s = 100 Mbps (full) for 50 s, then 2.5 MB/s = 20 Mbps for 50 s.
    feed(services, clock, conn["id"], [12_500_000] * 5 + [2_500_000] * 5)
    answer = api.get(
        f"{BASE}/{conn['id']}/traffic",
        params={"from": rfc3339(start), "to": rfc3339(clock.now()), "step": 10},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["step"] == 10 and body["samples"] == 10 and body["bandwidth"] == "100 Mbps"
    assert [p["inBps"] for p in body["points"]] == [100_000_000] * 5 + [20_000_000] * 5
    assert [p["outBps"] for p in body["points"]] == [25_000_000] * 5 + [5_000_000] * 5
    assert body["in"] == {"averageBps": 60_000_000, "peakBps": 100_000_000,
                          "p95Bps": 100_000_000, "utilisation": 0.6}  # fmt: skip
    assert body["out"]["utilisation"] == 0.15
    # Coarser bins: 20 s each, and an empty window's bins are null, not zero.
    wide = api.get(
        f"{BASE}/{conn['id']}/traffic",
        params={"from": rfc3339(start), "to": rfc3339(clock.now() + timedelta(seconds=40)),
                "step": 20},
        headers=headers,
    ).json()  # fmt: skip
    assert [p["inBps"] for p in wide["points"]] == [100_000_000, 100_000_000, 60_000_000,
                                                    20_000_000, 20_000_000, None, None]  # fmt: skip


def test_a_counter_reset_and_a_tier_change_are_accounted(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    conn = active(api, headers, services)
    start = clock.now()
    with services.db.write() as session:
        service.ingest(session, clock.now(), {conn["id"]: (10_000_000, 0, 0, 0)})
    clock.advance(timedelta(seconds=10))
    with services.db.write() as session:  # went backwards: a rebuilt class counts from zero
        service.ingest(session, clock.now(), {conn["id"]: (1_250_000, 0, 0, 0)})
    api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers)
    run_jobs(services)
    clock.advance(timedelta(seconds=10))
    with services.db.write() as session:
        service.ingest(session, clock.now(), {conn["id"]: (1_250_000 + 12_500_000, 0, 0, 0)})
    body = api.get(
        f"{BASE}/{conn['id']}/traffic",
        params={"from": rfc3339(start), "to": rfc3339(clock.now()), "step": 10},
        headers=headers,
    ).json()
    assert [p["inBps"] for p in body["points"]] == [1_000_000, 10_000_000]
    assert [p["tierMbps"] for p in body["points"]] == [100, 1000]
    assert body["in"]["utilisation"] == round(11_000_000 / 1_100_000_000, 4)


def test_traffic_tenancy_and_bad_parameters(
    api: TestClient, headers: dict[str, str], services: Services, make_tenant: Any
) -> None:
    conn = active(api, headers, services)
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    assert api.get(f"{BASE}/{conn['id']}/traffic", headers=other).status_code == 404
    assert api.get(f"{BASE}/con_nope/traffic", headers=headers).status_code == 404
    url = f"{BASE}/{conn['id']}/traffic"
    for params in (
        {"from": "2026-11-30T10:00:00Z", "to": "2026-11-30T09:00:00Z"},
        {"from": "2026-11-30T10:00:00"},
        {"step": 0},
        {"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T00:00:00Z", "step": 60},
        {"from": "yesterday"},
        {"to": "0001-01-01T00:10:00Z"},
    ):
        answer = api.get(url, params=params, headers=headers)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert api.get(url, headers=headers).json()["points"][0]["inBps"] is None  # no samples


def test_the_in_process_sampler_and_the_downsampling(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    conn = active(api, headers, services)
    network = services.network()
    ctx = TaskContext(clock, services.settings, network)
    for n in range(3):  # the simulated driver makes up plausible traffic
        ref = JobRef(1000 + n, tasks.SAMPLE, None, None, 1, 1)
        tasks._act(ctx, True, f"job-{ref.id}")
        with services.db.write() as session:
            tasks._record(session, ref, ctx)
        clock.advance(timedelta(seconds=10))
    body = api.get(f"{BASE}/{conn['id']}/traffic", headers=headers).json()
    assert body["samples"] == 2
    # Folded after the raw retention: the bytes stay, the rows are 5-minute ones.
    clock.advance(timedelta(hours=services.settings.traffic_raw_retention_hours + 1))
    with services.db.write() as session:
        before = clock.now() - timedelta(hours=services.settings.traffic_raw_retention_hours)
        assert service.downsample(session, before) == 2


def test_the_in_process_sampler_leaves_a_location_handed_to_an_agent(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    """`agent-add` hands a location's connections in force to its agent, but the
    in-process driver still holds them (until a restart reconciles it) and its sampler kept
    reading them: its counters and the agent's, interleaved, each looked like a reset to
    the other (against `make run`: 334 % utilisation on a 50 Mbps connection whose agent
    reported 8 kbit/s). The agent alone samples its location's connections."""
    conn = active(api, headers, services)
    register(services, LOC)
    ctx = TaskContext(clock, services.settings, services.network())
    for n in range(3):
        ref = JobRef(1000 + n, tasks.SAMPLE, None, None, 1, 1)
        tasks._act(ctx, True, f"job-{ref.id}")
        with services.db.write() as session:
            tasks._record(session, ref, ctx)
        clock.advance(timedelta(seconds=10))
    assert api.get(f"{BASE}/{conn['id']}/traffic", headers=headers).json()["samples"] == 0


def test_an_agent_reports_counters_for_its_own_connections_only(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    agent = register(services, LOC)
    conn = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    elsewhere = api.post(
        BASE, json={"bandwidth": "100 Mbps", "locationId": "PL0000381920"}, headers=headers
    ).json()
    run_jobs(services)
    eh = edge_headers(api, agent)
    url = f"/internal/edge/v1/locations/{LOC}/samples"
    cid = conn.json()["id"]
    start = clock.now()
    for n in range(2):
        reading = {"connectionId": cid, "bytesIn": n * 1_250_000, "bytesOut": 0}
        stolen = {"connectionId": elsewhere["id"], "bytesIn": 5, "bytesOut": 5}
        answer = api.post(
            url, json={"at": rfc3339(clock.now()), "samples": [reading, stolen]}, headers=eh
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"stored": n, "unknown": 1}
        clock.advance(timedelta(seconds=10))
    window = {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=10)), "step": 10}
    body = api.get(f"{BASE}/{cid}/traffic", params=window, headers=headers).json()
    assert body["in"]["peakBps"] == 1_000_000
    late = api.post(
        url, json={"at": rfc3339(clock.now() + timedelta(hours=1)), "samples": []}, headers=eh
    )
    assert late.status_code == 400


def test_the_sdk_and_the_cli_sparkline(
    api: TestClient, services: Services, clock: FrozenClock, tenant: Any
) -> None:
    from iod.client import Client
    from iod.client.cli import sparkline

    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    conn = active(api, headers, services)
    start = clock.now()
    feed(services, clock, conn["id"], [12_500_000, 6_250_000, 0])
    with Client("http://testserver", tenant.client_id, tenant.client_secret,
                transport=api._transport) as sdk:  # fmt: skip
        traffic = sdk.traffic(conn["id"], start, clock.now(), 10)
    assert [p.in_bps for p in traffic.points] == [100_000_000, 50_000_000, 0]
    assert traffic.inbound.peak_bps == 100_000_000 and traffic.outbound.p95_bps == 25_000_000
    assert sparkline([p.in_bps for p in traffic.points], 100_000_000) == "█▅▁"
    assert sparkline([None, 10], 10) == " █"
