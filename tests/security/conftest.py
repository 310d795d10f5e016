"""The security suite's world: two customers (Acme, the victim, and Mallory, the attacker),
tokens, a snapshot of every stored row, and apps with rate limits on a clock the test moves.

The suite stands on its own: it uses only the shared database fixtures of tests/conftest.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services, build_services, create_app
from iod.customers import service as customers
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Base, Database
from iod.infra.ids import new_id
from iod.models import Client
from iod.network.simulated import SimulatedDriver
from tests.conftest import Tenant, run_jobs

BASE = "/internet-on-demand/connections"
TOKEN = "/oauth2/token"
LOC = "PL0001247634"
GRANT = {"grant_type": "client_credentials"}
SECRET = "correct-horse-battery-staple-" + "s" * 16


@functools.cache
def cheap_hash() -> str:
    """A real argon2id hash of SECRET with the cheapest parameters (verifying reads them from
    the hash): the production parameters are slow on purpose."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(SECRET)


def add_client(
    services: Services,
    scopes: str = "read write",
    name: str = "Acme",
    customer_id: str | None = None,
) -> Tenant:
    """A client whose secret is SECRET, of a new customer or of `customer_id`."""
    with services.db.write() as session:
        if customer_id is None:
            customer_id = customers.create_customer(session, services.clock, name).id
        client_id = new_id("cli")
        session.add(
            Client(
                id=client_id, customer_id=customer_id, name="", secret_hash=cheap_hash(),
                scopes=scopes, enabled=True, created_at=services.clock.now(),
            )
        )  # fmt: skip
    return Tenant(customer_id, client_id, SECRET)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint(services: Services, tenant: Tenant, scopes: str = "read write") -> dict[str, str]:
    """Authorization headers with a token as the token endpoint would issue it."""
    return bearer(services.tokens.issue(tenant.client_id, tenant.customer_id, scopes.split()))


def snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: equal before and after proves a request changed nothing."""
    with services.db.read() as session:
        return {
            table.name: sorted(
                (tuple(row) for row in session.execute(select(table)).all()), key=repr
            )
            for table in Base.metadata.sorted_tables
        }


def assert_problem(response: Any, status: int, type_name: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if type_name is not None:
        assert body["type"] == f"/problems/{type_name}", body
    return body


@dataclass
class World:
    """Acme has an active connection with a scheduled change; Mallory has her own."""

    api: TestClient
    services: Services
    acme: Tenant
    mallory: Tenant
    acme_headers: dict[str, str]
    mallory_headers: dict[str, str]
    connection_id: str
    change_id: str
    mallory_connection_id: str
    mallory_change_id: str


def _connection_with_change(
    api: TestClient, services: Services, headers: dict[str, str], bandwidth: str
) -> tuple[str, str]:
    created = api.post(BASE, json={"bandwidth": bandwidth, "locationId": LOC}, headers=headers)
    assert created.status_code == 201, created.text
    connection_id = str(created.json()["id"])
    run_jobs(services)
    later = services.clock.now() + timedelta(days=30)
    changed = api.put(
        f"{BASE}/{connection_id}/bandwidth",
        json={"bandwidth": "1 Gbps", "effectiveDate": later.isoformat()},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    return connection_id, str(changed.json()["change"]["id"])


@pytest.fixture
def world(api: TestClient, services: Services) -> World:
    acme, mallory = add_client(services, name="Acme"), add_client(services, name="Mallory")
    acme_headers, mallory_headers = mint(services, acme), mint(services, mallory)
    connection_id, change_id = _connection_with_change(api, services, acme_headers, "100 Mbps")
    theirs, their_change = _connection_with_change(api, services, mallory_headers, "50 Mbps")
    return World(
        api, services, acme, mallory, acme_headers, mallory_headers,
        connection_id, change_id, theirs, their_change,
    )  # fmt: skip


class Ticker:
    """The rate limiters' monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Limited:
    api: TestClient
    services: Services
    ticker: Ticker

    def client_from(self, address: str) -> TestClient:
        """The same app as seen from another source address. Not entered (the app is running
        already): each request runs in a thread of its own, as a served process's requests
        all run on one. An entered client would keep a thread, and its kept read connection
        (`db._Readers`), per address: a pool's worth of addresses would exhaust it."""
        client = TestClient(self.api.app, raise_server_exceptions=False, client=(address, 4242))
        self._others.append(client)
        return client

    def __post_init__(self) -> None:
        self._others: list[TestClient] = []

    def close(self) -> None:
        for client in self._others:
            client.close()


@pytest.fixture
def limited(
    services: Services, database: Database, clock: FrozenClock, driver: SimulatedDriver
) -> Iterator[Any]:
    """make(**settings) -> Limited: an app on the same database with these settings (rate
    limits on, by default at their production values) and a Ticker for its limiters."""
    stack = ExitStack()

    def make(**overrides: Any) -> Limited:
        defaults = {
            name: Settings.model_fields[name].default
            for name in ("rate_limit_reads_per_second", "rate_limit_writes_per_second")
        }
        settings = services.settings.model_copy(update={**defaults, **overrides})
        ticker = Ticker()
        limited_services = build_services(
            settings, db=database, clock=clock, driver=driver, ticker=ticker
        )
        api = stack.enter_context(
            TestClient(create_app(limited_services), raise_server_exceptions=False)
        )
        made = Limited(api, limited_services, ticker)
        stack.callback(made.close)
        return made

    yield make
    stack.close()
