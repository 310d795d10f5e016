"""The optimistic capacity check's fallback where the batch's rows are already on their way
(a COPY aborted inside the savepoint), and the planner's job killed after it enqueued its
follow-up: each transition planned once (test_schedules_optimistic.py has the rest)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from iod.app import Services
from iod.infra.clock import FrozenClock
from iod.models import ScheduleTransition
from iod.schedules import service
from tests.conftest import Tenant
from tests.integration.test_schedules_optimistic import _meanwhile, overcommit
from tests.integration.test_schedules_planning import POLICY, _schedules

# Ten days ahead: a batch of a few schedules owes well over `bulk.COPY_FROM` (100)
# transitions, so on PostgreSQL its changes go into a COPY.
LONG = service.Planning(horizon=timedelta(days=10), batch=10)


def test_a_stale_figure_met_in_the_middle_of_the_changes_copy_falls_back(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `_Stale` raised by a change that does not fit aborts the changes' COPY (psycopg
    sends CopyFail, the transaction is in error) inside the savepoint: the rollback to it
    must leave the transaction usable for the locked path."""
    _schedules(services, tenant, 6)
    clock.advance(timedelta(hours=1))

    reads = _meanwhile(monkeypatch, overcommit)
    with services.db.write() as session:
        service.plan_due(session, clock, POLICY, LONG, None)
    assert reads[True] == 1
    with services.db.read() as session:
        refused = session.scalar(
            select(func.count()).select_from(ScheduleTransition)
            .where(ScheduleTransition.outcome == "refused")
        )  # fmt: skip
    assert refused and refused >= 100


def test_the_planner_job_crashing_after_its_follow_up_plans_each_transition_once(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner's job through the worker (act, follow-up enqueued in a transaction of its
    own), killed between the follow-up's commit and its own finish, then run again."""
    from iod.jobs import queue
    from iod.jobs.worker import Worker
    from iod.models import Job
    from iod.schedules import tasks
    from tests.integration.test_schedules_planning import _expected, _planned, thirty_hours_later

    ids, created_until, before = thirty_hours_later(services, tenant, clock, 9)
    settings = services.settings.model_copy(
        update={"schedules_plan_batch": 1, "schedules_plan_at_once": 2}
    )
    worker = services.worker()
    worker.settings = settings
    worker.context = worker.context.__class__(
        worker.context.clock, settings, worker.context.driver, worker.context.db
    )
    with services.db.write() as session:
        queue.enqueue(
            session, tasks.PLAN_MORE, run_at=clock.now(), now=clock.now(), max_attempts=5,
            args={"after": ""}, lock_key=tasks.LOCK_KEY,
        )  # fmt: skip

    class Crash(BaseException):
        pass

    real = Worker._record

    def crash(self: Worker, acted: Any) -> Any:
        raise Crash

    monkeypatch.setattr(Worker, "_record", crash)
    with pytest.raises(Crash):
        worker.run_once()
    monkeypatch.setattr(Worker, "_record", real)
    clock.advance(timedelta(seconds=settings.job_lease_seconds + 1))
    worker.run_until_idle()
    planned_rows = _planned(services)
    assert len(planned_rows) == len(set(planned_rows)), "a transition was planned twice"
    added = len(planned_rows) - before
    assert added == _expected(services, ids, created_until, clock.now() + LONG.horizon / 5)
    with services.db.read() as session:
        kinds = session.execute(
            select(Job.kind, Job.state, Job.args).where(Job.kind == tasks.PLAN_MORE)
        ).all()
    assert all(state == "done" for _, state, _ in kinds), kinds


def test_a_change_that_does_not_fit_after_rows_went_into_the_copy_falls_back(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimistic pass streams changes into the COPY, then meets one that does not fit
    (`_Stale` mid-stream, after 50 rows); the transaction goes on with the locked pass."""
    from iod.schedules import planner

    _schedules(services, tenant, 6)
    clock.advance(timedelta(hours=1))
    real, calls = planner.fits, {"n": 0}

    def fits(capacity: Any, committed: Any, extra: Any) -> Any:
        if isinstance(capacity, int):
            calls["n"] += 1
            if calls["n"] == 51:  # once: the optimistic pass's 51st check
                return False
        return real(capacity, committed, extra)

    monkeypatch.setattr(planner, "fits", fits)
    with services.db.write() as session:
        service.plan_due(session, clock, POLICY, LONG, None)
    with services.db.read() as session:
        outcomes = dict(
            session.execute(
                select(ScheduleTransition.outcome, func.count())
                .where(ScheduleTransition.created_at == clock.now())
                .group_by(ScheduleTransition.outcome)
            ).all()
        )
    assert calls["n"] > 51 + 100  # the locked pass checked them all again
    assert set(outcomes) == {"planned"} and outcomes["planned"] >= 100, outcomes
