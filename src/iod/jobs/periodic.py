"""Enqueues the periods of periodic tasks as they come due, once each across all processes.

Every worker runs a `Scheduler`. When a period of a registered periodic task has begun, it
inserts the row (task, period start) into `periodic_runs` with ON CONFLICT DO NOTHING and, if
its insert is the one that happened, enqueues the task's job in the same transaction: the
primary key makes each period run once however many processes race for it. Periods missed
while nothing ran (downtime) are enqueued after the last one recorded, each once and in
order (they share the lock key `periodic:<task>`), at most `max_catch_up` of them. A task
never seen before starts with the current period. Between periods the scheduler opens no
transaction: it knows when the next one begins.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from iod.infra.clock import Clock
from iod.infra.db import Database, insert_new
from iod.jobs import queue
from iod.jobs.registry import PERIODIC, Periodic
from iod.models import PeriodicRun

log = structlog.get_logger("iod.periodic")

_MAX_STEPS = 100_000  # ticks walked to catch up, at most (a cron every minute: 69 days)


def lock_key(name: str) -> str:
    return f"periodic:{name}"


def due_periods(entry: Periodic, last: datetime | None, now: datetime) -> list[datetime]:
    """The periods to enqueue at `now`, oldest first, given the last one recorded."""
    latest = entry.schedule.latest(now)
    if last is None:
        return [latest]
    if last >= latest:
        return []
    missed: deque[datetime] = deque(maxlen=entry.max_catch_up)
    tick = entry.schedule.after(last)
    steps = 0
    while tick <= latest and steps < _MAX_STEPS:
        missed.append(tick)
        tick = entry.schedule.after(tick)
        steps += 1
    if not missed or missed[-1] != latest:
        missed.append(latest)  # a gap longer than the walk: the current period still runs
    return list(missed)


def last_period(session: Session, name: str) -> datetime | None:
    return session.scalar(select(func.max(PeriodicRun.period_at)).where(PeriodicRun.task == name))


def schedule(session: Session, now: datetime, max_attempts: int) -> list[tuple[str, datetime]]:
    """Enqueues every due period of every periodic task in the caller's transaction; returns
    the (task, period) pairs this call enqueued."""
    enqueued: list[tuple[str, datetime]] = []
    for name in sorted(PERIODIC):  # one order in every process: no deadlock between them
        entry = PERIODIC[name]
        for period in due_periods(entry, last_period(session, name), now):
            values = {"task": name, "period_at": period, "created_at": now}
            if not insert_new(session, PeriodicRun.__table__, values):
                continue  # another process has this period
            job = queue.enqueue(
                session,
                name,
                run_at=now,
                now=now,
                max_attempts=max_attempts,
                args={"period": period.isoformat()},
                lock_key=lock_key(name),
            )
            session.flush()
            session.execute(
                update(PeriodicRun)
                .where(PeriodicRun.task == name, PeriodicRun.period_at == period)
                .values(job_id=job.id)
            )
            enqueued.append((name, period))
    return enqueued


class Scheduler:
    """A worker's periodic-task scheduler; `run_if_due()` is cheap between periods."""

    def __init__(self, db: Database, clock: Clock, max_attempts: int = 5) -> None:
        self.db = db
        self.clock = clock
        self.max_attempts = max_attempts
        self.next_tick: datetime | None = None
        self._known: frozenset[str] = frozenset()

    def run_if_due(self) -> list[tuple[str, datetime]]:
        if not PERIODIC:
            return []
        now = self.clock.now()
        known = self._known == frozenset(PERIODIC)
        if known and self.next_tick is not None and now < self.next_tick:
            return []
        return self.run(now)

    def run(self, now: datetime | None = None) -> list[tuple[str, datetime]]:
        """Enqueues what is due now, then notes when the next period begins."""
        now = now or self.clock.now()
        with self.db.write() as session:
            enqueued = schedule(session, now, self.max_attempts)
        for name, period in enqueued:
            # debug: one line per period of every periodic task would fill the console.
            log.debug("periodic.enqueued", task=name, period=period.isoformat())
        entries = list(PERIODIC.values())
        self._known = frozenset(e.name for e in entries)
        self.next_tick = min(
            (e.schedule.after(e.schedule.latest(now)) for e in entries), default=None
        )
        return enqueued
