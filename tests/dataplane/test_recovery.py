"""A worker killed mid-provisioning and restarted: the kernel ends exactly as the database says.

Real processes on real kernel state: `iod worker` with the linux driver is SIGKILLed while
it provisions a batch, some connections done, some half-built; the restarted worker
reconciles on start and finishes the jobs. Afterwards a reconciliation finds nothing to do,
and the kernel holds each live connection once, complete, at its rate, and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import build_services, create_app
from iod.connections.reconcile import reconcile
from iod.customers import service as customers
from iod.infra.clock import SystemClock
from iod.infra.config import Settings
from iod.infra.runtime import open_database
from iod.locations import catalog
from iod.locations import service as locations
from iod.models import Connection
from iod.network.linux.driver import LinuxDriver
from tests.e2e.conftest import base_env

BASE = "/internet-on-demand/connections"
CONNECTIONS = int(os.environ.get("IOD_RECOVERY_CONNECTIONS", "40"))
TIERS = ["10 Mbps", "20 Mbps", "50 Mbps", "100 Mbps"]


def status_counts(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with db.read() as session:
        rows = session.execute(
            select(Connection.status, func.count()).group_by(Connection.status)
        ).all()
    return {status: count for status, count in rows}


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "iod", "worker", "--concurrency", "2"],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_killed_mid_provisioning_then_reconciled(prefix: str, tmp_path: Path, backend: str) -> None:
    if backend == "postgres":
        from tests.conftest import postgres_url

        postgres_url()
    env = base_env(
        tmp_path, backend,
        IOD_NETWORK_DRIVER="linux", IOD_LINUX_NAME_PREFIX=prefix,
        IOD_JOB_LEASE_SECONDS="2", IOD_JOB_BACKOFF_SECONDS="0.1",
        IOD_JOB_BACKOFF_CAP_SECONDS="0.5", IOD_WORKER_POLL_SECONDS="0.05",
        IOD_LOG_LEVEL="INFO",
    )  # fmt: skip
    settings = Settings(
        data_dir=Path(env["IOD_DATA_DIR"]), database_url=env.get("IOD_DATABASE_URL"),
        network_driver="linux", linux_name_prefix=prefix,
    )  # fmt: skip
    db = open_database(settings, auto_migrate=True)
    services = build_services(settings, db=db, clock=SystemClock())
    with db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog(catalog.DEMO_LOCATIONS))
        customer = customers.create_customer(session, services.clock, "Recovery")
        client = customers.create_client(
            session, services.clock, customer.id, "read write", hasher=services.secret_hasher
        )
    ordered: dict[str, int] = {}
    with TestClient(create_app(services)) as api:
        token = api.post(
            "/oauth2/token", data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
        ).json()["access_token"]  # fmt: skip
        for n in range(CONNECTIONS):
            tier = TIERS[n % len(TIERS)]
            made = api.post(
                BASE, json={"bandwidth": tier, "locationId": catalog.DEMO_LOCATION_ID},
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            ordered[made.json()["id"]] = int(tier.split()[0])

    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    deadline = time.monotonic() + 60
    # Killed once the kernel has a few connections: mid-batch, before the batch is recorded.
    while sum(n.startswith(f"{prefix}-con_") for n in os.listdir("/var/run/netns")) < 5:
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    at_kill = status_counts(db)
    assert at_kill.get("provisioning", 0) > 0, f"the kill came too late: {at_kill}"
    built = sum(n.startswith(f"{prefix}-con_") for n in os.listdir("/var/run/netns"))

    worker = start_worker(env, log)
    try:
        deadline = time.monotonic() + 90
        while status_counts(db).get("active", 0) < CONNECTIONS:
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (status_counts(db), log.read_text()[-3000:])
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert "network.reconciled" in log.read_text()  # the restarted worker reconciled first

    driver = LinuxDriver(prefix=prefix)
    try:
        report = reconcile(db, driver, SystemClock())
        assert not report.changed, report
        assert report.unchanged == CONNECTIONS
        held = {(r.connection_id, r.location_id, r.bandwidth_mbps, r.suspended)
                for r in driver.inventory()}  # fmt: skip
        assert held == {(c, catalog.DEMO_LOCATION_ID, mbps, False) for c, mbps in ordered.items()}
        ports = driver.ports()
        assert set(ports) == set(ordered) and all(p.complete for p in ports.values())
    finally:
        driver.close()
        services.driver.close()  # type: ignore[attr-defined]
        db.dispose()
    print(
        f"\nkilled with {at_kill} in the database and {built} namespaces in the kernel; "
        f"after restart all {CONNECTIONS} active, kernel == database"
    )
