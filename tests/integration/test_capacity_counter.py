"""The maintained capacity figures (`iod.connections.capacity`) always equal the reference sum
(`repository.committed_at_location`), whatever sequence of operations ran; and concurrent
orders never over-commit a location."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from iod.app import Services
from iod.connections import capacity, repository
from iod.infra.clock import FrozenClock
from iod.models import Connection, Location
from iod.network.simulated import SimulatedDriver
from tests.conftest import get_token, run_jobs

BASE = "/internet-on-demand/connections"
SMALL = "PL0002290011"  # a 1 Gbps port: orders and boosts run into it
TIERS = ["10 Mbps", "50 Mbps", "100 Mbps", "200 Mbps", "300 Mbps", "500 Mbps"]


def rfc3339(clock: FrozenClock, minutes: int) -> str:
    return (clock.now() + timedelta(minutes=minutes)).isoformat()


def assert_figures_agree(services: Services, *, within_capacity: bool = True) -> None:
    with services.db.write() as session:
        assert capacity.check(session) == []
        location = session.get(Location, SMALL)
        assert location is not None
        assert location.committed_mbps == repository.committed_at_location(session, SMALL)
        assert location.committed_mbps <= location.capacity_mbps or not within_capacity


class Scenario:
    """Random operations through the API and the worker, as customers and the network
    would produce them."""

    def __init__(self, api: TestClient, services: Services, headers: dict[str, str]) -> None:
        self.api, self.services, self.headers = api, services, headers
        self.clock: FrozenClock = services.clock  # type: ignore[assignment]
        self.driver: SimulatedDriver = services.driver  # type: ignore[assignment]
        self.ids: list[str] = []
        self.changes: list[tuple[str, str]] = []

    def create(self, rng: random.Random) -> None:
        body = {"bandwidth": rng.choice(TIERS), "locationId": SMALL}
        response = self.api.post(BASE, json=body, headers=self.headers)
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            self.ids.append(response.json()["id"])
        else:
            assert response.json()["type"] == "/problems/capacity-exceeded"

    def change(self, rng: random.Random) -> None:
        if not self.ids:
            return
        body: dict[str, str] = {"bandwidth": rng.choice(TIERS)}
        when = rng.choice(["now", "later", "boost"])
        if when != "now":
            body["effectiveDate"] = rfc3339(self.clock, rng.randint(1, 30))
        if when == "boost":
            body["revertAt"] = rfc3339(self.clock, rng.randint(31, 60))
        connection_id = rng.choice(self.ids)
        url = f"{BASE}/{connection_id}/bandwidth"
        response = self.api.put(url, json=body, headers=self.headers)
        assert response.status_code in (200, 409), response.text
        if response.status_code == 200 and "change" in response.json():  # else a no-op
            self.changes.append((connection_id, response.json()["change"]["id"]))

    def cancel(self, rng: random.Random) -> None:
        if self.changes:
            connection_id, change_id = rng.choice(self.changes)
            url = f"{BASE}/{connection_id}/bandwidth-changes/{change_id}/cancel"
            response = self.api.post(url, headers=self.headers)
            assert response.status_code in (200, 409), response.text

    def action(self, rng: random.Random) -> None:
        if self.ids:
            name = rng.choice(["suspend", "resume", "terminate"])
            response = self.api.post(f"{BASE}/{rng.choice(self.ids)}/{name}", headers=self.headers)
            assert response.status_code in (202, 409), response.text

    def work(self, rng: random.Random) -> None:
        """Time passes and the worker runs; sometimes the network refuses everything."""
        self.clock.advance(timedelta(minutes=rng.choice([0, 5, 20, 40])))
        self.driver.failure_rate = 1.0 if rng.random() < 0.2 else 0.0
        try:
            run_jobs(self.services)
        finally:
            self.driver.failure_rate = 0.0


@pytest.mark.parametrize("seed", range(3))
def test_random_operations_keep_the_figures_exact(
    api: TestClient, services: Services, tenant, seed: int
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    scenario = Scenario(api, services, {"Authorization": f"Bearer {get_token(api, tenant)}"})
    steps = [scenario.create] * 3 + [scenario.change] * 4 + [scenario.cancel, scenario.action]
    steps += [scenario.work] * 2
    for _ in range(60):
        rng.choice(steps)(rng)
        assert_figures_agree(services)
    scenario.clock.advance(timedelta(hours=2))
    run_jobs(services)
    assert_figures_agree(services)


def test_check_finds_and_repairs_a_wrong_figure(  # type: ignore[no-untyped-def]
    api: TestClient, services: Services, headers
) -> None:
    created = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": SMALL}, headers=headers)
    assert created.status_code == 201
    with services.db.write() as session:
        session.execute(update(Location).values(committed_mbps=7))
        session.execute(update(Connection).values(committed_mbps=3))
    with services.db.write() as session:
        found = capacity.check(session, repair=True)
    assert {(m.kind, m.id, m.stored, m.expected) for m in found} >= {
        ("connection", created.json()["id"], 3, 100),
        ("location", SMALL, 7, 100),
    }
    assert_figures_agree(services)


def test_a_change_at_a_location_over_its_capacity_is_refused_as_before(
    api: TestClient, services: Services, headers
) -> None:  # type: ignore[no-untyped-def]
    """An operator lowered the port below what is committed: even a change that does not
    raise the connection's figure is refused, as the summing check did."""
    created = api.post(BASE, json={"bandwidth": "500 Mbps", "locationId": SMALL}, headers=headers)
    with services.db.write() as session:
        session.execute(update(Location).where(Location.id == SMALL).values(capacity_mbps=300))
    url = f"{BASE}/{created.json()['id']}/bandwidth"
    response = api.put(url, json={"bandwidth": "200 Mbps"}, headers=headers)
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/capacity-exceeded"
    assert (
        "300 Mbps of capacity and 300 Mbps uncommitted; 500 Mbps does not fit"
        in (response.json()["detail"])
    )
    assert_figures_agree(services, within_capacity=False)


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # SQLite: one writer at a time
def test_concurrent_orders_never_over_commit_on_postgres(  # type: ignore[no-untyped-def]
    api: TestClient, services: Services, tenant
) -> None:
    """Many orders and boosts at once at a nearly full port, on PostgreSQL (real row locks
    and concurrent transactions): the committed total never passes the capacity, and the
    maintained figures still equal the recomputed ones."""
    assert not services.db.is_sqlite
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    base = [
        api.post(BASE, json={"bandwidth": "300 Mbps", "locationId": SMALL}, headers=headers)
        for _ in range(3)
    ]
    assert [r.status_code for r in base] == [201, 201, 201]  # 900 of 1000 Mbps committed

    def order(n: int) -> int:
        if n % 4 == 0:  # a boost of one of the three, racing the orders
            url = f"{BASE}/{base[n % 3].json()['id']}/bandwidth"
            return api.put(url, json={"bandwidth": "500 Mbps"}, headers=headers).status_code
        body = {"bandwidth": "20 Mbps" if n % 2 else "50 Mbps", "locationId": SMALL}
        return api.post(BASE, json=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(order, range(48)))
    assert set(statuses) <= {200, 201, 409} and 409 in statuses
    with services.db.write() as session:
        committed = session.scalar(select(Location.committed_mbps).where(Location.id == SMALL))
        assert committed is not None and committed <= 1000
    assert_figures_agree(services)


