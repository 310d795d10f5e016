"""Idempotency-Key on writes: a retry replays the first answer and never acts twice."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import Services
from iod.models import Connection
from tests.conftest import get_token

BASE = "/internet-on-demand/connections"
ORDER = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}


def count(services: Services) -> int:
    with services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Connection)) or 0)


def test_a_retry_replays_the_first_response(api: TestClient, headers, services: Services) -> None:
    keyed = {**headers, "Idempotency-Key": "order-1"}
    first = api.post(BASE, json=ORDER, headers=keyed)
    again = api.post(BASE, json={**ORDER, "bandwidth": "100mbps"}, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert count(services) == 1


def test_the_same_key_for_another_request_is_422(api: TestClient, headers, services) -> None:
    keyed = {**headers, "Idempotency-Key": "order-2"}
    assert api.post(BASE, json=ORDER, headers=keyed).status_code == 201
    other = api.post(BASE, json={**ORDER, "bandwidth": "1 Gbps"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert count(services) == 1


def test_a_refusal_is_replayed_too(api: TestClient, headers, services: Services) -> None:
    keyed = {**headers, "Idempotency-Key": "bad-tier"}
    body = {**ORDER, "bandwidth": "2 Mbps"}
    first = api.post(BASE, json=body, headers=keyed)
    again = api.post(BASE, json=body, headers=keyed)
    assert first.status_code == again.status_code == 400
    assert again.json()["errors"] == first.json()["errors"]
    assert count(services) == 0


def test_keys_belong_to_a_customer(api: TestClient, headers, make_tenant, services) -> None:
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    for who in (headers, other):
        response = api.post(BASE, json=ORDER, headers={**who, "Idempotency-Key": "shared"})
        assert response.status_code == 201
    assert count(services) == 2


def test_actions_and_changes_are_idempotent(api: TestClient, headers, services) -> None:
    conn = api.post(BASE, json=ORDER, headers=headers).json()
    url = f"{BASE}/{conn['id']}"
    keyed = {**headers, "Idempotency-Key": "change-1"}
    first = api.put(f"{url}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=keyed)
    again = api.put(f"{url}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=keyed)
    assert again.json()["change"]["id"] == first.json()["change"]["id"]
    changes = api.get(f"{url}/bandwidth-changes", headers=headers).json()["bandwidthChanges"]
    assert len(changes) == 1
    keyed = {**headers, "Idempotency-Key": "terminate-1"}
    assert api.post(f"{url}/terminate", headers=keyed).status_code == 202
    assert api.post(f"{url}/terminate", headers=keyed).status_code == 202  # replayed, not 409


def test_a_malformed_key_is_400(api: TestClient, headers) -> None:
    response = api.post(BASE, json=ORDER, headers={**headers, "Idempotency-Key": "x" * 300})
    assert response.status_code == 400


def test_two_keys_are_400_and_act_on_nothing(api: TestClient, headers, services) -> None:
    """Two Idempotency-Key headers (not one comma-joined value, also a 400: a key has no
    comma): which would the client mean? Neither is acted on."""
    conn = api.post(BASE, json=ORDER, headers=headers).json()
    two = [*headers.items(), ("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")]
    for response in (
        api.post(BASE, json=ORDER, headers=two),
        api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=two),
        api.post(f"{BASE}/{conn['id']}/suspend", headers=two),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["pointer"] == "/header/Idempotency-Key"
    assert count(services) == 1
    assert api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"] != "suspended"
    changes = api.get(f"{BASE}/{conn['id']}/bandwidth-changes", headers=headers).json()
    assert changes["bandwidthChanges"] == []


def test_concurrent_retries_create_exactly_one_each(
    api: TestClient, headers, services: Services
) -> None:
    """200 concurrent POSTs with 50 distinct keys create exactly 50 connections, and every
    repeat gets the first one's answer: it waits for the transaction that holds the key."""

    def post(n: int) -> int:
        keyed = {**headers, "Idempotency-Key": f"burst-{n % 50}"}
        return api.post(BASE, json=ORDER, headers=keyed).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(post, range(200)))
    assert set(statuses) == {201}, statuses
    assert count(services) == 50
