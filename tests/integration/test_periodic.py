"""Periodic tasks: once per period across processes, missed periods caught up once each, in
order, after downtime. On SQLite and PostgreSQL; three worker processes on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from iod import features
from iod.app import Services
from iod.infra.db import Database
from iod.jobs import registry
from iod.jobs.periodic import Scheduler, due_periods
from iod.jobs.registry import Periodic, Schedule, parse_every
from iod.models import Job, PeriodicRun
from tests.conftest import postgres_url
from tests.integration import periodic_feature

ROOT = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)


@pytest.fixture
def only_tick() -> Iterator[None]:
    """The registry holds the test's periodic task alone (the features' are put back)."""
    # Loaded first: saved here and put back, they are there for the tests that follow even
    # when this one runs first (a feature module registers only when first imported).
    features.load()
    saved_periodic, saved_tasks = dict(registry.PERIODIC), dict(registry.TASKS)
    registry.PERIODIC.clear()
    periodic_feature.register("1h")
    periodic_feature.SEEN.clear()
    yield
    registry.PERIODIC.clear()
    registry.PERIODIC.update(saved_periodic)
    registry.TASKS.clear()
    registry.TASKS.update(saved_tasks)


def _runs(db: Database) -> list[datetime]:
    with db.read() as session:
        return list(
            session.scalars(
                select(PeriodicRun.period_at)
                .where(PeriodicRun.task == periodic_feature.NAME)
                .order_by(PeriodicRun.period_at)
            )
        )


def _tick_jobs(db: Database) -> list[tuple[str, str]]:
    with db.read() as session:
        rows = session.scalars(
            select(Job).where(Job.kind == periodic_feature.NAME).order_by(Job.id)
        )
        return [(str(j.args["period"]), j.state) for j in rows]


def test_schedules_parse_and_align() -> None:
    assert parse_every("90s") == timedelta(seconds=90)
    assert parse_every("1h") == HOUR
    for bad in ("0s", "1w", "h", "-1h", ""):
        with pytest.raises(ValueError):
            parse_every(bad)
    with pytest.raises(ValueError):
        Schedule(cron="not a cron")
    with pytest.raises(ValueError):
        Schedule()
    at = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert Schedule(every=HOUR).latest(at) == datetime(2030, 5, 6, 7, tzinfo=UTC)
    nightly = Schedule(cron="30 2 * * *")
    assert nightly.latest(at) == datetime(2030, 5, 6, 2, 30, tzinfo=UTC)
    assert nightly.after(nightly.latest(at)) == datetime(2030, 5, 7, 2, 30, tzinfo=UTC)
    # Exactly on a tick, that tick is the current period.
    assert nightly.latest(datetime(2030, 5, 6, 2, 30, tzinfo=UTC)).hour == 2
    entry = Periodic("t", Schedule(every=HOUR), max_catch_up=3)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    assert due_periods(entry, None, base + timedelta(minutes=5)) == [base]
    assert due_periods(entry, base, base + timedelta(minutes=59)) == []
    assert due_periods(entry, base, base + 10 * HOUR) == [base + h * HOUR for h in (8, 9, 10)]


@pytest.mark.usefixtures("only_tick")
def test_once_per_period_and_missed_periods_caught_up_in_order(services: Services) -> None:
    clock = services.clock
    clock.set(datetime(2030, 1, 1, 9, 20, tzinfo=UTC))  # type: ignore[attr-defined]
    first, second = Scheduler(services.db, clock), Scheduler(services.db, clock)
    assert first.run_if_due() == [(periodic_feature.NAME, datetime(2030, 1, 1, 9, tzinfo=UTC))]
    assert second.run_if_due() == [], "another process: the period is taken"
    assert first.run_if_due() == [] and first.next_tick == datetime(2030, 1, 1, 10, tzinfo=UTC)
    services.worker().run_until_idle()
    # Down from 9:20 until 12:30: three periods were missed (10, 11, 12 o'clock).
    clock.set(datetime(2030, 1, 1, 12, 30, tzinfo=UTC))  # type: ignore[attr-defined]
    restarted = Scheduler(services.db, clock)
    assert [p.hour for _, p in restarted.run_if_due()] == [10, 11, 12]
    assert [p.hour for _, p in Scheduler(services.db, clock).run_if_due()] == []
    services.worker().run_until_idle()
    assert [p.hour for p in _runs(services.db)] == [9, 10, 11, 12]
    assert [s for _, s in _tick_jobs(services.db)] == ["done"] * 4
    assert [datetime.fromisoformat(p).hour for p in periodic_feature.SEEN] == [9, 10, 11, 12]


def test_the_retention_tasks_are_registered_periodic(services: Services) -> None:
    assert {"retention.idempotency_keys", "retention.events", "retention.jobs"} <= set(
        registry.PERIODIC
    )


def test_three_worker_processes_run_each_period_once() -> None:
    """Three `run_forever` loops in three processes on one PostgreSQL, a 1-second task, for
    about 4 seconds: every period from the first to the last is run exactly once."""
    url = postgres_url()
    from tests.conftest import _prepare_postgres

    db = _prepare_postgres()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IOD_LOG_LEVEL": "WARNING"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.periodic_feature", url, "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    try:
        runs = _runs(db)
        jobs = _tick_jobs(db)
        assert len(runs) >= 3, runs
        # Consecutive seconds, none missing and none twice; one job each, all done (the
        # last may still be queued when the processes stopped).
        assert runs == [runs[0] + timedelta(seconds=i) for i in range(len(runs))]
        assert sorted(datetime.fromisoformat(p) for p, _ in jobs) == runs
        assert all(state == "done" for _, state in jobs[:-1])
    finally:
        db.dispose()


@pytest.mark.usefixtures("only_tick")
def test_a_periodic_runs_housekeeping_is_logged_at_debug(services: Services) -> None:
    """`make run`'s console is not a scroll of periodic runs (the traffic sampler's every
    10 s): their enqueue and `job.done` are debug lines; a connection's job stays at info."""
    from structlog.testing import capture_logs

    clock = services.clock
    clock.set(datetime(2030, 1, 1, 9, 20, tzinfo=UTC))  # type: ignore[attr-defined]
    with capture_logs() as logs:
        Scheduler(services.db, clock).run_if_due()
        services.worker().run_until_idle()
    levels = {(e["event"], e["log_level"]) for e in logs if e["event"] != "worker.batch"}
    assert ("periodic.enqueued", "debug") in levels
    assert ("job.done", "debug") in levels
    assert ("job.done", "info") not in levels