def test_migration_backfills_the_figures(services: Services, api: TestClient, headers) -> None:  # type: ignore[no-untyped-def]
    """Revision 0006 computes the figures from the rows that exist when it runs."""
    from alembic import command

    from iod.infra import migrate

    created = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": SMALL}, headers=headers)
    url = f"{BASE}/{created.json()['id']}/bandwidth"
    later = (services.clock.now() + timedelta(days=1)).isoformat()
    assert api.put(url, json={"bandwidth": "500 Mbps", "effectiveDate": later}, headers=headers)
    engine = services.db.engine
    config = migrate.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "20261126_0005")
    migrate.upgrade(engine)
    with services.db.read() as session:
        assert session.scalar(select(Location.committed_mbps).where(Location.id == SMALL)) == 500
    assert_figures_agree(services)


def test_a_batch_of_applied_changes_keeps_the_figures_from_one_read(  # type: ignore[no-untyped-def]
    api: TestClient, services: Services, headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker records a batch of applied changes with the pending changes read once for
    the batch (`tasks._apply_preload`), not per job: the figures still agree, for a
    connection whose boost's revert stays pending and one with a change scheduled later."""
    ids = []
    for _ in range(3):
        made = api.post(BASE, json={"bandwidth": "10 Mbps", "locationId": SMALL}, headers=headers)
        assert made.status_code == 201
        ids.append(made.json()["id"])
    run_jobs(services)  # provisioned
    clock = services.clock
    assert isinstance(clock, FrozenClock)
    bodies = [
        {"bandwidth": "200 Mbps"},
        {"bandwidth": "300 Mbps", "revertAt": rfc3339(clock, 60)},  # the revert stays pending
        {"bandwidth": "50 Mbps"},
    ]
    for connection_id, body in zip(ids, bodies, strict=True):
        put = api.put(f"{BASE}/{connection_id}/bandwidth", json=body, headers=headers)
        assert put.status_code == 200, put.text
    later = {"bandwidth": "500 Mbps", "effectiveDate": rfc3339(clock, 30)}
    assert api.put(f"{BASE}/{ids[2]}/bandwidth", json=later, headers=headers).status_code == 200

    def no_query_per_job(*args: object) -> None:
        raise AssertionError("the batch's pending changes are read once, in its preload")

    with monkeypatch.context() as patched:
        patched.setattr(repository, "pending_mbps", no_query_per_job)
        assert services.worker().run_once() == 3  # the three changes due now, one batch
    assert_figures_agree(services)
    with services.db.read() as session:
        committed = dict(
            session.execute(
                select(Connection.id, Connection.committed_mbps).where(Connection.id.in_(ids))
            ).all()
        )
    assert committed == {ids[0]: 200, ids[1]: 300, ids[2]: 500}
    clock.advance(timedelta(hours=2))
    run_jobs(services)  # the revert and the later change
    assert_figures_agree(services)
