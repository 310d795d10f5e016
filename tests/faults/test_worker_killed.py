"""`iod worker` killed with SIGKILL mid-job, on SQLite and PostgreSQL: no job is lost and none
is applied twice.

Each kill lands when the network has carried out operations the database has not recorded
yet (the journal holds more operations than there are done jobs): the hardest moment, the
restarted worker must take those jobs up again after their lease and the driver must know
them by their operation id. tests/e2e/test_crash.py kills workers at random moments under a
larger PostgreSQL load; this one aims at that moment, on both backends.

Short: 20 connections and 20 changes, 2 kills; long: 200 and 200, 5 kills.
"""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for
from tests.e2e.test_crash import start_worker
from tests.faults.conftest import BASE, journal, report, size


def test_worker_killed_mid_job(tmp_path: Path, backend: str, engine_for: Any) -> None:
    total, kills = size(20, 200), size(2, 5)
    env = base_env(
        tmp_path,
        backend,
        IOD_SIMULATED_PROVISION_SECONDS="0.1",
        IOD_SIMULATED_CHANGE_SECONDS="0.1",
        IOD_JOB_LEASE_SECONDS="2",
        IOD_JOB_BACKOFF_SECONDS="0.1",
        IOD_JOB_BACKOFF_CAP_SECONDS="1",
        IOD_JOB_MAX_ATTEMPTS="50",
        IOD_WORKER_BATCH_SIZE="8",
        IOD_LOG_LEVEL="WARNING",
    )
    demo = json.loads(iod(env, "demo", "--json").stdout)
    site = {"id": "PL-FAULT", "name": "Fault Lab", "address": "1 Test Way", "capacity": "1000 Gbps"}
    (tmp_path / "catalog.json").write_text(json.dumps([site]))
    iod(env, "locations", "import", str(tmp_path / "catalog.json"))
    engine = engine_for(env)
    server = Server(env, tmp_path / "api.log", "--no-worker").start()
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    def order(_: int) -> str:
        created = http.post(BASE, json={"bandwidth": "10 Mbps", "locationId": "PL-FAULT"})
        assert created.status_code == 201, created.text
        conn_id = str(created.json()["id"])
        changed = http.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "100 Mbps"})
        assert changed.status_code == 200, changed.text
        return conn_id

    def done_jobs() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM jobs WHERE connection_id IS NOT NULL"
                        " AND state = 'done'"
                    )
                ).scalar_one()
            )

    unrecorded_at_kill: list[int] = []
    worker = None
    try:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(order, range(total)))
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        for _ in range(kills):
            # Wait for carried-out operations the database does not know of yet.
            ahead = wait_for(lambda: max(len(journal(env)) - done_jobs(), 0), timeout=60,
                             interval=0.01)  # fmt: skip
            worker.kill()
            worker.wait()
            unrecorded_at_kill.append(ahead)
            worker = start_worker(env, log)
        wait_for(lambda: done_jobs() == 2 * total, timeout=300, interval=0.5)
    finally:
        http.close()
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        server.stop()

    with engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT id, state FROM jobs WHERE connection_id IS NOT NULL")
        ).all()
        rows = conn.execute(text("SELECT id, status, bandwidth_mbps FROM connections")).all()
        activations = conn.execute(
            text(
                "SELECT connection_id, count(*) FROM status_transitions "
                "WHERE to_status = 'active' GROUP BY connection_id"
            )
        ).all()
        applied = conn.execute(
            text("SELECT count(*) FROM bandwidth_changes WHERE status = 'applied'")
        ).scalar_one()
    assert all(job.state == "done" for job in jobs), "no job lost"
    ops = [op for op, _ in journal(env)]
    assert sorted(ops) == sorted(f"job-{job.id}" for job in jobs), (
        "the network carried out every job exactly once"
    )
    assert sorted(r.id for r in rows) == sorted(ids)
    assert all((r.status, r.bandwidth_mbps) == ("active", 100) for r in rows), rows
    assert sorted(activations) == sorted((conn_id, 1) for conn_id in ids), "activated once each"
    assert applied == total
    network = sqlite3.connect(Path(env["IOD_DATA_DIR"]) / "simulated-network.sqlite3")
    inventory = sorted(network.execute("SELECT connection_id, bandwidth_mbps FROM network"))
    network.close()
    assert inventory == sorted((r.id, r.bandwidth_mbps) for r in rows), "network matches"
    report("worker_killed", backend=backend, connections=total, jobs=len(jobs), kills=kills,
           carried_out_unrecorded_at_each_kill=unrecorded_at_kill)  # fmt: skip
