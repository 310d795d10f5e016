"""PostgreSQL restarted under load: `iod serve` answers 2xx, 503 or 429 (never 500), keeps
every write it acknowledged, and recovers by itself (no restart of the service).

It restarts the local cluster that serves IOD_TEST_DATABASE_URL once (`pg_ctlcluster …
restart`, a few seconds), so it needs to run as root or postgres on the database's machine.
Other users of the cluster see the same few seconds of outage, so it runs only when
IOD_TEST_RESTART_POSTGRES=1 says so (.ci/run and `make test-faults` do), never on a developer's
shared cluster by surprise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import postgres_url
from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for
from tests.faults.conftest import BASE, report, size

TIERS = ["10 Mbps", "20 Mbps", "50 Mbps", "100 Mbps"]


def local_cluster(url: str) -> tuple[str, str, int]:
    """(version, name, port) of the local cluster serving `url`, or skip with the reason."""
    if os.environ.get("IOD_TEST_RESTART_POSTGRES") != "1":
        pytest.skip(
            "restarts the whole local PostgreSQL cluster: enabled only with "
            "IOD_TEST_RESTART_POSTGRES=1 (.ci/run and make test-faults set it)"
        )
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    port = parts.port or 5432
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("restarting PostgreSQL needs the test database on this machine")
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster (Debian's postgresql-common)")
    if os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs root (pg_ctlcluster)")
    for line in subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name, port
    pytest.skip(f"no local cluster listens on port {port}")


def pg_isready(port: int) -> bool:
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(port), "-q"], check=False)
    return ready.returncode == 0


class Load:
    """Threads sending mixed reads and writes as fast as answers come, recording each answer.
    No retries: every answer is what a client would have seen."""

    def __init__(self, url: str, token: str, location: str, threads: int) -> None:
        self.url, self.location = url, location
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, int | str]] = []  # (time, kind, status or error)
        self.created: list[str] = []  # connections acknowledged with 201
        self.changes: list[str] = []  # bandwidth changes acknowledged with 200
        self.known: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as http:
            while not self.stop.is_set():
                kind = rng.choice(["list", "get", "create", "change"])
                try:
                    status = self.send(http, kind, rng)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self.lock:
                    self.answers.append((time.monotonic(), kind, status))

    def send(self, http: httpx.Client, kind: str, rng: random.Random) -> int:
        with self.lock:
            target = rng.choice(self.known) if self.known else None
        if kind == "list" or (target is None and kind != "create"):
            return http.get(BASE, params={"limit": 20}).status_code
        if kind == "get":
            return http.get(f"{BASE}/{target}").status_code
        if kind == "create":
            r = http.post(BASE, json={"bandwidth": rng.choice(TIERS), "locationId": self.location},
                          headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
            if r.status_code == 201:
                with self.lock:
                    self.created.append(r.json()["id"])
                    self.known.append(r.json()["id"])
            return r.status_code
        r = http.put(f"{BASE}/{target}/bandwidth", json={"bandwidth": rng.choice(TIERS)},
                     headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        change = r.json().get("change") if r.status_code == 200 else None
        if change is not None:  # none when that bandwidth is in force then anyway
            with self.lock:
                self.changes.append(change["id"])
        return r.status_code


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    url = postgres_url()
    version, cluster, port = local_cluster(url)
    env = base_env(tmp_path, "postgres", IOD_DATABASE_CONNECT_TIMEOUT="3",
                   IOD_SIMULATED_PROVISION_SECONDS="0.01", IOD_SIMULATED_CHANGE_SECONDS="0.01",
                   IOD_LOG_LEVEL="WARNING")  # fmt: skip
    demo = json.loads(iod(env, "demo", "--json").stdout)
    catalog = tmp_path / "catalog.json"
    site = {"id": "PL-FAULT", "name": "Fault Lab", "address": "1 Test Way", "capacity": "1000 Gbps"}
    catalog.write_text(json.dumps([site]))
    iod(env, "locations", "import", str(catalog))
    server = Server(env, tmp_path / "server.log").start()
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    load = Load(server.url, token, "PL-FAULT", threads=size(4, 8))
    before, after = size(2, 10), size(3, 10)  # seconds of load around the restart
    restart: dict[str, float] = {}
    try:
        load.start()
        time.sleep(before)
        restart["begin"] = time.monotonic()
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        restart["end"] = time.monotonic()
        time.sleep(after)
    finally:
        load.finish()
        # Whatever happened, leave PostgreSQL up for the other users of the cluster.
        deadline = time.monotonic() + 60
        while not pg_isready(port) and time.monotonic() < deadline:
            time.sleep(0.5)
    try:
        assert pg_isready(port), "PostgreSQL is up again"
        statuses = Counter(status for _, _, status in load.answers)
        assert set(statuses) <= {200, 201, 429, 503}, statuses
        failed = [t for t, _, s in load.answers if s == 503]
        recovered = [t for t, _, s in load.answers if s != 503 and t > restart["end"]]
        assert recovered, "requests succeed again after the restart"
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200

        # Every acknowledged write is in the database; the worker catches up by itself.
        engine = server_engine(env)
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM connections")).scalars())
            changes = set(conn.execute(text("SELECT id FROM bandwidth_changes")).scalars())
        assert set(load.created) <= stored
        assert set(load.changes) <= changes

        def settled() -> bool:
            with engine.connect() as conn:
                return not conn.execute(
                    text(
                        "SELECT count(*) FROM jobs WHERE connection_id IS NOT NULL"
                        " AND state <> 'done'"
                    )
                ).scalar_one()

        wait_for(settled, timeout=120, interval=0.5)
        engine.dispose()
    finally:
        server.stop()
    # The outage as the clients saw it: from the first 503 to the first success after the
    # last one (the restart command returns a little after PostgreSQL accepts again).
    back = None
    if failed:
        after_last = [t for t, _, s in load.answers if s != 503 and t > failed[-1]]
        back = round(after_last[0] - failed[-1], 3) if after_last else None
    report(
        "postgres_restart",
        requests=len(load.answers),
        statuses={str(k): v for k, v in sorted(statuses.items(), key=str)},
        restart_command_seconds=round(restart["end"] - restart["begin"], 2),
        first_503_after_restart_began=round(failed[0] - restart["begin"], 2) if failed else None,
        outage_seen_seconds=round(failed[-1] - failed[0], 2) if failed else 0,
        first_success_after_last_503_seconds=back,
        writes_acknowledged=len(load.created) + len(load.changes),
    )


def server_engine(env: dict[str, str]) -> Any:
    from sqlalchemy import create_engine

    return create_engine(env["IOD_DATABASE_URL"], pool_pre_ping=True)
