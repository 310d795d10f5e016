"""Edge agents against the API in process: operations handed over and acknowledged, the
job waiting without blocking the worker, snapshots and cursors, and tenancy (an agent of
one location learns nothing of another). Both databases."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services
from iod.edge import repository as edge_repository
from iod.edge import service as edge
from iod.edge.agent import Agent, Applier, load_state
from iod.events import service as events_service
from iod.infra import draining
from iod.infra.clock import FrozenClock
from iod.models import Connection, EdgeOperation, Job
from iod.network.simulated import SimulatedDriver
from tests.conftest import Tenant, get_token, run_jobs

BASE = "/internet-on-demand/connections"
A, B = "PL0001247634", "PL0000381920"


def register(services: Services, location: str) -> Tenant:
    with services.db.write() as session:
        done = edge.register_agent(session, services.clock, location, services.secret_hasher)
    return Tenant(edge.EDGE_CUSTOMER_ID, done.client.client_id, done.client.client_secret)


def edge_headers(api: TestClient, agent: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {get_token(api, agent)}"}


def order(api: TestClient, headers: dict[str, str], location: str = A) -> dict[str, Any]:
    answer = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": location}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def make_agent(api: TestClient, creds: Tenant, tmp_path: Path, driver: SimulatedDriver) -> Agent:
    return Agent(
        location_id=A, controller="http://testserver", client_id=creds.client_id,
        client_secret=creds.client_secret, applier=Applier(driver, A),
        state_path=tmp_path / "edge-state.json", version="test", wait_seconds=0,
        transport=api._transport,
    )  # fmt: skip


def test_an_order_waits_for_the_agent_and_completes_on_its_ack(
    api: TestClient, headers: dict[str, str], services: Services, tmp_path: Path
) -> None:
    creds = register(services, A)
    conn = order(api, headers)
    run_jobs(services)  # hands the operation over, then re-schedules itself: no wait here
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] == "provisioning"
    with services.db.read() as session:
        job = session.scalars(select(Job).where(Job.connection_id == conn["id"])).one()
        assert (job.state, job.attempts) == ("queued", 0)  # waiting is not an attempt
    eh = edge_headers(api, creds)
    snap = api.get(f"/internal/edge/v1/locations/{A}/desired", headers=eh).json()
    [row] = snap["connections"]
    assert row["connectionId"] == conn["id"] and row["state"] == "active"
    assert row["bandwidthMbps"] == 100 and row["opId"] == f"job-{job.id}" and not row["acked"]

    # The agent applies it to its kernel (here a simulated one) and reports.
    kernel = SimulatedDriver()
    agent = make_agent(api, creds, tmp_path, kernel)
    agent.resync()
    assert [c.connection_id for c in kernel.inventory()] == [conn["id"]]
    with services.db.read() as session:  # its report: the drift it corrected, its state
        mine = edge_repository.agent(session, A)
        assert mine is not None and (mine.drift, mine.actual_count, mine.version) == (1, 1, "test")
    run_jobs(services)  # the ack woke the job: it is due now, and done
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] == "active"
    assert services.driver.inventory() == []  # type: ignore[attr-defined]  # not in process

    # A change: handed over, applied by the watch, acknowledged once.
    api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers)
    run_jobs(services)
    assert agent.watch_once() == 1
    assert kernel.inventory()[0].bandwidth_mbps == 1000
    run_jobs(services)
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["bandwidth"] == "1 Gbps"
    assert agent.watch_once() == 0  # nothing more after its cursor
    # Reporting the same result again records nothing twice.
    again = api.post(
        f"/internal/edge/v1/locations/{A}/reports", headers=eh,
        json={"results": [{"opId": row["opId"], "ok": True}]},
    )  # fmt: skip
    assert again.status_code == 200 and again.json() == {"recorded": 0, "unknown": 0}
    saved = load_state(tmp_path / "edge-state.json", A)
    assert saved is not None and saved.connections[conn["id"]]["bandwidthMbps"] == 1000

    # Suspend and terminate go the same way; the tombstone removes it from the edge.
    api.post(f"{BASE}/{conn['id']}/suspend", headers=headers)
    run_jobs(services)
    agent.watch_once()
    run_jobs(services)
    assert kernel.inventory()[0].suspended
    api.post(f"{BASE}/{conn['id']}/terminate", headers=headers)
    run_jobs(services)
    agent.watch_once()
    run_jobs(services)
    assert kernel.inventory() == []
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] == "terminated"
    agent.close()


def test_a_failed_edge_operation_is_retried_as_an_attempt(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    creds = register(services, A)
    conn = order(api, headers)
    run_jobs(services)
    eh = edge_headers(api, creds)
    [row] = api.get(f"/internal/edge/v1/locations/{A}/desired", headers=eh).json()["connections"]
    failed = api.post(
        f"/internal/edge/v1/locations/{A}/reports", headers=eh,
        json={"results": [{"opId": row["opId"], "ok": False, "error": "no such uplink"}]},
    )  # fmt: skip
    assert failed.json() == {"recorded": 1, "unknown": 0}
    run_jobs(services)  # the failure counts; the retry hands the operation over again
    with services.db.read() as session:
        job = session.scalars(select(Job).where(Job.connection_id == conn["id"])).one()
        assert job.attempts == 1 and "no such uplink" in (job.last_error or "")
        op = session.get(EdgeOperation, row["opId"])
    # Counted once: the next hand-over has an id of its own (`job-<id>.<n>`).
    assert op is not None and op.status == edge.RETRIED


def test_an_unacknowledged_operation_is_handed_over_again_after_its_timeout(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    """An operation the agent has not acknowledged within IOD_EDGE_ACK_TIMEOUT_SECONDS is a
    failed attempt, and the next attempt hands it over again (a new id, a new window): every
    later attempt timed out at once before, and the job failed with nothing handed again."""
    creds = register(services, A)
    conn = order(api, headers)
    run_jobs(services)
    eh = edge_headers(api, creds)
    desired = f"/internal/edge/v1/locations/{A}/desired"
    [first] = api.get(desired, headers=eh).json()["connections"]
    clock.advance(timedelta(seconds=services.settings.edge_ack_timeout_seconds + 1))
    run_jobs(services)  # the timeout counts; the retry hands the operation over again
    eh = edge_headers(api, creds)  # the first token has expired meanwhile
    [again] = api.get(desired, headers=eh).json()["connections"]
    assert again["opId"] != first["opId"] and not again["acked"], again
    with services.db.read() as session:
        job = session.scalars(select(Job).where(Job.connection_id == conn["id"])).one()
    assert job.attempts == 1 and "not acknowledged" in (job.last_error or ""), job.last_error
    done = {"results": [{"opId": again["opId"], "ok": True}]}
    reports = f"/internal/edge/v1/locations/{A}/reports"
    assert api.post(reports, headers=eh, json=done).json() == {"recorded": 1, "unknown": 0}
    run_jobs(services)
    with services.db.read() as session:  # (the customer's token has expired too)
        made = session.get(Connection, conn["id"])
        assert made is not None and made.status == "active"


def test_a_change_the_agent_fails_for_good_is_withdrawn_from_its_desired_state(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """The database records the change as failed; the location's desired row must then say
    the bandwidth in force again, or an agent coming back would apply the failed change."""
    creds = register(services, A)
    conn = order(api, headers)
    run_jobs(services)
    eh = edge_headers(api, creds)
    desired = f"/internal/edge/v1/locations/{A}/desired"
    reports = f"/internal/edge/v1/locations/{A}/reports"
    [row] = api.get(desired, headers=eh).json()["connections"]
    api.post(reports, headers=eh, json={"results": [{"opId": row["opId"], "ok": True}]})
    run_jobs(services)
    put = api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "500 Mbps"},
                  headers=headers)  # fmt: skip
    assert put.status_code == 200, put.text
    change_id = put.json()["change"]["id"]
    run_jobs(services)
    change_url = f"{BASE}/{conn['id']}/bandwidth-changes/{change_id}"
    for _ in range(services.policy.max_attempts):  # the agent fails every hand-over
        [row] = api.get(desired, headers=eh).json()["connections"]
        assert row["bandwidthMbps"] == 500 and row["opId"], row
        failure = {"results": [{"opId": row["opId"], "ok": False, "error": "no such uplink"}]}
        assert api.post(reports, headers=eh, json=failure).json()["recorded"] == 1
        run_jobs(services)
        if api.get(change_url, headers=headers).json()["status"] == "failed":
            break
    assert api.get(change_url, headers=headers).json()["status"] == "failed"
    [row] = api.get(desired, headers=eh).json()["connections"]
    assert (row["state"], row["bandwidthMbps"]) == ("active", 100), row
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["bandwidth"] == "100 Mbps"


def test_a_replayed_failure_does_not_fail_the_operation_handed_over_again(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """An agent resends a report whose answer it lost (its unreported results are kept),
    e.g. a failure. The retry had handed the operation over again under the same id, so the
    old failure was recorded against the new hand-over, which the agent had not even seen
    (against `make run`: `{"recorded": 1}`, a second attempt burnt, and the agent's `ok`
    for it then ignored). Each hand-over after a failure has an id of its own."""
    creds = register(services, A)
    conn = order(api, headers)
    run_jobs(services)
    eh = edge_headers(api, creds)
    reports = f"/internal/edge/v1/locations/{A}/reports"
    [first] = api.get(f"/internal/edge/v1/locations/{A}/desired", headers=eh).json()["connections"]
    failure = {"results": [{"opId": first["opId"], "ok": False, "error": "no such uplink"}]}
    assert api.post(reports, headers=eh, json=failure).json() == {"recorded": 1, "unknown": 0}
    run_jobs(services)  # the failure counts; the retry hands the operation over again
    [again] = api.get(f"/internal/edge/v1/locations/{A}/desired", headers=eh).json()["connections"]
    assert again["seq"] > first["seq"] and not again["acked"]
    assert again["opId"] != first["opId"] and again["opId"].startswith(f"{first['opId']}.")

    replayed = api.post(reports, headers=eh, json=failure)  # the lost answer's report, again
    assert replayed.status_code == 200 and replayed.json()["recorded"] == 0
    # It fails a second time: the third hand-over has an id of its own too.
    second = {"results": [{"opId": again["opId"], "ok": False, "error": "still no uplink"}]}
    assert api.post(reports, headers=eh, json=second).json() == {"recorded": 1, "unknown": 0}
    run_jobs(services)
    [third] = api.get(f"/internal/edge/v1/locations/{A}/desired", headers=eh).json()["connections"]
    assert third["opId"] not in (first["opId"], again["opId"]) and not third["acked"]
    for old in (failure, second):
        assert api.post(reports, headers=eh, json=old).json()["recorded"] == 0
    done = {"results": [{"opId": third["opId"], "ok": True}]}
    assert api.post(reports, headers=eh, json=done).json() == {"recorded": 1, "unknown": 0}
    run_jobs(services)
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] == "active"
    with services.db.read() as session:
        job = session.scalars(select(Job).where(Job.connection_id == conn["id"])).one()
    assert (job.state, job.attempts) == ("done", 3)


def test_tenancy_an_agent_reads_and_reports_only_its_location(
    api: TestClient, headers: dict[str, str], services: Services, make_tenant: Any
) -> None:
    a, b = register(services, A), register(services, B)
    order(api, headers, A)
    order(api, headers, B)
    run_jobs(services)
    ha, hb = edge_headers(api, a), edge_headers(api, b)
    for path in ("desired", "changes"):
        assert api.get(f"/internal/edge/v1/locations/{B}/{path}", headers=ha).status_code == 404
        assert api.get(f"/internal/edge/v1/locations/NOPE1/{path}", headers=ha).status_code == 404
    [row_b] = api.get(f"/internal/edge/v1/locations/{B}/desired", headers=hb).json()["connections"]
    stolen = api.post(
        f"/internal/edge/v1/locations/{B}/reports", headers=ha,
        json={"results": [{"opId": row_b["opId"], "ok": True}]},
    )  # fmt: skip
    assert stolen.status_code == 404
    # B's operation named in A's own report is unknown there, and stays pending.
    mixed = api.post(
        f"/internal/edge/v1/locations/{A}/reports", headers=ha,
        json={"results": [{"opId": row_b["opId"], "ok": True}]},
    )  # fmt: skip
    assert mixed.json() == {"recorded": 0, "unknown": 1}
    with services.db.read() as session:
        op = session.get(EdgeOperation, row_b["opId"])
        assert op is not None and op.status == "pending"
    # A customer's token gets 403 here, an agent's token 403 on the customer API.
    assert api.get(f"/internal/edge/v1/locations/{A}/desired", headers=headers).status_code == 403
    assert api.get(BASE, headers=ha).status_code == 403


def test_changes_long_poll_cursor_and_strict_bodies(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    creds = register(services, A)
    eh = edge_headers(api, creds)
    url = f"/internal/edge/v1/locations/{A}"
    empty = api.get(f"{url}/changes", params={"after": 0, "wait": 0.2}, headers=eh).json()
    assert empty["changes"] == [] and empty["cursor"] == 0
    for _ in range(3):
        order(api, headers)
    run_jobs(services)
    first = api.get(f"{url}/changes", params={"after": 0, "limit": 2}, headers=eh).json()
    assert len(first["changes"]) == 2 and first["more"]
    rest = api.get(f"{url}/changes", params={"after": first["cursor"]}, headers=eh).json()
    assert len(rest["changes"]) == 1 and not rest["more"]
    bad = api.get(f"{url}/changes", params={"after": -1}, headers=eh)
    assert bad.status_code == 400
    unknown = api.post(f"{url}/reports", json={"results": [], "cursr": 1}, headers=eh)
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["pointer"] == "/cursr"
    twice = api.post(
        f"{url}/reports", content=b'{"cursor": 1, "cursor": 2}',
        headers=eh | {"Content-Type": "application/json"},
    )  # fmt: skip
    assert twice.status_code == 400


def test_long_polls_answer_at_once_while_the_server_stops(
    api: TestClient, headers: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server begins to stop (`iod.infra.draining`, set by the HTTP protocol's
    shutdown), an agent's long poll and a customer's `/events` long poll answer at once,
    empty, instead of holding the shutdown for their wait."""
    eh = edge_headers(api, register(services, A))
    begun = threading.Event()
    begun.set()
    monkeypatch.setattr(draining, "_begun", begun)  # this process is stopping (the test's)
    monkeypatch.setattr(events_service.hub_of(services.db), "draining", True)
    started = time.monotonic()
    changes = api.get(
        f"/internal/edge/v1/locations/{A}/changes", params={"after": 0, "wait": 60}, headers=eh
    )
    assert changes.status_code == 200 and changes.json()["changes"] == []
    feed = api.get(
        "/internet-on-demand/events", params={"after": "now", "wait": 60}, headers=headers
    )
    assert feed.status_code == 200 and feed.json()["events"] == []
    assert time.monotonic() - started < 15, "a long poll waited out its wait"


