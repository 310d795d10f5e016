"""The database goes away under the real ASGI app: 503 problem+json with Retry-After, nothing
stored, /readyz false, and recovery without a restart; the worker pauses and resumes.

The outage is made where a real one shows: every new connection to the database fails (the
DBAPI's own OperationalError) and the pooled ones are closed. The real thing, a PostgreSQL
restart under a served process, is tests/faults/test_database_restart.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc

from iod.app import Services, build_services, create_app
from iod.connections import service
from iod.infra import idempotency
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.locations import catalog
from iod.locations import service as locations
from iod.models import IdempotencyKey, Job
from iod.network.base import ConnectionSpec
from iod.network.simulated import SimulatedDriver
from tests.api.test_metrics import scrape
from tests.conftest import Tenant, counts, get_token, nothing_written, postgres_url, run_jobs

BASE = "/internet-on-demand/connections"
ORDER = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}


class Outage:
    """Between begin() and end() the database is unreachable."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine
        self.error: type[Exception] = (
            sqlite3.OperationalError if db.is_sqlite else psycopg.OperationalError
        )

    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise self.error("connection refused (simulated outage)")

    def begin(self) -> None:
        event.listen(self.engine, "do_connect", self._refuse)
        # The pooled connections die with the server, and so do the kept ones of the
        # prepared reads (the GET, the token endpoint's client lookup).
        self.db.dispose()

    def end(self) -> None:
        event.remove(self.engine, "do_connect", self._refuse)


@contextmanager
def outage(db: Database) -> Iterator[None]:
    """The database is unreachable inside the block and back after it."""
    down = Outage(db)
    down.begin()
    try:
        yield
    finally:
        down.end()


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2"
    assert response.json()["type"] == "/problems/service-unavailable"
    assert response.headers["x-request-id"]


def test_every_request_that_needs_the_database_is_503_then_recovers(
    api: TestClient, services: Services, tenant: Tenant, headers: dict[str, str]
) -> None:
    conn = api.post(BASE, json=ORDER, headers=headers).json()
    run_jobs(services)
    url = f"{BASE}/{conn['id']}"
    form = {"grant_type": "client_credentials"}
    credentials = (tenant.client_id, tenant.client_secret)
    # nothing_written counts before the outage and once it is over.
    with nothing_written(services), outage(services.db):
        assert_unavailable(api.post("/oauth2/token", data=form, auth=credentials))
        assert_unavailable(api.get(BASE, headers=headers))
        assert_unavailable(api.get(url, headers=headers))
        assert_unavailable(api.post(BASE, json=ORDER, headers=headers))
        keyed = {**headers, "Idempotency-Key": "during-outage"}
        assert_unavailable(api.post(BASE, json=ORDER, headers=keyed))
        assert_unavailable(api.put(f"{url}/bandwidth", json={"bandwidth": "1 Gbps"},
                                   headers=headers))  # fmt: skip
        assert_unavailable(api.post(f"{url}/suspend", headers=headers))
        assert_unavailable(api.get("/readyz"))
        assert api.get("/healthz").status_code == 200  # alive, not ready
        scraped = scrape(api)
        assert scraped.status_code == 200
        assert "iod_database_up 0.0" in scraped.text
        assert "iod_jobs{" not in scraped.text
    # Back, in the same process: no restart.
    assert api.get("/readyz").status_code == 200
    assert api.post("/oauth2/token", data=form, auth=credentials).status_code == 200
    assert api.get(url, headers=headers).status_code == 200
    created = api.post(BASE, json=ORDER, headers={**headers, "Idempotency-Key": "during-outage"})
    assert created.status_code == 201, "the key of a request refused with 503 is free"
    assert "iod_database_up 1.0" in scrape(api).text


def _services_on(db: Database, tmp_path: Path) -> tuple[Services, Tenant]:
    from iod.customers import service as customers

    settings = Settings(data_dir=tmp_path, simulated_provision_seconds=0, job_backoff_seconds=0,
                        client_cache_seconds=0, token_ttl=86400)  # fmt: skip
    clock = FrozenClock()
    services = build_services(settings, db=db, clock=clock, driver=SimulatedDriver())
    with db.write() as session:
        locations.upsert(session, clock, locations.parse_catalog(catalog.DEMO_LOCATIONS))
        customer = customers.create_customer(session, clock, "Acme")
        client = customers.create_client(
            session, clock, customer.id, "read write", hasher=services.secret_hasher
        )
    return services, Tenant(customer.id, client.client_id, client.client_secret)


