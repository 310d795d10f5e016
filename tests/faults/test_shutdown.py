"""SIGTERM drains: a request in flight completes with 2xx, the in-process worker finishes the
job in hand and hands the rest of its batch back, and `iod serve` exits 0."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for
from tests.faults.conftest import BASE, journal, report, terminate


def _hold_the_write_path(env: dict[str, str], engine: Any, location: str) -> Any:
    """What a slow write really waits for: SQLite's write lock held by another process, or on
    PostgreSQL the row lock on the location that every order takes. Returns its release."""
    if "IOD_DATABASE_URL" not in env:
        holder = sqlite3.connect(Path(env["IOD_DATA_DIR"]) / "iod.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        def release_sqlite() -> None:
            holder.execute("ROLLBACK")
            holder.close()

        return release_sqlite
    conn = engine.connect()
    conn.execute(text("SELECT id FROM locations WHERE id = :id FOR UPDATE"), {"id": location})

    def release_postgres() -> None:
        conn.rollback()
        conn.close()

    return release_postgres


def _in_the_server_waiting(env: dict[str, str], engine: Any) -> None:
    """Returns once the held order waits for the lock in the server: on PostgreSQL seen as a
    backend waiting on a lock (a transaction per look: pg_stat_activity is a snapshot per
    transaction); SQLite shows no such thing, so a wait long enough for a loaded machine."""
    if "IOD_DATABASE_URL" not in env:
        time.sleep(3.0)
        return

    def waiting() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                ).scalar()
            )

    wait_for(waiting, timeout=30)


def test_sigterm_lets_the_request_in_flight_finish(
    tmp_path: Path, backend: str, engine_for: Any
) -> None:
    env = base_env(tmp_path, backend)
    demo = json.loads(iod(env, "demo", "--json").stdout)
    engine = engine_for(env)
    server = Server(env, tmp_path / "server.log").start()
    try:
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        headers = {"Authorization": f"Bearer {token}"}
        release = _hold_the_write_path(env, engine, demo["location_id"])
        answer: dict[str, Any] = {}

        def order() -> None:
            try:
                answer["response"] = httpx.post(
                    f"{server.url}{BASE}",
                    json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]},
                    headers=headers,
                    timeout=60,
                )
            except httpx.HTTPError as exc:  # recorded, asserted below
                answer["error"] = exc

        client = threading.Thread(target=order)
        client.start()
        _in_the_server_waiting(env, engine)  # the order is in the server, waiting for the lock
        assert client.is_alive(), answer
        assert server.process is not None
        process = server.process
        started = time.monotonic()
        stopper = threading.Thread(target=lambda: answer.setdefault("code", terminate(server)))
        stopper.start()
        time.sleep(1.0)  # SIGTERM delivered: the server drains, it does not cut the request
        assert process.poll() is None, "exited with a request in flight"
        release()
        client.join(30)
        stopper.join(60)
        drained = time.monotonic() - started
    finally:
        if server.process is not None:
            server.kill()
    assert "error" not in answer, answer.get("error")
    assert answer["response"].status_code == 201, answer["response"].text
    assert answer["code"] == 0, (tmp_path / "server.log").read_text()[-3000:]
    created = answer["response"].json()["id"]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM connections")).scalars().all()
    assert stored == [created]
    report("sigterm_drains_request", backend=backend, exit_code=answer["code"],
           status=answer["response"].status_code, stop_seconds=round(drained, 2))  # fmt: skip


def test_sigterm_finishes_the_job_in_hand_and_hands_back_the_rest(
    tmp_path: Path, backend: str, engine_for: Any
) -> None:
    env = base_env(tmp_path, backend, IOD_SIMULATED_PROVISION_SECONDS="2")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    engine = engine_for(env)
    server = Server(env, tmp_path / "server.log").start()
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    order = {"bandwidth": "10 Mbps", "locationId": demo["location_id"]}
    try:
        ids = []
        for _ in range(3):
            created = http.post(BASE, json=order)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])

        def running() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.execute(
                        text(
                            "SELECT count(*) FROM jobs WHERE connection_id IS NOT NULL"
                            " AND state = 'running'"
                        )
                    ).scalar_one()
                )

        wait_for(running, timeout=20, interval=0.05)  # the worker is carrying a job out
        code = terminate(server)
    finally:
        http.close()
        if server.process is not None:
            server.kill()
    assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
    with engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT id, state, attempts FROM jobs WHERE connection_id IS NOT NULL ORDER BY id")
        ).all()
    done = {f"job-{j.id}" for j in jobs if j.state == "done"}
    assert all(j.state in ("done", "queued") for j in jobs), jobs  # none left leased
    assert done, "the job in hand was finished"
    assert all(j.attempts == 0 for j in jobs if j.state == "queued"), "hand-backs are free"
    assert {op for op, _ in journal(env)} == done
    handed_back = sum(j.state == "queued" for j in jobs)

    # The next start carries out what was handed back, each operation once.
    server.start()
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        for conn_id in ids:
            wait_for(lambda c=conn_id: http.get(f"{BASE}/{c}").json()["status"] == "active",
                     timeout=60)  # fmt: skip
    finally:
        http.close()
        server.stop()
    ops = [op for op, _ in journal(env)]
    assert sorted(ops) == sorted(f"job-{j.id}" for j in jobs)
    report("sigterm_worker_job_in_hand", backend=backend, exit_code=code,
           jobs=len(jobs), finished=len(done), handed_back=handed_back)  # fmt: skip
