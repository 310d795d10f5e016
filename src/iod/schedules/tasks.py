"""The schedule planner: a periodic task that plans each active schedule's transitions a
horizon ahead (`IOD_SCHEDULES_HORIZON_HOURS`, 48) as ordinary scheduled bandwidth changes.

A job's `act` (no transaction of the worker open) plans up to `ROUNDS_PER_JOB` rounds of
`IOD_SCHEDULES_PLAN_AT_ONCE` batches of `IOD_SCHEDULES_PLAN_BATCH` schedules in flight on
PostgreSQL (one at a time on SQLite, which has one writer), each in a transaction of its own
(`service.plan_concurrently`); when more may be due it enqueues a follow-up job for the next
ones (same lock key, so they run one after the other). Reruns after a crash plan nothing
twice: a schedule's `planned_until` and the `schedule_transitions` primary key move in the
transaction that creates its changes, and a schedule planned meanwhile is no longer due. A
crash after the follow-up was enqueued and before the job was finished runs the job again:
its schedules are planned (no longer due), so it plans the next ones and enqueues a second
follow-up chain; the two run one after the other (same lock key) and plan nothing twice.
The database unavailable during `act` defers the job (`Deferred`: not an attempt), as an
outage in the claim's transaction did, rather than spending its attempts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from iod.connections.service import Policy
from iod.infra.db import is_unavailable
from iod.jobs import queue
from iod.jobs.registry import Deferred, JobRef, TaskContext, periodic, task
from iod.schedules import service

PLAN = "schedules.plan"
PLAN_MORE = "schedules.plan_more"
LOCK_KEY = "schedules:plan"
# Batches per job, as many rounds of the batches in flight: a job stays short (the worker
# finishes it, then claims its follow-up) without paying a job's bookkeeping per batch.
ROUNDS_PER_JOB = 4
OUTAGE_RETRY_SECONDS = 5.0


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


def at_once(ctx: TaskContext) -> int:
    """Batches in flight: the setting on PostgreSQL; one on SQLite (one writer at a time)."""
    assert ctx.db is not None  # the worker's database
    if ctx.db.engine.dialect.name != "postgresql":
        return 1
    return ctx.settings.schedules_plan_at_once


def _act(ctx: TaskContext, prepared: dict[str, Any], operation_id: str) -> None:
    try:
        _plan_now(ctx, prepared)
    except Exception as exc:
        if is_unavailable(exc):
            raise Deferred(OUTAGE_RETRY_SECONDS, "database unavailable") from exc
        raise


def _plan_now(ctx: TaskContext, prepared: dict[str, Any]) -> None:
    assert ctx.db is not None  # the worker's database
    policy, planning = settings_of(ctx)
    parallel = at_once(ctx)
    _, last = service.plan_concurrently(
        ctx.db, ctx.clock, policy, planning, prepared["after"],
        batches=ROUNDS_PER_JOB * parallel, at_once=parallel,
    )  # fmt: skip
    if last is not None:
        now = ctx.clock.now()
        with ctx.db.write() as session:
            queue.enqueue(
                session,
                PLAN_MORE,
                run_at=now,
                now=now,
                max_attempts=prepared["max_attempts"],
                args={"after": last},
                lock_key=LOCK_KEY,
            )


def _prepared(job: JobRef, after: str | None) -> dict[str, Any]:
    return {"after": after, "max_attempts": job.max_attempts}


@periodic(PLAN, every="15m", act=_act)
def _plan(session: Session, job: JobRef, ctx: TaskContext) -> dict[str, Any]:
    return _prepared(job, None)


@task(PLAN_MORE, act=_act)
def _plan_more(session: Session, job: JobRef, ctx: TaskContext) -> dict[str, Any]:
    return _prepared(job, str(job.args["after"]))
