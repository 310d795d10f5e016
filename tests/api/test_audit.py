"""The audit log: every accepted change of state leaves one record, written in the change's
transaction; refusals and replays leave none. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.audit import service as audit
from iod.infra.clock import FrozenClock, rfc3339
from iod.models import AuditEvent
from tests.conftest import Tenant, audit_count, get_token, nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def events(services: Services, **filters: Any) -> list[AuditEvent]:
    with services.db.read() as session:
        return list(audit.query(session, **filters))


def test_every_accepted_change_is_recorded_with_who_what_when_where(
    api: TestClient, tenant: Tenant, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    rid = {"X-Request-Id": "req-create-1"}
    created = api.post(
        BASE,
        json={"bandwidth": "100 Mbps", "locationId": LOC, "description": "Denver"},
        headers={**headers, **rid},
    )
    assert created.status_code == 201
    conn = created.json()["id"]
    run_jobs(services)
    later = rfc3339(clock.now() + timedelta(days=1))
    boost = api.put(
        f"{BASE}/{conn}/bandwidth",
        json={"bandwidth": "1 Gbps", "effectiveDate": later,
              "revertAt": rfc3339(clock.now() + timedelta(days=2))},
        headers=headers,
    )  # fmt: skip
    assert boost.status_code == 200
    change = boost.json()["change"]["id"]
    assert api.post(f"{BASE}/{conn}/bandwidth-changes/{change}/cancel", headers=headers).is_success
    answered = []
    for action in ("suspend", "resume", "terminate"):
        response = api.post(f"{BASE}/{conn}/{action}", headers=headers)
        assert response.status_code == 202
        answered.append(response.headers["X-Request-Id"])

    recorded = list(reversed(events(services)))
    assert [e.action for e in recorded] == [
        "connection.create",
        "bandwidth.change",
        "bandwidth.cancel",
        "connection.suspend",
        "connection.resume",
        "connection.terminate",
    ]
    for event in recorded:
        assert (event.actor_type, event.actor_id) == ("client", tenant.client_id)
        assert event.source == "testclient"  # the peer address Starlette's TestClient reports
        assert event.request_id
        assert (event.target_type, event.target_id) == ("connection", conn)
        assert event.customer_id == tenant.customer_id
        assert event.at == clock.now()
    first = recorded[0]
    # Our own id, the one answered in X-Request-Id; the client's is only logged beside it.
    assert first.request_id == created.headers["X-Request-Id"] != "req-create-1"
    assert [e.request_id for e in recorded[3:]] == answered
    assert first.details == {"bandwidth": "100 Mbps", "locationId": LOC, "description": "Denver"}
    assert recorded[1].details["changeId"] == change
    assert recorded[1].details["effectiveDate"] == later
    assert recorded[1].details["revertChangeId"] == boost.json()["revertChange"]["id"]
    assert recorded[2].details == {"changeId": change, "bandwidth": "1 Gbps"}
    assert recorded[3].details == {"status": "active", "targetStatus": "suspended"}
    # Without X-Request-Id the record carries the id the server generated and answered with.
    terminate_id = api.get(f"{BASE}/{conn}", headers=headers)  # any request: ids are fresh
    assert terminate_id.headers["X-Request-Id"] != recorded[-1].request_id
    response = api.put(f"{BASE}/{conn}/bandwidth", json={"bandwidth": "200 Mbps"}, headers=headers)
    assert response.status_code == 409  # terminated: refused, so not recorded
    assert len(events(services)) == 6


def test_refusals_record_nothing(
    api: TestClient, headers: dict[str, str], services: Services, make_tenant
) -> None:
    conn = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    conn_id = conn.json()["id"]
    run_jobs(services)
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    reader = {"Authorization": f"Bearer {get_token(api, make_tenant(scopes='read'))}"}
    refusals = [
        ("post", BASE, {"bandwidth": "fast", "locationId": LOC}, headers, 400),
        ("post", BASE, {"bandwidth": "100 Mbps", "locationId": "nowhere"}, headers, 400),
        ("post", BASE, {"bandwidth": "10 Gbps", "locationId": LOC}, headers, 409),
        ("post", BASE, {"bandwidth": "100 Mbps", "locationId": LOC}, reader, 403),
        ("post", BASE, {"bandwidth": "100 Mbps", "locationId": LOC}, {}, 401),
        ("put", f"{BASE}/{conn_id}/bandwidth", {"bandwidth": "7 Mbps"}, headers, 400),
        ("put", f"{BASE}/{conn_id}/bandwidth", {"bandwidth": "1 Gbps"}, other, 404),
        ("put", f"{BASE}/{conn_id}/bandwidth",
         {"bandwidth": "1 Gbps", "effectiveDate": "2030-01-01T00:00:00"}, headers, 400),
        ("post", f"{BASE}/{conn_id}/resume", None, headers, 409),
        ("post", f"{BASE}/{conn_id}/suspend", None, other, 404),
        ("post", f"{BASE}/{conn_id}/bandwidth-changes/chg_0000000000000000000000000000/cancel",
         None, headers, 404),
    ]  # fmt: skip
    before = audit_count(services)
    for method, url, body, h, status in refusals:
        with nothing_written(services):
            response = api.request(method.upper(), url, json=body, headers=h)
        assert response.status_code == status, (url, body, response.text)
    assert audit_count(services) == before


def test_an_idempotent_replay_is_not_recorded_twice(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    h = {**headers, "Idempotency-Key": "order-1"}
    body = {"bandwidth": "100 Mbps", "locationId": LOC}
    first = api.post(BASE, json=body, headers=h)
    again = api.post(BASE, json=body, headers=h)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]
    assert [e.action for e in events(services)] == ["connection.create"]


def test_a_failure_after_the_change_rolls_the_record_back(
    api: TestClient, headers: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is part of the change's transaction: if the commit does not happen, neither
    the connection nor its record exist."""
    from iod.connections import service

    real = service.present_new  # what create answers with, after the audit record

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom after the audit record was added")

    monkeypatch.setattr(service, "present_new", broken)
    with nothing_written(services):
        response = api.post(
            BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers
        )
    assert response.status_code == 500
    monkeypatch.setattr(service, "present_new", real)
    assert events(services) == []


def test_query_filters(
    api: TestClient, services: Services, make_tenant, clock: FrozenClock
) -> None:
    acme, globex = make_tenant(name="Acme"), make_tenant(name="Globex")
    ids = {}
    for tenant in (acme, globex, acme):
        h = {"Authorization": f"Bearer {get_token(api, tenant)}"}
        created = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=h)
        ids.setdefault(tenant.customer_id, []).append(created.json()["id"])
        clock.advance(timedelta(hours=1))
    assert len(events(services)) == 3
    assert len(events(services, customer_id=acme.customer_id)) == 2
    assert [e.target_id for e in events(services, target_id=ids[globex.customer_id][0])] == [
        ids[globex.customer_id][0]
    ]
    assert len(events(services, since=clock.now() - timedelta(minutes=90))) == 1
    newest = events(services, limit=1)
    assert len(newest) == 1 and newest[0].target_id == ids[acme.customer_id][1]
    as_json = audit.to_dict(newest[0])
    assert as_json["actor"] == acme.client_id and as_json["at"].endswith("Z")
