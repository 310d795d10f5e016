"""Crash test on PostgreSQL: 2 API processes, 3 worker processes killed with SIGKILL at
random moments and restarted; every change is applied exactly once and nothing is left.

`make test` runs a small size; `make crash-test` runs the issue's size (500 connections,
2,000 scheduled changes) through IOD_CRASH_CONNECTIONS / IOD_CRASH_CHANGES.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import postgres_url
from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for

CONNECTIONS = int(os.environ.get("IOD_CRASH_CONNECTIONS", "40"))
CHANGES = int(os.environ.get("IOD_CRASH_CHANGES", "160"))
TIERS = ["10 Mbps", "20 Mbps", "50 Mbps", "100 Mbps", "200 Mbps", "300 Mbps", "500 Mbps"]
BASE = "/internet-on-demand/connections"

# Workers killed at random, five processes, a 300 s bound to settle: alone, in make pytest's
# serial pass (tests/parallel.py), like the fault tests.
pytestmark = pytest.mark.serial


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "iod", "worker", "--concurrency", "2"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def test_workers_killed_at_random_lose_nothing(tmp_path: Path) -> None:
    postgres_url()
    rng = random.Random(20261126)
    env = base_env(
        tmp_path,
        "postgres",
        IOD_SIMULATED_PROVISION_SECONDS="0.02",
        IOD_SIMULATED_CHANGE_SECONDS="0.02",
        IOD_JOB_LEASE_SECONDS="2",
        IOD_JOB_BACKOFF_SECONDS="0.1",
        IOD_JOB_BACKOFF_CAP_SECONDS="1",
        IOD_JOB_MAX_ATTEMPTS="50",
        IOD_LOG_LEVEL="WARNING",
    )
    iod(env, "db", "upgrade")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {
                    "id": "PL-CRASH",
                    "name": "Crash Lab",
                    "address": "1 Test Way",
                    "capacity": "1000 Gbps",
                }
            ]
        )
    )
    iod(env, "locations", "import", str(catalog))
    server = Server(env, tmp_path / "api.log", "--no-worker", "--workers", "2").start()
    workers = [start_worker(env, tmp_path / f"worker-{n}.log") for n in range(3)]
    try:
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

        def create(_: int) -> str:
            r = http.post(BASE, json={"bandwidth": "10 Mbps", "locationId": "PL-CRASH"})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(create, range(CONNECTIONS)))
        # Far enough ahead that every change is still in the future when it is accepted
        # (a past effectiveDate would mean "now" and change the order of the plan).
        start = datetime.now(UTC) + timedelta(seconds=3 + CHANGES / 40)
        plan = [
            (rng.choice(ids), rng.choice(TIERS), start + timedelta(seconds=rng.uniform(0, 8)))
            for _ in range(CHANGES)
        ]

        def schedule(item: tuple[str, str, datetime]) -> tuple[str, str, datetime] | None:
            conn, bandwidth, when = item
            r = http.put(
                f"{BASE}/{conn}/bandwidth",
                json={"bandwidth": bandwidth, "effectiveDate": when.isoformat()},
            )
            assert r.status_code == 200, r.text
            if "change" not in r.json():
                return None  # it would have that bandwidth then anyway: nothing recorded
            # A date already past when accepted means "now": the server's date is the truth.
            return conn, bandwidth, datetime.fromisoformat(r.json()["change"]["effectiveDate"])

        with ThreadPoolExecutor(8) as pool:
            accepted = [each for each in pool.map(schedule, plan) if each is not None]

        # Kill workers with SIGKILL at random moments while changes fall due; restart them.
        due_window = (start - datetime.now(UTC)).total_seconds() + 8
        deadline = time.monotonic() + max(12.0, due_window + 2)
        kills = 0
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.2))
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            workers[victim].wait()
            kills += 1
            workers[victim] = start_worker(env, tmp_path / f"worker-{victim}.log")
        assert kills >= 5

        expected: dict[str, str] = {conn: "10 Mbps" for conn in ids}
        for conn, bandwidth, _when in sorted(accepted, key=lambda p: p[2]):
            expected[conn] = bandwidth

        def settled() -> bool:
            listed = http.get(f"{BASE}?limit=1000").json()["connections"]
            return len(listed) == len(ids) and all(
                c["status"] == "active"
                and not c["pendingBandwidthChanges"]
                and c["bandwidth"] == expected[c["id"]]
                for c in listed
            )

        wait_for(settled, timeout=300, interval=0.5)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        server.stop()

    engine = create_engine(env["IOD_DATABASE_URL"])
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM jobs WHERE connection_id IS NOT NULL AND state <> 'done'")
        ).scalar_one()
        change_jobs = (
            conn.execute(
                text(
                    "SELECT j.id FROM jobs j JOIN bandwidth_changes c ON c.id = j.change_id "
                    "WHERE c.status = 'applied'"
                )
            )
            .scalars()
            .all()
        )
        applied = conn.execute(
            text("SELECT count(*) FROM bandwidth_changes WHERE status = 'applied'")
        ).scalar_one()
    engine.dispose()
    assert left == 0, "no job is left behind"
    # Every change recorded is applied once; the plan's no-ops recorded none.
    assert applied == len(accepted) and len(accepted) >= CHANGES // 2
    journal = sqlite3.connect(Path(env["IOD_DATA_DIR"]) / "simulated-network.sqlite3")
    ops = [
        row[0] for row in journal.execute("SELECT op_id FROM journal WHERE name = 'set_bandwidth'")
    ]
    journal.close()
    assert sorted(ops) == sorted(f"job-{job}" for job in change_jobs), (
        "the network carried out each change exactly once"
    )
