"""The schedule planner: a periodic task that plans each active schedule's transitions a
horizon ahead (`IOD_SCHEDULES_HORIZON_HOURS`, 48) as ordinary scheduled bandwidth changes.

Each run plans up to `IOD_SCHEDULES_PLAN_BATCH` schedules in its job's transaction and, when
more may be due, enqueues a follow-up job for the next ones (same lock key, so they run one
after the other). Reruns after a crash plan nothing twice: a schedule's `planned_until` and
the `schedule_transitions` primary key move in the transaction that creates the changes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from iod.connections.service import Policy
from iod.jobs import queue
from iod.jobs.registry import JobRef, TaskContext, periodic, task
from iod.schedules import service

PLAN = "schedules.plan"
PLAN_MORE = "schedules.plan_more"
LOCK_KEY = "schedules:plan"


def settings_of(ctx: TaskContext) -> tuple[Policy, service.Planning]:
    s = ctx.settings
    policy = Policy(
        max_attempts=s.job_max_attempts,
        max_schedule_days=s.max_schedule_days,
        max_pending_changes=s.max_pending_changes,
    )
    planning = service.Planning(
        horizon=timedelta(hours=s.schedules_horizon_hours), batch=s.schedules_plan_batch
    )
    return policy, planning


def _run(session: Session, job: JobRef, ctx: TaskContext, after: str | None) -> None:
    policy, planning = settings_of(ctx)
    _, last = service.plan_due(session, ctx.clock, policy, planning, after)
    if last is not None:
        now = ctx.clock.now()
        queue.enqueue(
            session,
            PLAN_MORE,
            run_at=now,
            now=now,
            max_attempts=job.max_attempts,
            args={"after": last},
            lock_key=LOCK_KEY,
        )


@periodic(PLAN, every="15m")
def _plan(session: Session, job: JobRef, ctx: TaskContext) -> None:
    _run(session, job, ctx, None)


@task(PLAN_MORE)
def _plan_more(session: Session, job: JobRef, ctx: TaskContext) -> None:
    _run(session, job, ctx, str(job.args["after"]))
