"""Burst benchmark: N changes due at the same instant, worker processes on PostgreSQL.

Reports the time from the instant until all are applied, then the lag (applied_at minus
effectiveDate) of single changes arriving at a steady rate. Run: `make bench-burst`
(IOD_BURST_DATABASE_URL, default a database `iod_bench_burst` on the local PostgreSQL,
dropped and created anew).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

from iod.infra import migrate
from iod.infra.db import make_engine
from iod.infra.ids import new_id
from iod.models import BandwidthChange, Connection, Customer, Job, Location

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench_burst"


def fresh_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


def seed(url: str, connections: int) -> list[str]:
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Customer).values(id="cus_bench", name="bench", created_at=now))
        conn.execute(
            insert(Location).values(
                id="PL-BENCH", name="bench", address="-", capacity_mbps=1_000_000,
                tiers_mbps=[10, 100], ipv4_pool="10.0.0.0/12", created_at=now, updated_at=now,
            )
        )  # fmt: skip
    engine.dispose()
    return seed_more(url, connections)


def schedule(url: str, connection_ids: list[str], at: datetime) -> None:
    engine = make_engine(url)
    now = datetime.now(UTC)
    changes = [new_id("chg") for _ in connection_ids]
    with engine.begin() as conn:
        conn.execute(
            insert(BandwidthChange),
            [
                {"id": c, "connection_id": i, "to_mbps": 100, "effective_at": at,
                 "status": "scheduled", "requested_by": "bench", "requested_at": now}
                for c, i in zip(changes, connection_ids, strict=True)
            ],
        )  # fmt: skip
        conn.execute(
            insert(Job),
            [
                {"kind": "apply_bandwidth", "connection_id": i, "change_id": c,
                 "state": "queued", "run_at": at, "scheduled_at": at, "attempts": 0,
                 "max_attempts": 5, "created_at": now}
                for c, i in zip(changes, connection_ids, strict=True)
            ],
        )  # fmt: skip
    engine.dispose()


def applied_count(engine, since: datetime) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM bandwidth_changes WHERE status = 'applied'")
            ).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="IOD_WORKER_BATCH_SIZE")
    parser.add_argument("--rate", type=float, default=100.0, help="steady changes per second")
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    args = parser.parse_args()
    url = os.environ.get("IOD_BURST_DATABASE_URL", DEFAULT_URL)
    fresh_database(url)
    ids = seed(url, args.changes)
    instant = datetime.now(UTC) + timedelta(seconds=8)
    schedule(url, ids, instant)

    data_dir = Path(tempfile.mkdtemp(prefix="iod-burst-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(
        IOD_DATABASE_URL=url,
        IOD_DATA_DIR=str(data_dir),
        IOD_SIMULATED_CHANGE_SECONDS="0",
        IOD_WORKER_POLL_SECONDS="0.1",
        IOD_WORKER_BATCH_SIZE=str(args.batch),
        IOD_LOG_LEVEL="WARNING",
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "iod", "worker", "--concurrency", str(args.concurrency)],
            env=env,
        )
        for _ in range(args.workers)
    ]
    engine = make_engine(url)
    try:
        while datetime.now(UTC) < instant:
            time.sleep(0.01)
        while applied_count(engine, instant) < args.changes:
            time.sleep(0.05)
        burst = (datetime.now(UTC) - instant).total_seconds()

        # Steady: one change every 1/rate seconds, each due 0.5 s after it is scheduled.
        steady_ids = seed_more(url, int(args.rate * args.steady_seconds))
        started = time.monotonic()
        for n, conn_id in enumerate(steady_ids):
            target = started + n / args.rate
            time.sleep(max(0.0, target - time.monotonic()))
            schedule(url, [conn_id], datetime.now(UTC) + timedelta(seconds=0.5))
        total = args.changes + len(steady_ids)
        while applied_count(engine, instant) < total:
            time.sleep(0.05)
        with engine.connect() as conn:
            lags = [
                (applied - effective).total_seconds() * 1000
                for applied, effective in conn.execute(
                    select(BandwidthChange.applied_at, BandwidthChange.effective_at).where(
                        BandwidthChange.connection_id.in_(steady_ids)
                    )
                )
            ]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        engine.dispose()
    lags.sort()
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"machine: {os.cpu_count()} cores; {args.workers} worker processes x "
        f"{args.concurrency} threads, batches of {args.batch}"
    )
    print(f"burst: {args.changes} changes due at one instant, all applied after {burst:.2f} s "
          f"({args.changes / burst:.0f} changes/s); goal 5 s")  # fmt: skip
    print(f"steady: {len(lags)} changes at {args.rate:.0f}/s, lag p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms; goal p99 < 250 ms")  # fmt: skip


def seed_more(url: str, count: int) -> list[str]:
    engine = make_engine(url)
    now = datetime.now(UTC)
    ids = [new_id("con") for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(Connection),
            [
                {"id": i, "customer_id": "cus_bench", "location_id": "PL-BENCH",
                 "status": "active", "bandwidth_mbps": 10, "committed_mbps": 10,
                 "created_by": "bench", "created_at": now, "updated_at": now}
                for i in ids
            ],
        )  # fmt: skip
        # The capacity counter as orders would have left it (`schedule` does not raise it:
        # the roomy location never refuses, and applying the change settles the figures).
        conn.execute(
            update(Location)
            .where(Location.id == "PL-BENCH")
            .values(committed_mbps=Location.committed_mbps + 10 * count)
        )
    engine.dispose()
    return ids


if __name__ == "__main__":
    main()
