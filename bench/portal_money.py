"""The portal's usage page for a big customer, on PostgreSQL (docs/performance.md, the
portal's section of issue 18).

Seeds the hourly usage lines of one customer with C connections for H hours of a month
(SQL, generate_series: what rating would leave), then times, in one process and one run:
- the rows the page summed before: `billing.usage.usage(granularity=day)` (the API's
  `GET /usage`), every hourly line read into Python, the baseline;
- what the page reads now: `money_pages.usage_view` (the chart's sums per hour in SQL, the
  lines from the statement's maintained intervals, one per connection here);
- the whole page through the ASGI app (session check, the sums, Jinja2, the chart).

    IOD_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench \\
        .venv/bin/python bench/portal_money.py [C] [H] [--runs N] [--skip-before]

The database's schema is dropped and created anew: give it a database of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from iod.app import build_services, create_app
from iod.auth.tokens import Principal
from iod.billing import statements
from iod.billing import usage as usage_service
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.models import PortalUser
from iod.portal import money_pages
from iod.portal import service as people

MONTH = "2030-04"


def timed(work: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """The median of `runs` timings in ms, and the last result."""
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("connections", type=int, nargs="?", default=10_000)
    parser.add_argument("hours", type=int, nargs="?", default=24)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-before", action="store_true", help="not the baseline (slow)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    url = os.environ["IOD_BENCH_DATABASE_URL"]
    engine = make_engine(url, pool_size=2, max_overflow=2)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(engine)
    db = Database(engine)
    start, end = statements.month_bounds(MONTH)
    clock = FrozenClock(end - timedelta(days=1))
    data = Path(tempfile.mkdtemp(prefix="iod-bench-portal-money-"))
    services = build_services(Settings(data_dir=data, database_url=url), db=db, clock=clock)
    with db.write() as session:
        customer = customers.create_customer(session, clock, "big").id
    began = time.perf_counter()
    with db.write() as session:
        # A tenth at 1 Gbps, the rest at 100 Mbps, every hour whole.
        session.execute(text(
            "INSERT INTO usage_lines (connection_id, hour, customer_id, start_at, end_at, "
            "seconds, tier_mbps, status, currency, hourly_minor, amount_minor, "
            "monthly_cap_minor, source) "
            "SELECT 'con_big' || lpad(c::text, 22, '0'), :start + h * interval '1 hour', "
            ":customer, :start + h * interval '1 hour', :start + (h + 1) * interval '1 hour', "
            "3600, CASE WHEN c % 10 = 0 THEN 1000 ELSE 100 END, 'active', 'USD', "
            "CASE WHEN c % 10 = 0 THEN 208 ELSE 46 END, CASE WHEN c % 10 = 0 THEN 208 ELSE 46 "
            "END, NULL, 'price:bench' "
            "FROM generate_series(0, :c - 1) AS c, generate_series(0, :h - 1) AS h"
        ), {"c": args.connections, "h": args.hours, "start": start,
            "customer": customer})  # fmt: skip
        # The statement's intervals the rating maintains beside them: one per connection.
        session.execute(text(
            "INSERT INTO statement_intervals (customer_id, month, connection_id, tier_mbps, "
            "status, currency, hourly_minor, monthly_cap_minor, source, start_at, end_at, "
            "seconds, amount_minor) "
            "SELECT :customer, :month, 'con_big' || lpad(c::text, 22, '0'), "
            "CASE WHEN c % 10 = 0 THEN 1000 ELSE 100 END, 'active', 'USD', "
            "CASE WHEN c % 10 = 0 THEN 208 ELSE 46 END, NULL, 'price:bench', :start, "
            ":start + :h * interval '1 hour', :h * 3600, "
            ":h * CASE WHEN c % 10 = 0 THEN 208 ELSE 46 END "
            "FROM generate_series(0, :c - 1) AS c"
        ), {"c": args.connections, "h": args.hours, "start": start, "customer": customer,
            "month": MONTH})  # fmt: skip
        statements.ensure(session, customer, MONTH, start)
        session.execute(text(
            "INSERT INTO metered_hours (hour, completed_at) VALUES (:last, :last)"
        ), {"last": start + timedelta(hours=args.hours - 1)})  # fmt: skip
    with db.write() as session:
        session.execute(text("ANALYZE usage_lines"))
        session.execute(text("ANALYZE statement_intervals"))
    lines = args.connections * args.hours
    print(f"seeded {lines:,} hourly lines ({args.connections:,} connections x {args.hours} h) "
          f"in {time.perf_counter() - began:.1f} s")  # fmt: skip

    principal = Principal("usr_bench", customer, frozenset({"read"}), 0.0)

    def before() -> Any:
        with db.read() as session:
            return usage_service.usage(session, principal, start, end, None, "day")

    def now() -> Any:
        with db.read() as session:
            return money_pages.usage_view(session, customer, MONTH)

    new_ms, new = timed(now, args.runs)
    assert len(new["lines"]) == args.connections, len(new["lines"])
    print(f"{'the sums (median of ' + str(args.runs) + ')':44} {'ms':>10}")
    if not args.skip_before:
        old_ms, old = timed(before, args.runs)
        assert old["totals"] == new["totals"], (old["totals"], new["totals"])
        print(f"{'before: every hourly line read (the API day)':44} {old_ms:10.1f}")
    ratio = "" if args.skip_before else f"  ({old_ms / new_ms:.1f}x faster)"
    print(f"{'now: summed in the database':44} {new_ms:10.1f}{ratio}")

    with db.write() as session:
        user = people.create_user(session, clock, customer, "bench@example.com", "viewer")
        row = session.get(PortalUser, user.id)
        assert row is not None
        cookie = people.start_session(
            session, clock, services.secret_hasher, row, people.PortalPolicy.of(services.settings),
            "bench",
        ).session_id  # fmt: skip
    app = create_app(services, run_worker=False)
    with TestClient(app, cookies={"iod_portal": cookie}) as client:

        def page() -> int:
            answer = client.get(f"/portal/usage?month={MONTH}")
            assert answer.status_code == 200 and "svg" in answer.text, answer.text[:300]
            return len(answer.content)

        page_ms, size = timed(page, args.runs)
    print(f"{'the whole page (ASGI, in process)':44} {page_ms:10.1f}  ({size / 1e6:.1f} MB)")
    db.dispose()


if __name__ == "__main__":
    main()
