"""Metering and statements at scale, on PostgreSQL (docs/performance.md, "Metering").

1. Rate one hour of N connections (default 100,000) with one worker: `metering.rate_due`
   in one transaction, as the periodic task runs it. A tenth of the connections had a
   bandwidth change in the hour (two lines), the rest one line.
2. A month's statement of a customer with C connections (default 10,000) over a whole
   month: the statement intervals the rating maintains (one per connection and tier
   interval) seeded with SQL, then the statement built live (open), closed (built and
   stored once) and read closed.

    IOD_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench \
        .venv/bin/python bench/metering.py [N] [C]

The database's schema is dropped and created anew: give it a database of its own.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, insert, select, text

from iod.billing import metering, statements
from iod.billing import repository as billing_repo
from iod.infra import migrate
from iod.infra.db import Database, make_engine
from iod.infra.ids import new_id
from iod.models import (
    BandwidthChange,
    Connection,
    Customer,
    Location,
    Price,
    Statement,
    StatusTransition,
    UsageLine,
)

HOUR_START = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
MONTH = "2030-04"
LOCATION = "BENCH-METER-0001"
BATCH = 10_000


def fresh(url: str) -> Database:
    engine = make_engine(url, pool_size=2, max_overflow=2)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(engine)
    return Database(engine)


def seed_hour(db: Database, n: int) -> None:
    created = HOUR_START - timedelta(days=1)
    with db.write() as session:
        session.execute(insert(Customer), [
            {"id": f"cus_{i:06d}", "name": f"bench {i}", "created_at": created}
            for i in range(1000)
        ])  # fmt: skip
        session.execute(insert(Location).values(
            id=LOCATION, name="Metering bench", address="1 Loopback Way",
            capacity_mbps=10_000_000, tiers_mbps=[100, 1000], ipv4_pool="10.0.0.0/8",
            ipv4_next=0, committed_mbps=0, created_at=created, updated_at=created,
        ))  # fmt: skip
        session.execute(insert(Price), [
            {"id": new_id("prc"), "location_id": LOCATION, "tier_mbps": tier, "currency": "USD",
             "hourly_minor": rate, "monthly_cap_minor": rate * 720,
             "effective_from": created - timedelta(days=30), "created_at": created}
            for tier, rate in ((100, 46), (1000, 208))
        ])  # fmt: skip
    for start in range(0, n, BATCH):
        ids = [f"con_bench{i:022d}" for i in range(start, min(n, start + BATCH))]
        with db.write() as session:
            session.execute(insert(Connection), [
                {"id": cid, "customer_id": f"cus_{i % 1000:06d}", "location_id": LOCATION,
                 "status": "active", "bandwidth_mbps": 1000 if i % 10 == 0 else 100,
                 "committed_mbps": 100, "created_by": "bench", "created_at": created,
                 "updated_at": created}
                for i, cid in enumerate(ids, start)
            ])  # fmt: skip
            session.execute(insert(StatusTransition), [
                row
                for cid in ids
                for row in (
                    {"connection_id": cid, "from_status": None, "to_status": "provisioning",
                     "reason": "bench", "at": created},
                    {"connection_id": cid, "from_status": "provisioning", "to_status": "active",
                     "reason": "bench", "at": created + timedelta(seconds=30)},
                )
            ])  # fmt: skip
            session.execute(insert(BandwidthChange), [
                {"id": f"chg_bench{i:022d}", "connection_id": cid, "from_mbps": 100,
                 "to_mbps": 1000, "effective_at": HOUR_START + timedelta(minutes=20),
                 "status": "applied", "requested_by": "bench", "requested_at": created,
                 "applied_at": HOUR_START + timedelta(minutes=20)}
                for i, cid in enumerate(ids, start)
                if i % 10 == 0
            ])  # fmt: skip
    with db.write() as session:  # every hour before the benched one is rated already
        session.execute(insert(billing_repo.METERED_HOURS).values(
            hour=HOUR_START - timedelta(hours=1), completed_at=HOUR_START))  # fmt: skip
        session.execute(text("ANALYZE"))


def bench_hour(db: Database, n: int) -> None:
    seed_hour(db, n)
    began = time.perf_counter()
    with db.write() as session:
        rated = metering.rate_due(
            session, HOUR_START + timedelta(hours=1, minutes=5), fraction=Decimal(1),
            settle_seconds=60, batch=5000, budget=10 * n,
        )  # fmt: skip
    elapsed = time.perf_counter() - began
    with db.read() as session:
        lines = session.scalar(select(func.count()).select_from(UsageLine))
    print(f"rate one hour of {n:,} connections: {elapsed:.2f} s "
          f"({rated:,} connection-hours, {lines:,} lines, {n / elapsed:,.0f}/s)")  # fmt: skip


def bench_statement(db: Database, c: int) -> None:
    start, end = statements.month_bounds(MONTH)
    hours = int((end - start).total_seconds() // 3600)
    began = time.perf_counter()
    with db.write() as session:
        session.execute(text("TRUNCATE usage_lines, usage_hours, statements, metered_hours, "
                             "statement_intervals"))  # fmt: skip
        # What a month of rating leaves for the statement: one interval per connection (the
        # hourly lines themselves are not read by a statement: not seeded here).
        session.execute(text(
            "INSERT INTO statement_intervals (customer_id, month, connection_id, tier_mbps, "
            "status, currency, hourly_minor, monthly_cap_minor, source, start_at, end_at, "
            "seconds, amount_minor) "
            "SELECT 'cus_month', :month, 'con_month' || lpad(c::text, 22, '0'), 100, 'active', "
            "'USD', 46, 33120, 'price:bench', :start, :end, :hours * 3600, :hours * 46 "
            "FROM generate_series(0, :c - 1) AS c"
        ), {"c": c, "start": start, "end": end, "hours": hours, "month": MONTH})  # fmt: skip
        session.execute(insert(billing_repo.METERED_HOURS).values(
            hour=end - timedelta(hours=1), completed_at=end))  # fmt: skip
        statements.ensure(session, "cus_month", MONTH, end)
    with db.write() as session:
        session.execute(text("ANALYZE statement_intervals"))
    seeded = time.perf_counter() - began
    print(f"seeded the intervals of {c:,} connections x {hours} h in {seeded:.1f} s")
    with db.read() as session:
        statement = billing_repo.statement_by_month(session, "cus_month", MONTH)
        assert statement is not None
        statement.status = statements.OPEN
        began = time.perf_counter()
        doc = statements.view(session, statement)
        live = time.perf_counter() - began
    print(f"open statement of {c:,} connections, built live: {live:.2f} s "
          f"({len(doc['lines']):,} lines, total {doc['totals'][0]['amount']} USD)")  # fmt: skip
    began = time.perf_counter()
    with db.write() as session:
        statements.close_due(session, end + timedelta(minutes=5))
    closing = time.perf_counter() - began
    began = time.perf_counter()
    with db.read() as session:
        statement = session.scalars(select(Statement)).one()
        doc = statements.view(session, statement)
    read = time.perf_counter() - began
    print(f"close it (build + store once): {closing:.2f} s; read it closed: {read:.3f} s")


def main() -> None:
    logging.disable(logging.WARNING)
    url = os.environ.get(
        "IOD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench"
    )
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    db = fresh(url)
    try:
        bench_hour(db, n)
        bench_statement(db, c)
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