def test_sqlite_locked_beyond_the_busy_timeout_is_503(
    sqlite_database: Database, tmp_path: Path
) -> None:
    url = str(sqlite_database.engine.url)
    db = Database(make_engine(url, busy_timeout=0.2))
    services, tenant = _services_on(db, tmp_path)
    with TestClient(create_app(services), raise_server_exceptions=False) as api:
        headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with nothing_written(services):
                assert_unavailable(api.post(BASE, json=ORDER, headers=headers))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert api.post(BASE, json=ORDER, headers=headers).status_code == 201
    db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_pooled_connection_within_the_pool_timeout_is_503(
    backend: str, sqlite_database: Database, tmp_path: Path
) -> None:
    if backend == "postgres":
        from tests.conftest import _prepare_postgres

        postgres_url()
        _prepare_postgres().dispose()
        url = postgres_url()
    else:
        url = str(sqlite_database.engine.url)
    db = Database(make_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    services, tenant = _services_on(db, tmp_path)
    with TestClient(create_app(services), raise_server_exceptions=False) as api:
        # Minted, not fetched: the token endpoint's client lookup is a hot read too, and
        # would keep the app's reader connection (see below).
        token = services.tokens.issue(tenant.client_id, tenant.customer_id, ["read", "write"])
        headers = {"Authorization": f"Bearer {token}"}
        stored = 0
        with db.engine.connect():  # the only pooled connection is busy
            if db._loop_engine is not None:
                # SQLite: the fast create writes on the event loop, on a connection of the
                # loops' own pool (`_OwnPoolEngine`), which threads never hold: the shared
                # pool's exhaustion does not reach it. With that one busy too (only a test
                # holds it), it is 503 as well.
                assert api.post(BASE, json=ORDER, headers=headers).status_code == 201
                stored = 1
                with db._loop_engine.pool.connect():
                    assert_unavailable(api.post(BASE, json=ORDER, headers=headers))
            else:
                assert_unavailable(api.post(BASE, json=ORDER, headers=headers))
            # The hot reads keep connections from a pool of their own (db._Readers), the
            # same size; the app's has not read yet, so holding its one connection here
            # exhausts that pool too.
            with db._readers.pool.connect():
                assert_unavailable(api.get(BASE, headers=headers))
        listed = api.get(BASE, headers=headers).json()["connections"]
        assert len(listed) == stored, "nothing stored by the refused ones"
        assert api.post(BASE, json=ORDER, headers=headers).status_code == 201
    db.dispose()


def test_a_claim_whose_request_died_is_taken_over_at_once(
    api: TestClient, services: Services, tenant: Tenant, headers: dict[str, str]
) -> None:
    """A claim is never committed without its answer now: a crash rolls it back with the
    work. The earlier version committed the claim first, so a `running` row can be left from
    a request it was serving when it died: the retry takes it over at once instead of
    answering 409, and the work happens once."""
    first = api.post(BASE, json=ORDER, headers={**headers, "Idempotency-Key": "model"})
    with services.db.read() as session:
        fp = session.get(IdempotencyKey, (tenant.customer_id, "model")).fingerprint  # type: ignore[union-attr]
    now = services.clock.now()
    with services.db.write() as session:  # what the earlier version left behind
        session.add(
            IdempotencyKey(
                customer_id=tenant.customer_id, key="crashed", fingerprint=fp, state="running",
                body="dead", created_at=now, expires_at=now + idempotency.KEEP,
            )
        )  # fmt: skip
    retry = api.post(BASE, json=ORDER, headers={**headers, "Idempotency-Key": "crashed"})
    assert retry.status_code == 201
    assert retry.json()["id"] != first.json()["id"]
    again = api.post(BASE, json=ORDER, headers={**headers, "Idempotency-Key": "crashed"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == retry.json()["id"]
    assert counts(services)[0] == 2


def test_a_failed_work_transaction_leaves_no_claim(
    api: TestClient, services: Services, tenant: Tenant, headers: dict[str, str]
) -> None:
    """The claim is in the work's transaction: work that fails with an error that is not a
    refusal (here a lost database connection mid-work, a 503) leaves no row, so the retry acts."""

    def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise sa_exc.OperationalError("INSERT …", {}, Exception("server closed the connection"))

    keyed = {**headers, "Idempotency-Key": "mid-work"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "create_connection", failing)
        assert api.post(BASE, json=ORDER, headers=keyed).status_code == 503
    with services.db.read() as session:
        assert session.get(IdempotencyKey, (tenant.customer_id, "mid-work")) is None
    assert api.post(BASE, json=ORDER, headers=keyed).status_code == 201
    assert api.post(BASE, json=ORDER, headers=keyed).headers["idempotent-replayed"] == "true"


class _OutageAfterCarryingOut(SimulatedDriver):
    """The database goes away right after the network carried out a provisioning."""

    def __init__(self, outage: Outage) -> None:
        super().__init__()
        self.outage = outage
        self.calls = 0

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        self.calls += 1
        super().provision(spec, op_id)
        if self.calls == 1:
            self.outage.begin()


def test_the_worker_pauses_during_an_outage_and_resumes_without_loss_or_repeat(
    api: TestClient, services: Services, headers: dict[str, str]
) -> None:
    down = Outage(services.db)
    services.driver = driver = _OutageAfterCarryingOut(down)
    conn = api.post(BASE, json=ORDER, headers=headers).json()
    worker = services.worker()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    with structlog.testing.capture_logs() as logs:
        thread.start()
        try:
            # Carried out, but the result cannot be recorded: the worker holds it and waits.
            _wait(lambda: len(worker._held) == 1)
            _wait(lambda: any(e["event"] == "worker.database_unavailable" for e in logs))
            time.sleep(1.0)  # a few retries while it is down
            assert thread.is_alive()
        finally:
            down.end()
        _wait(lambda: api.get(f"{BASE}/{conn['id']}", headers=headers).json()["status"]
              == "active")  # fmt: skip
        stop.set()
        worker.wakeup.set()
        thread.join(10)
    events = [e["event"] for e in logs]
    assert events.count("worker.database_unavailable") == 1, "logged once, not per retry"
    assert events.count("worker.database_back") == 1
    assert "worker.loop_error" not in events
    assert driver.calls == 1, "the network was not asked twice"
    assert [op.op_id for op in driver.operations] == [f"job-{_job_ids(services)[0]}"]
    with services.db.read() as session:
        job = session.scalars(select(Job)).one()
    assert (job.state, job.attempts) == ("done", 1)


def _job_ids(services: Services) -> list[int]:
    with services.db.read() as session:
        return list(session.scalars(select(Job.id).order_by(Job.id)))


def _wait(predicate: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
