"""CPU per write request, one request at a time, through the ASGI app in this process.

A steadier before/after figure than wrk's on a shared machine (no concurrency, no job
worker, no HTTP server): `TestClient` on a migrated SQLite file, the demo catalog, one
client. Each row runs N requests after 30 of warm-up and prints the process's CPU time per
request (TestClient's own cost included: compare rows of two runs, not with bench/run.py).
PUTs alternate 5 and 10 Mbps over 20 connections; with no worker their changes stay pending
(about 15 per connection by the end). suspend+resume is one suspend and one resume.

    .venv/bin/python bench/writes_cpu.py 300
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/writes_cpu.py 300   # another tree
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import structlog
from fastapi.testclient import TestClient

from iod.app import build_services, create_app
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.locations import catalog
from iod.locations import service as locations

BASE = "/internet-on-demand/connections"


def main(n: int) -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="iod-writes-cpu-"))
    engine = make_engine(f"sqlite:///{tmp / 'iod.sqlite3'}")
    migrate.upgrade(engine)
    db = Database(engine)
    settings = Settings(
        data_dir=tmp,
        rate_limit_reads_per_second=0,
        rate_limit_writes_per_second=0,
        periodic_tasks=False,
        simulated_provision_seconds=0,
        simulated_change_seconds=0,
    )
    services = build_services(settings, db=db)
    entries = locations.parse_catalog(catalog.DEMO_LOCATIONS)
    with db.write() as session:
        locations.upsert(session, services.clock, entries)
        customer = customers.create_customer(session, services.clock, "bench")
        client = customers.create_client(
            session, services.clock, customer.id, "read write", hasher=services.secret_hasher
        )
    location = entries[0].id
    with TestClient(create_app(services, run_worker=False)) as api:
        token = api.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        order = {"locationId": location, "bandwidth": "1 Mbps"}
        ids = [api.post(BASE, json=order, headers=headers).json()["id"] for _ in range(20)]
        services.worker().run_until_idle()

        def measure(label: str, request: Callable[[int], None]) -> None:
            for i in range(30):
                request(i)
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(n):
                request(i)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{label}: {1000 * cpu / n:.3f} CPU ms/request, {1000 * wall / n:.3f} wall ms")

        def get(i: int) -> None:
            assert api.get(f"{BASE}/{ids[i % 20]}", headers=headers).status_code == 200

        def create(i: int) -> None:
            response = api.post(BASE, json=order, headers=headers)
            assert response.status_code == 201, response.text

        def put(i: int) -> None:
            bandwidth = "5 Mbps" if (i // 20) % 2 else "10 Mbps"
            url = f"{BASE}/{ids[i % 20]}/bandwidth"
            response = api.put(url, json={"bandwidth": bandwidth}, headers=headers)
            assert response.status_code == 200, response.text

        def suspend_resume(i: int) -> None:
            for action in ("suspend", "resume"):
                response = api.post(f"{BASE}/{ids[i % 20]}/{action}", headers=headers)
                assert response.status_code in (202, 409), response.text

        measure("GET", get)
        measure("create", create)
        measure("PUT bandwidth", put)
        services.worker().run_until_idle()
        measure("suspend+resume (2 requests)", suspend_resume)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