@pytest.mark.parametrize("seeded", [True])
def test_registering_an_agent_hands_it_the_connections_in_force(
    api: TestClient, headers: dict[str, str], services: Services, seeded: bool
) -> None:
    conn = order(api, headers)
    run_jobs(services)  # in process: no agent yet
    assert services.driver.inventory()[0].connection_id == conn["id"]  # type: ignore[attr-defined]
    creds = register(services, A)
    snap = api.get(
        f"/internal/edge/v1/locations/{A}/desired", headers=edge_headers(api, creds)
    ).json()
    assert [(r["connectionId"], r["acked"]) for r in snap["connections"]] == [(conn["id"], True)]
    assert snap["cursor"] == 1


INT32_MAX = 2**31 - 1
COUNTER_MAX = 2**62  # 2**63 - 1 would be shown as 2**63 in the OpenAPI's doubles


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"drift": 2**63}, "/drift"),
        ({"drift": INT32_MAX + 1}, "/drift"),  # an INTEGER column: PostgreSQL's int4
        ({"actualCount": 2**63}, "/actualCount"),
        ({"actualCount": INT32_MAX + 1}, "/actualCount"),
        ({"cursor": 2**63}, "/cursor"),
        ({"cursor": 2**62 + 1}, "/cursor"),  # as `GET …/changes?after=`
    ],
)
def test_report_integers_beyond_their_column_are_400(
    api: TestClient, headers: dict[str, str], services: Services, body: dict[str, int], pointer: str
) -> None:
    eh = edge_headers(api, register(services, A))
    answer = api.post(f"/internal/edge/v1/locations/{A}/reports", json=body, headers=eh)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["pointer"] for e in answer.json()["errors"]] == [pointer]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"version": "1.0\x00"}, "/version"),
        ({"hostname": "edge\x00one"}, "/hostname"),
        ({"hostname": "edge\u202eone"}, "/hostname"),
        ({"results": [{"opId": "op\x00", "ok": True}]}, "/results/0/opId"),
        ({"results": [{"opId": "op", "ok": False, "error": "no\x00"}]}, "/results/0/error"),
    ],
)
def test_report_text_with_control_characters_is_400(
    api: TestClient, headers: dict[str, str], services: Services, body: dict[str, object],
    pointer: str,
) -> None:  # fmt: skip
    """A NUL was stored on SQLite and a 500 on PostgreSQL: the API's rule for text."""
    eh = edge_headers(api, register(services, A))
    answer = api.post(f"/internal/edge/v1/locations/{A}/reports", json=body, headers=eh)
    assert answer.status_code == 400, answer.text
    assert [e["pointer"] for e in answer.json()["errors"]] == [pointer]
    reading = {"connectionId": "con_\x00", "bytesIn": 0, "bytesOut": 0}
    body = {"at": services.clock.now().isoformat(), "samples": [reading]}
    answer = api.post(f"/internal/edge/v1/locations/{A}/samples", json=body, headers=eh)
    assert answer.status_code == 400, answer.text
    assert [e["pointer"] for e in answer.json()["errors"]] == ["/samples/0/connectionId"]


