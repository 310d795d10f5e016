"""Reconciliation against the database (simulated driver), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services, build_services, create_app
from iod.connections.reconcile import desired_state, reconcile
from iod.infra.config import Settings
from iod.infra.runtime import open_database
from iod.models import AuditEvent
from iod.network.base import ConnectionSpec
from iod.network.simulated import SimulatedDriver
from tests.conftest import run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def order(api: TestClient, headers: dict[str, str], bandwidth: str = "100 Mbps") -> str:
    made = api.post(BASE, json={"bandwidth": bandwidth, "locationId": LOC}, headers=headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_desired_state_leaves_busy_connections_to_their_jobs(api, headers, services) -> None:
    quiet, pending, later = order(api, headers), order(api, headers), order(api, headers)
    run_jobs(services)
    provisioning_only = order(api, headers)  # its provision job is due: left alone
    assert api.post(f"{BASE}/{pending}/suspend", headers=headers).status_code == 202
    future = services.clock.now() + timedelta(hours=2)
    body = {"bandwidth": "200 Mbps", "effectiveDate": future.isoformat()}
    assert api.put(f"{BASE}/{later}/bandwidth", json=body, headers=headers).status_code == 200
    desired, skip = desired_state(services.db, services.clock)
    assert {d.connection_id for d in desired} == {quiet, pending, later}
    assert skip == {provisioning_only, pending}  # a job due now; a change in 2 h is not busy
    assert all(d.ipv4_block for d in desired)


def test_simulated_network_is_mended_and_a_second_run_finds_nothing(
    api, headers, services: Services
) -> None:
    keep, wrong, lost = order(api, headers), order(api, headers), order(api, headers)
    run_jobs(services)
    driver: SimulatedDriver = services.driver  # type: ignore[assignment]
    driver.set_bandwidth(ConnectionSpec(wrong, LOC, 500), "manual-1")
    driver.terminate(lost, "manual-2")
    driver.provision(ConnectionSpec("con_orphan", LOC, 10), "manual-3")
    report = reconcile(services.db, driver, services.clock)
    assert [r.split(":")[0] for r in report.created] == [lost]
    assert [r.split(":")[0] for r in report.corrected] == [wrong]
    assert [r.split(":")[0] for r in report.removed] == ["con_orphan"]
    assert report.unchanged == 1
    held = {(c.connection_id, c.bandwidth_mbps) for c in driver.inventory()}
    assert held == {(keep, 100), (wrong, 100), (lost, 100)}
    assert not reconcile(services.db, driver, services.clock).changed


def test_a_busy_connection_is_counted_as_left_to_its_job(api, headers, services) -> None:
    """A connection with a job due is left alone, and said to be (the start-up log's
    "skipped" counted only those the database no longer has; found by a user's trial)."""
    order(api, headers)  # quiet: unchanged
    busy = order(api, headers)
    run_jobs(services)
    assert api.post(f"{BASE}/{busy}/suspend", headers=headers).status_code == 202
    report = reconcile(services.db, services.driver, services.clock)
    assert report.skipped == [busy]
    assert report.unchanged == 1


def test_the_cli_reconciles_and_audits_what_it_changed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env["IOD_DATA_DIR"] = str(tmp_path)
    iod = [sys.executable, "-m", "iod"]
    demo = json.loads(
        subprocess.run([*iod, "demo", "--json"], env=env, check=True, capture_output=True).stdout
    )
    settings = Settings(data_dir=tmp_path, simulated_provision_seconds=0)
    services = build_services(settings, db=open_database(settings))
    with TestClient(create_app(services)) as api:
        token = api.post(
            "/oauth2/token", data={"grant_type": "client_credentials"},
            auth=(demo["client_id"], demo["client_secret"]),
        ).json()["access_token"]  # fmt: skip
        con = order(api, {"Authorization": f"Bearer {token}"})
    run_jobs(services)
    services.driver.terminate(con, "lost-by-hand")  # the network forgot it

    def reconcile_cli(*flags: str) -> dict[str, object]:
        done = subprocess.run([*iod, "network", "reconcile", "--json", *flags], env=env,
                              check=True, capture_output=True, text=True)  # fmt: skip
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    assert reconcile_cli("--dry-run")["created"] == [f"{con}: missing"]
    assert reconcile_cli()["changed"] is True
    assert reconcile_cli()["changed"] is False
    assert [c.connection_id for c in services.driver.inventory()] == [con]
    with services.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "network.reconcile")
        ).all()
    assert len(events) == 1 and events[0].details["created"] == [f"{con}: missing"]
    assert events[0].actor_type == "operator" and events[0].source == "cli"
    services.db.dispose()
