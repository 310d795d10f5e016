"""No blocking pool wait on the event loop: with every connection of the shared pool held
by other threads (writers stuck, say), a read that needs a session waits for one in a
thread, and meanwhile `/healthz`, the fast GET of one connection and a list page still
answer at once (the loop reads on its kept connection, from a pool only event loops use;
lists on the list threads' kept connections; cached token checks read nothing). On SQLite
and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.pool import QueuePool

from iod.app import Services
from iod.infra.config import Settings
from tests.conftest import run_jobs

BASE = "/internet-on-demand/connections"
PROMPT = 5.0  # seconds: generous on a shared machine, far below the pool timeout (30 s)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Client states cached (as in production): a token check on the loop reads nothing; a
    stale state is read on the loop's kept connection (see the last test)."""
    return settings.model_copy(update={"client_cache_seconds": 300})


class Exhausted:
    def __init__(self, pool: QueuePool, release: threading.Event) -> None:
        self.pool = pool
        self.release = release.set


def exhausted(services: Services, pool: Any = None) -> Iterator[Exhausted]:
    """Holds every connection `pool` (the shared one by default) can give, from another
    thread, until `release()` (or the end)."""
    pool = services.db.engine.pool if pool is None else pool
    if not isinstance(pool, QueuePool):
        pytest.skip("an in-memory database has no pool to exhaust")
    capacity = pool.size() + pool._max_overflow  # the pool's bound: size plus overflow
    held: list[Any] = []
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            while pool.checkedout() < capacity:
                held.append(pool.connect())
        finally:
            ready.set()
        release.wait(120)
        for connection in held:
            connection.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert ready.wait(60)
    assert pool.checkedout() == capacity
    try:
        yield Exhausted(pool, release)
    finally:
        release.set()
        holder.join(60)


@contextmanager
def every_pool_held(services: Services) -> Iterator[None]:
    """The shared pool and the threads' kept-connection pool, each held from a thread."""
    holdings = [exhausted(services), exhausted(services, services.db._readers.pool)]
    held = [next(holding) for holding in holdings]
    try:
        yield
    finally:
        for one in held:
            one.release()
        for holding in holdings:
            for _ in holding:
                pass


def _timed(api: TestClient, path: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    status = api.get(path, headers=headers).status_code
    return status, time.monotonic() - started


@pytest.mark.timeout(180)
def test_reads_answer_while_the_shared_pool_is_exhausted(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    body = {"bandwidth": "10 Mbps", "locationId": "PL0000774102"}
    created = api.post(BASE, json=body, headers=headers)
    assert created.status_code == 201
    connection_id = created.json()["id"]
    run_jobs(services)

    holding = exhausted(services)
    held = next(holding)
    try:
        with ThreadPoolExecutor(1) as waiting:
            # A read through a session must wait for the pool, in a thread, not on the loop.
            history = waiting.submit(
                api.get, f"{BASE}/{connection_id}/status-history", headers=headers
            )
            time.sleep(0.3)  # it is waiting for the pool by now
            for path in ("/healthz", f"{BASE}/{connection_id}", f"{BASE}?limit=10"):
                for _ in range(3):
                    status, elapsed = _timed(api, path, headers)
                    assert status == 200, path
                    assert elapsed < PROMPT, (path, elapsed)
            # The exhaustion was real: the session read is still waiting for a connection.
            assert not history.done()
            held.release()
            assert history.result(timeout=60).status_code == 200  # and answers once freed
    finally:
        held.release()
        for _ in holding:
            pass


@pytest.mark.timeout(180)
def test_the_loop_reads_even_when_the_threads_hold_every_kept_connection(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """The threads' kept connections (token endpoint, list threads) come from a pool that
    can be exhausted too; the event loop's comes from one only loops use, so its first
    checkout (or a reconnect) never waits for them."""
    body = {"bandwidth": "10 Mbps", "locationId": "PL0000774102"}
    connection_id = api.post(BASE, json=body, headers=headers).json()["id"]
    run_jobs(services)
    readers = services.db._readers
    for kept in list(readers._kept):  # every thread, the loop's too, checks out anew
        readers._close(kept, None)
    with every_pool_held(services):
        for path in ("/healthz", f"{BASE}/{connection_id}"):
            status, elapsed = _timed(api, path, headers)
            assert status == 200, path
            assert elapsed < PROMPT, (path, elapsed)


@pytest.mark.timeout(180)
def test_a_stale_client_state_is_read_while_the_pools_are_exhausted(
    api: TestClient, headers: dict[str, str], services: Services, tenant: Any
) -> None:
    """A bearer check whose client state is stale reads it on the loop's kept connection:
    with the shared pool and the threads' kept-connection pool held, it still answers."""
    body = {"bandwidth": "10 Mbps", "locationId": "PL0000774102"}
    connection_id = api.post(BASE, json=body, headers=headers).json()["id"]
    run_jobs(services)
    with every_pool_held(services):
        services.clients.forget(tenant.client_id)
        status, elapsed = _timed(api, f"{BASE}/{connection_id}", headers)
        assert status == 200
        assert elapsed < PROMPT, elapsed
        assert services.clients.cached(tenant.client_id) is not None  # read again
