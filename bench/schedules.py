"""Planning 48 hours of schedules for N connections on PostgreSQL, with one planner.

Seeds N active connections, each with a schedule (weekdays 08:00-18:00 1 Gbps in one of
three zones, 100 Mbps otherwise, a lunch-time rule on MO/WE/FR), never planned, with bulk
INSERTs; then times `schedules.service.plan_concurrently` job after job (as the periodic
task and its follow-up jobs do, one after the other: one worker) until nothing is due; a job
has `--at-once` batches in flight, each in a transaction of its own. The planner is
set-based (`schedules.planner`): a batch's transitions are evaluated in Python, checked by
`update_bandwidth`'s rules in memory and written with a few multi-row statements (COPY).

Schedules of equal content over the same window are evaluated once per batch; `--distinct`
gives every schedule its own office-hours start (08:MM:SS), so none is shared.

THE DATABASE IS WIPED (schema dropped): give one of your own.

    make bench-schedules BENCH_SCHEDULES_ARGS="--url postgresql+psycopg://…/mine -n 1000"
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import structlog
from sqlalchemy import Engine, Table, insert, text, update

from iod.app import build_services
from iod.connections.service import Policy
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.infra.ids import new_id
from iod.locations import service as locations
from iod.models import Connection, Location, Schedule
from iod.schedules import service, tasks

LOCATION = {"id": "BENCH000001", "name": "Bench", "address": "-", "capacity": "100 Gbps"}
ZONES = ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe")
RULES = [
    {"mbps": 1000, "start": "08:00", "end": "18:00",
     "recurrence": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"},
    {"mbps": 500, "start": "12:00", "end": "13:00", "recurrence": "FREQ=WEEKLY;BYDAY=MO,WE,FR"},
]  # fmt: skip


def _rules(index: int) -> list[dict[str, object]]:
    """RULES with an office-hours start of its own (08:MM:SS) for each index below 10,800."""
    office = {**RULES[0], "start": f"08:{index // 3 // 60 % 60:02d}:{index // 3 % 60:02d}"}
    return [office, RULES[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("IOD_BENCH_SCHEDULES_DATABASE_URL"))
    parser.add_argument("-n", type=int, default=1000, help="connections (one schedule each)")
    parser.add_argument("--batch", type=int, default=500, help="schedules per planner job")
    parser.add_argument("--distinct", action="store_true", help="no two schedules alike")
    parser.add_argument(
        "--at-once", type=int, default=2,
        help="batches in flight (IOD_SCHEDULES_PLAN_AT_ONCE; 1: one after the other)",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.url or not args.url.startswith("postgresql"):
        sys.exit("--url (or IOD_BENCH_SCHEDULES_DATABASE_URL): a PostgreSQL database to wipe")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    engine = make_engine(args.url, pool_size=2 + 2 * args.at_once, max_overflow=0)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(engine)
    db = Database(engine)
    # Monday 2030-01-07 00:00 UTC: a weekday, so 48 h hold two office days in every zone.
    clock = FrozenClock(datetime(2030, 1, 7, tzinfo=UTC))
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="iod-bench-sched-")),
                        periodic_tasks=False)  # fmt: skip
    services = build_services(settings, db=db, clock=clock)
    now = clock.now()
    with db.write() as session:
        locations.upsert(session, clock, locations.parse_catalog([LOCATION]))
        # Room for every connection at 1 Gbps (the catalog's own limit is lower).
        session.execute(
            update(Location).where(Location.id == LOCATION["id"]).values(capacity_mbps=2**31 - 1)
        )
        customer = customers.create_customer(session, clock, "bench")
        client = customers.create_client(
            session, clock, customer.id, "read write", hasher=services.secret_hasher
        )

    seeded = time.perf_counter()
    for first in range(0, args.n, 5000):
        count = min(5000, args.n - first)
        conns = [
            {"id": new_id("con"), "customer_id": customer.id, "location_id": LOCATION["id"],
             "status": "active", "bandwidth_mbps": 100, "committed_mbps": 100,
             "created_by": client.client_id, "created_at": now, "updated_at": now}
            for _ in range(count)
        ]  # fmt: skip
        schedules = [
            {"id": new_id("sch"), "customer_id": customer.id, "connection_id": c["id"],
             "time_zone": ZONES[i % 3], "default_mbps": 100,
             "rules": _rules(first + i) if args.distinct else RULES, "exceptions": [],
             "paused": False, "anchor": "2030-01-01", "version": 1, "planned_until": None,
             "created_by": client.client_id, "created_at": now, "updated_at": now}
            for i, c in enumerate(conns)
        ]  # fmt: skip
        with db.write() as session:  # Core INSERTs (the ORM's bulk INSERT costs more)
            session.connection().execute(insert(cast(Table, Connection.__table__)), conns)
            session.connection().execute(insert(cast(Table, Schedule.__table__)), schedules)
            session.execute(
                update(Location)
                .where(Location.id == LOCATION["id"])
                .values(committed_mbps=Location.committed_mbps + 100 * count)
            )
    print(f"seeded {args.n} connections and schedules in {time.perf_counter() - seeded:.1f} s")

    planning = service.Planning(horizon=timedelta(hours=48), batch=args.batch)
    policy = Policy(max_pending_changes=100)
    backends = _backend_cpu(engine)
    started = time.perf_counter()
    cpu = time.process_time()
    total, jobs, after = 0, 0, None
    while True:  # the planner's jobs, one after the other, as one worker runs them
        planned, after = service.plan_concurrently(
            db, clock, policy, planning, after,
            batches=tasks.ROUNDS_PER_JOB * args.at_once, at_once=args.at_once,
        )  # fmt: skip
        total += planned
        jobs += 1
        if after is None:
            break
    wall = time.perf_counter() - started
    cpu_here = time.process_time() - cpu
    server = _backend_cpu(engine)
    server_cpu = (
        f"{sum(server.values()) - sum(backends.get(pid, 0.0) for pid in server):.1f} s"
        if server and backends
        else "unknown"
    )
    print(
        f"planned {total} transitions of {args.n} schedules in {wall:.1f} s wall, "
        f"{cpu_here:.1f} s CPU here, {server_cpu} CPU of its PostgreSQL backends, {jobs} jobs: "
        f"{total / wall:.0f} transitions/s, {args.n / wall:.0f} schedules/s; "
        f"100,000 schedules at this rate: {100_000 / (args.n / wall):.0f} s"
    )
    db.dispose()


def _backend_cpu(engine: Engine) -> dict[int, float]:
    """CPU seconds (user + system) of each PostgreSQL backend of the database so far, read
    from /proc (empty when the server is on another host or /proc is not readable)."""
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        found: dict[int, float] = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


if __name__ == "__main__":
    main()
