"""Webhooks: deliveries per second to a local receiver, with 2 `iod worker` processes on
PostgreSQL.

A receiver (uvicorn, a bare ASGI app answering 204, in its own process), one endpoint of the
demo customer; `-n` events are committed (in transactions of 500), then two workers taking
the `webhooks` queue are started and the time from the first attempt to the last (their
rows' times) is measured, once every delivery has succeeded. Every delivery is signed,
resolved, checked against the allow list, POSTed on a kept-alive connection and recorded
(attempt row, delivery row, job row), as in production. Run:
`.venv/bin/python bench/webhooks.py [--database-url postgresql+psycopg://…] [-n 5000]`
(the database is wiped; default IOD_BENCH_DATABASE_URL or the local iod_bench).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from iod import events, features
from iod.infra.clock import SystemClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.infra.migrate import upgrade
from iod.models import WebhookAttempt, WebhookDelivery

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench"
RECEIVER = """
count = 0
async def app(scope, receive, send):
    global count
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    count += 1
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of the processes and their children (py-spy's worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [p.pid for p in processes]
    for pid in pids:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(c) for c in children if int(c) not in pids]
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _profiled(folder: Path | None, n: int) -> list[str]:
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    return [spy, "record", "--gil", "--format", "raw", "-o", str(folder / f"worker-{n}.txt"), "--"]


@dataclass(frozen=True)
class Result:
    delivered: int
    wanted: int
    seconds: float  # first attempt to last
    committed_seconds: float  # the events and their deliveries, before the workers start
    loadavg: float  # 1-minute load average at the end
    # The workers' CPU (user + system) per delivery, from the first delivery seen done to
    # the last (their start-up excluded): steadier than deliveries/s on a busy machine.
    worker_cpu_ms: float = 0.0
    # The same for the PostgreSQL backends of the database (the workers', the bench's).
    postgres_cpu_ms: float = 0.0

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def run(
    database_url: str,
    n: int = 5000,
    *,
    workers: int = 2,
    batch_size: int = 64,
    profile: Path | None = None,
) -> Result:
    """Wipes the database, commits `n` events for one endpoint, runs `workers` workers until
    every delivery succeeded (or 600 s), and measures them."""
    with tempfile.TemporaryDirectory(prefix="iod-bench-webhooks-") as name:
        return _run(Path(name), database_url, n, workers, batch_size, profile)


def _run(
    tmp: Path, database_url: str, n: int, workers_wanted: int, batch_size: int,
    profile: Path | None,
) -> Result:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(
        IOD_DATA_DIR=str(tmp),
        IOD_DATABASE_URL=database_url,
        IOD_LOG_LEVEL="WARNING",
        IOD_PERIODIC_TASKS="false",
        IOD_WORKER_QUEUES="webhooks",
        IOD_WORKER_BATCH_SIZE=str(batch_size),
        IOD_WEBHOOK_ALLOW_HTTP="true",
        IOD_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
    )
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    upgrade(engine)
    engine.dispose()
    iod = [sys.executable, "-m", "iod"]
    demo = json.loads(subprocess.run([*iod, "demo", "--json"], env=env, check=True,
                                     capture_output=True, text=True).stdout)  # fmt: skip
    (tmp / "receiver.py").write_text(RECEIVER)
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "receiver:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log", "--app-dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    features.load()
    db = Database(make_engine(database_url))
    clock = SystemClock()
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        from iod.audit.service import operator
        from iod.auth.tokens import Principal
        from iod.webhooks import service
        from iod.webhooks.schemas import WebhookEndpointRequest

        settings = Settings(
            data_dir=tmp, webhook_allow_http=True, webhook_allow_networks="127.0.0.0/8"
        )
        principal = Principal(
            demo["client_id"], demo["customer_id"], frozenset({"write"}), time.time() + 3600
        )
        with db.write() as session:
            service.create(
                session,
                clock.now(),
                principal,
                WebhookEndpointRequest(url=f"http://127.0.0.1:{port}/hook"),
                service.Limits.of(settings, None),
                actor=operator(),
            )
        started = time.perf_counter()
        for first in range(0, n, 500):
            with db.write() as session:
                for i in range(first, min(n, first + 500)):
                    events.record(session, "connection.activated",
                                  customer_id=demo["customer_id"], subject_id=f"con_b{i}",
                                  at=clock.now(), connectionId=f"con_b{i}",
                                  fromStatus="provisioning", reason="bench")  # fmt: skip
        committed = time.perf_counter() - started
        workers = [
            subprocess.Popen(
                [*_profiled(profile, i), *iod, "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(workers_wanted)
        ]
        done = 0
        from run import postgres_cpu_between, postgres_cpu_ticks

        database = make_url(database_url).database
        # deliveries done, workers' CPU seconds, PostgreSQL's CPU ticks by backend
        first: tuple[int, float, dict[int, int]] | None = None
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            with db.read() as session:
                done = int(
                    session.scalar(
                        select(func.count())
                        .select_from(WebhookDelivery)
                        .where(WebhookDelivery.status == "succeeded")
                    )
                    or 0
                )
            if first is None and done > 0:
                first = (done, _cpu_seconds(workers), postgres_cpu_ticks(database))
            if done >= n:
                break
            time.sleep(0.2)
        cpu_ms = pg_ms = 0.0
        if first is not None and done > first[0]:
            cpu_ms = (_cpu_seconds(workers) - first[1]) * 1000 / (done - first[0])
            pg_seconds = postgres_cpu_between(first[2], postgres_cpu_ticks(database))
            pg_ms = pg_seconds * 1000 / (done - first[0])
        with db.read() as session:
            first_at, last_at = session.execute(
                select(func.min(WebhookAttempt.at), func.max(WebhookAttempt.at))
            ).one()
        took = (last_at - first_at).total_seconds() if first_at is not None else 0.0
        return Result(done, n, took, committed, os.getloadavg()[0], cpu_ms, pg_ms)
    finally:
        for worker in workers:
            # py-spy writes its stacks on SIGINT (and stops the worker with it)
            worker.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
        receiver.terminate()
        receiver.wait(10)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database-url", default=os.environ.get("IOD_BENCH_DATABASE_URL") or DEFAULT_PG_URL
    )
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="IOD_WORKER_BATCH_SIZE")
    parser.add_argument(
        "--profile", type=Path, help="a folder: each worker under py-spy (--gil), raw stacks"
    )
    args = parser.parse_args()
    result = run(args.database_url, args.n, workers=args.workers, batch_size=args.batch_size,
                 profile=args.profile)  # fmt: skip
    print(
        f"PostgreSQL, {args.workers} workers (batches of {args.batch_size}): "
        f"{result.delivered}/{args.n} webhook deliveries in "
        f"{result.seconds:.2f} s (first to last attempt) = {result.per_second:,.0f} "
        f"deliveries/s; the {args.n} events and their deliveries committed in "
        f"{result.committed_seconds:.2f} s ({args.n / result.committed_seconds:,.0f}/s); "
        f"CPU per delivery: workers {result.worker_cpu_ms:.2f} ms, "
        f"PostgreSQL {result.postgres_cpu_ms:.2f} ms; "
        f"load average {result.loadavg:.1f}"
    )


if __name__ == "__main__":
    main()
