"""`iod serve` killed with SIGKILL during a run of creates that carry Idempotency-Keys: the
clients retry against the restarted process and exactly one connection exists per key.

Short: 100 creates, one kill; long (IOD_FAULTS_LONG=1): 1,000 creates, three kills.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.e2e.conftest import Server, base_env, iod, token_for
from tests.faults.conftest import BASE, report, size

RETRYABLE = {409, 429, 503}  # 409: the key's row came and went while looked up (rare)


def test_api_killed_during_creates_with_idempotency_keys(
    tmp_path: Path, backend: str, engine_for: Any
) -> None:
    total, kills = size(100, 1000), size(1, 3)
    env = base_env(tmp_path, backend, IOD_LOG_LEVEL="WARNING")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    site = {"id": "PL-FAULT", "name": "Fault Lab", "address": "1 Test Way", "capacity": "1000 Gbps"}
    (tmp_path / "catalog.json").write_text(json.dumps([site]))
    iod(env, "locations", "import", str(tmp_path / "catalog.json"))
    server = Server(env, tmp_path / "server.log").start()
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    headers = {"Authorization": f"Bearer {token}"}
    seen: Counter[str] = Counter()  # every answer or error the clients got, retries included
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def create(n: int) -> str:
        """One order, retried like the SDK does (same key) until it is answered."""
        body = {"bandwidth": "10 Mbps", "locationId": "PL-FAULT"}
        keyed = {**headers, "Idempotency-Key": f"fault-order-{n}"}
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while True:
                assert time.monotonic() < deadline, f"order {n} was never answered"
                try:
                    r = http.post(BASE, json=body, headers=keyed)
                    outcome = str(r.status_code)
                    if r.headers.get("idempotent-replayed") == "true":
                        outcome += " replayed"  # the first attempt's answer was lost
                except httpx.TransportError as exc:
                    r, outcome = None, type(exc).__name__
                with lock:
                    seen[outcome] += 1
                if r is not None and r.status_code == 201:
                    done.release()
                    return str(r.json()["id"])
                assert r is None or r.status_code in RETRYABLE, r.text
                time.sleep(0.05)

    downtimes: list[float] = []

    def killer() -> None:
        """SIGKILL after each share of the creates has been answered; start again."""
        answered = 0
        for k in range(1, kills + 1):
            while answered < total * k // (kills + 1):
                done.acquire()
                answered += 1
            killed = time.monotonic()
            server.kill()
            server.start(timeout=60)
            downtimes.append(time.monotonic() - killed)

    chaos = threading.Thread(target=killer)
    chaos.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(create, range(total)))
        chaos.join(120)
    finally:
        server.stop()

    engine = engine_for(env)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM connections")).scalars().all()
        running = conn.execute(
            text("SELECT count(*) FROM idempotency_keys WHERE state = 'running'")
        ).scalar_one()
    assert len(downtimes) == kills
    assert len(set(ids)) == total, "one connection per key"
    assert sorted(stored) == sorted(ids), "exactly the acknowledged connections exist"
    assert running == 0, "no claim is left behind"
    allowed = {"201", "201 replayed", *map(str, RETRYABLE)}
    transport = {"ConnectError", "ReadError", "RemoteProtocolError", "ReadTimeout"}
    assert not set(seen) - allowed - transport, seen
    report("api_killed", backend=backend, creates=total, kills=kills, connections=len(stored),
           answers=dict(seen), restart_seconds=[round(d, 2) for d in downtimes])  # fmt: skip