def test_report_integers_at_their_bounds_are_stored(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    eh = edge_headers(api, register(services, A))
    body = {"drift": INT32_MAX, "actualCount": INT32_MAX, "cursor": 2**62}
    answer = api.post(f"/internal/edge/v1/locations/{A}/reports", json=body, headers=eh)
    assert answer.status_code == 200, answer.text
    with services.db.read() as session:
        mine = edge_repository.agent(session, A)
        assert mine is not None and (mine.drift, mine.actual_count) == (INT32_MAX, INT32_MAX)


@pytest.mark.parametrize("field", ["bytesIn", "bytesOut", "packetsIn", "packetsOut"])
def test_counters_beyond_their_bound_are_400(
    api: TestClient, headers: dict[str, str], services: Services, field: str
) -> None:
    eh = edge_headers(api, register(services, A))
    conn = order(api, headers)
    run_jobs(services)
    reading = {"connectionId": conn["id"], "bytesIn": 0, "bytesOut": 0, field: COUNTER_MAX + 1}
    body = {"at": services.clock.now().isoformat(), "samples": [reading]}
    answer = api.post(f"/internal/edge/v1/locations/{A}/samples", json=body, headers=eh)
    assert answer.status_code == 400, answer.text
    assert [e["pointer"] for e in answer.json()["errors"]] == [f"/samples/0/{field}"]


def test_counters_at_their_bound_are_stored(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """The largest counters, and the largest jumps between readings a millisecond apart (a
    rate, and a bucket's sum, beyond 64 bits), are stored and downsampled without an
    overflow."""
    from datetime import timedelta

    from iod.traffic import service as traffic

    eh = edge_headers(api, register(services, A))
    conn = order(api, headers)
    run_jobs(services)
    url = f"/internal/edge/v1/locations/{A}/samples"
    at = services.clock.now() - timedelta(hours=1)
    for step, value in enumerate([0, COUNTER_MAX, 0, COUNTER_MAX]):
        moment = at + timedelta(milliseconds=step)
        reading = {"connectionId": conn["id"], "bytesIn": value, "bytesOut": value,
                   "packetsIn": value, "packetsOut": value}  # fmt: skip
        body = {"at": moment.isoformat(), "samples": [reading]}
        answer = api.post(url, json=body, headers=eh)
        assert answer.status_code == 200, answer.text
    with services.db.write() as session:
        assert traffic.downsample(session, services.clock.now()) == 3


def test_the_openapi_shows_the_bounds(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    report = schemas["EdgeReport"]["properties"]
    for field, most in (("drift", INT32_MAX), ("actualCount", INT32_MAX), ("cursor", 2**62)):
        [number] = [s for s in report[field]["anyOf"] if s.get("type") == "integer"]  # or null
        assert (number["minimum"], number["maximum"]) == (0, most)
    reading = schemas["CounterReading"]["properties"]
    for field in ("bytesIn", "bytesOut", "packetsIn", "packetsOut"):
        assert (reading[field]["minimum"], reading[field]["maximum"]) == (0, COUNTER_MAX)
