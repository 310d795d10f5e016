"""Metering through the worker (catch-up after downtime) on both databases, and concurrent
raters on PostgreSQL: every connection hour rated exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select

from iod.app import Services
from iod.billing import metering, statements
from iod.customers import service as customers
from iod.infra.db import Database
from iod.jobs.periodic import Scheduler
from iod.models import (
    Connection,
    Event,
    Location,
    MeteredHour,
    Price,
    Statement,
    StatusTransition,
    UsageHour,
    UsageLine,
)

T0 = datetime(2030, 6, 1, 8, 30, tzinfo=UTC)
LOC = "METER-TEST"


def seed(db: Database, clock, n: int, t0: datetime = T0, suspended: bool = False) -> str:  # type: ignore[no-untyped-def]
    """`n` connections of one customer, active from t0 + 1 minute (suspended from t0 + 2
    minutes if `suspended`), 100 Mbps at 0.46."""
    with db.write() as session:
        customer = customers.create_customer(session, clock, "Metered")
        session.execute(insert(Location).values(
            id=LOC, name="m", address="a", capacity_mbps=100_000, tiers_mbps=[100],
            ipv4_pool="10.200.0.0/16", ipv4_next=0, committed_mbps=0, created_at=t0,
            updated_at=t0))  # fmt: skip
        session.execute(insert(Price).values(
            id="prc_test", location_id=LOC, tier_mbps=100, currency="USD", hourly_minor=46,
            effective_from=t0 - timedelta(days=1), created_at=t0))  # fmt: skip
        ids = [f"con_meter{i:022d}" for i in range(n)]
        session.execute(insert(Connection), [
            {"id": cid, "customer_id": customer.id, "location_id": LOC,
             "status": "suspended" if suspended else "active",
             "bandwidth_mbps": 100, "committed_mbps": 100, "created_by": "t",
             "created_at": t0, "updated_at": t0}
            for cid in ids
        ])  # fmt: skip
        session.execute(insert(StatusTransition), [
            row for cid in ids for row in (
                {"connection_id": cid, "from_status": None, "to_status": "provisioning",
                 "reason": "t", "at": t0},
                {"connection_id": cid, "from_status": "provisioning", "to_status": "active",
                 "reason": "t", "at": t0 + timedelta(minutes=1)},
                *([{"connection_id": cid, "from_status": "active", "to_status": "suspended",
                    "reason": "t", "at": t0 + timedelta(minutes=2)}] if suspended else []),
            )
        ])  # fmt: skip
    return customer.id


def totals(db: Database) -> tuple[int, int, int, int]:
    with db.read() as session:
        hours = session.scalar(select(func.count()).select_from(UsageHour)) or 0
        seconds = session.scalar(select(func.sum(UsageLine.seconds))) or 0
        complete = session.scalar(select(func.count()).select_from(MeteredHour)) or 0
        rated = session.scalar(
            select(func.count()).select_from(Event).where(Event.name == "usage.rated")
        ) or 0  # fmt: skip
    return hours, int(seconds), complete, rated


def test_the_periodic_task_catches_up_after_downtime(services: Services) -> None:
    clock = services.clock
    clock.set(T0)  # type: ignore[attr-defined]
    seed(services.db, clock, 3)
    # Down for three days: the next run rates every hour since, in order, once.
    clock.set(T0 + timedelta(days=3, minutes=30))  # type: ignore[attr-defined]
    assert ("billing.metering", T0 + timedelta(days=3, minutes=30)) in Scheduler(
        services.db, clock
    ).run_if_due()
    services.worker().run_until_idle()
    hours, seconds, complete, rated = totals(services.db)
    # 08:00 on the first day to 08:00 three days later (the hour 08:00-09:00 has ended but
    # is rated after its settle delay, at the next run): 72 hours each.
    assert complete == 72 and hours == 3 * 72 and rated == 72
    assert seconds == 3 * (72 * 3600 - 31 * 60)  # active from 08:31
    services.worker().run_until_idle()
    assert totals(services.db) == (hours, seconds, complete, rated)
    assert_intervals_match(services.db, "2030-06")


def test_concurrent_raters_rate_each_hour_once(database: Database, clock) -> None:  # type: ignore[no-untyped-def]
    if database.engine.dialect.name != "postgresql":
        pytest.skip("several workers rate at once on PostgreSQL only (SQLite: one writer)")
    seed(database, clock, 60)
    now = T0 + timedelta(hours=6, minutes=10)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def rater() -> None:
        try:
            start.wait()
            for _ in range(20):
                with database.write() as session:
                    metering.rate_due(session, now, fraction=Decimal(1), settle_seconds=60,
                                      batch=7, budget=25)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rater) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    hours, seconds, complete, rated = totals(database)
    assert (hours, complete, rated) == (60 * 6, 6, 6)
    assert seconds == 60 * (6 * 3600 - 31 * 60)
    with database.read() as session:
        per_hour = session.execute(
            select(UsageLine.connection_id, UsageLine.hour, func.count())
            .group_by(UsageLine.connection_id, UsageLine.hour)
            .having(func.count() > 1)
        ).all()
    assert per_hour == []
    assert_intervals_match(database, "2030-06")


def assert_intervals_match(db: Database, month: str) -> None:
    """The statement intervals the rating maintained = those recomputed from the lines."""
    with db.read() as session:
        for statement in session.scalars(select(Statement)).all():
            kept = statements.maintained(session, statement)
            assert kept == statements.recomputed(session, statement.customer_id, month)
            assert kept
