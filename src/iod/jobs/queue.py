"""Enqueue inside the caller's transaction; claim with a lease; finish or retry with backoff.

A job names a registered task (`iod.jobs.registry`) and carries JSON arguments. Jobs of one
lock key (a connection's are `connection:<id>`) run one at a time and in (scheduled_at, id)
order: a job is claimable only when no earlier unfinished job of its key exists and none
holds a live lease. Jobs without a key are never held back. `run_at` moves forward on
retries; `scheduled_at` never does, so a retry keeps its place.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from iod.infra.db import Database, TransactionSelect, TransactionSelectIn, TransactionWrite, uow
from iod.jobs.registry import TASKS
from iod.models import Job


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)
FINISHED = (JobState.DONE.value, JobState.FAILED.value)


def enqueue(
    session: Session,
    task: str,
    *,
    run_at: datetime,
    now: datetime,
    max_attempts: int,
    args: dict[str, Any] | None = None,
    lock_key: str | None = None,
    queue: str | None = None,
    connection_id: str | None = None,
    change_id: str | None = None,
) -> Job:
    """Adds the job to the caller's transaction: it commits or rolls back with the data.
    A job due now wakes the workers once the transaction commits (the unit of work).
    `queue`: by default the queue the task was registered with (`"default"` if unknown)."""
    job = Job(**new_job(task, run_at, now, max_attempts, args, lock_key, queue,
                        connection_id, change_id))  # fmt: skip
    session.add(job)
    if run_at <= now:
        uow.wake(session, "jobs")
    return job


def insert(session: Session, values: dict[str, Any]) -> None:
    """`enqueue` for the columns `new_job` made, written at once with an INSERT compiled
    once (`TransactionWrite`), for a caller that needs no Job object (issue 14): what it
    refers to must be written already (it is not ordered by a flush). Sent with the
    transaction's next round trip (`TransactionWrite.later`)."""
    _INSERT.later(session, values)
    if values["run_at"] <= values["created_at"]:
        uow.wake(session, "jobs")


def new_job(
    task: str,
    run_at: datetime,
    now: datetime,
    max_attempts: int,
    args: dict[str, Any] | None,
    lock_key: str | None,
    queue: str | None,
    connection_id: str | None,
    change_id: str | None,
) -> dict[str, Any]:
    """The columns of a new job (all but its id)."""
    if queue is None:
        registered = TASKS.get(task)
        queue = registered.queue if registered is not None else "default"
    return {
        "kind": task,
        "args": args or {},
        "lock_key": lock_key,
        "queue": queue,
        "connection_id": connection_id,
        "change_id": change_id,
        "state": JobState.QUEUED.value,
        "run_at": run_at,
        "scheduled_at": run_at,
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": now,
        "lease_until": None,
        "locked_by": None,
        "last_error": None,
        "finished_at": None,
    }


def _not_blocked(now: Any):  # type: ignore[no-untyped-def]
    earlier = aliased(Job)
    return ~exists().where(
        earlier.lock_key == Job.lock_key,  # NULL = NULL is not true: no key, never blocked
        earlier.id != Job.id,
        # An IN of values bound in the statement (not an expanding one): it is compiled once.
        earlier.state.in_([literal(state) for state in UNFINISHED]),
        or_(
            earlier.scheduled_at < Job.scheduled_at,
            and_(earlier.scheduled_at == Job.scheduled_at, earlier.id < Job.id),
            and_(earlier.state == JobState.RUNNING.value, earlier.lease_until > now),
        ),
    )


# The claim's two queries by the queues asked for, compiled once and run on the claim's
# transaction connection (`TransactionSelect`: `now` and `limit` are bound at each claim, the
# rows are plain named tuples with the Job's attribute names, no ORM loading): a worker
# claims every few milliseconds when busy, and in `iod serve` after every write (issue 14).
_CLAIMS: dict[frozenset[str] | None, tuple[TransactionSelect, ...]] = {}


def _claims(queues: Collection[str] | None) -> tuple[TransactionSelect, ...]:
    key = frozenset(queues) if queues is not None else None
    found = _CLAIMS.get(key)
    if found is None:
        now = bindparam("now", type_=Job.run_at.type)
        candidates = (
            and_(Job.state == JobState.QUEUED.value, Job.run_at <= now),
            and_(Job.state == JobState.RUNNING.value, Job.lease_until <= now),
        )
        queries = []
        for due in candidates:
            query = select(*_jobs.c).where(due, _not_blocked(now))
            if key is not None:  # OR of equalities: a compiled statement has no expanding IN
                query = query.where(or_(false(), *(Job.queue == name for name in sorted(key))))
            queries.append(
                TransactionSelect(
                    query.order_by(Job.run_at, Job.id)
                    .limit(bindparam("limit", type_=Integer))
                    .with_for_update(skip_locked=True, of=_jobs)
                )
            )
        found = _CLAIMS[key] = tuple(queries)
    return found


_jobs = cast(Table, Job.__table__)
_INSERT = TransactionWrite(_jobs.insert())
# The batch's statements, compiled once per power-of-two batch size (`TransactionSelectIn`):
# the lease of the jobs claimed, and their end once recorded.
_LEASE = TransactionSelectIn(
    _jobs.c.id,
    lambda ids: (
        _jobs.update()
        .where(ids)
        .values(
            state=JobState.RUNNING.value,
            attempts=_jobs.c.attempts + 1,
            lease_until=bindparam("until", type_=Job.lease_until.type),
            locked_by=bindparam("worker", type_=Job.locked_by.type),
        )
        .returning(_jobs.c.id)
    ),
)
_FINISH_MANY = TransactionSelectIn(
    _jobs.c.id,
    lambda ids: (
        _jobs.update()
        .where(
            ids,
            _jobs.c.locked_by == bindparam("worker", type_=Job.locked_by.type),
            _jobs.c.state == JobState.RUNNING.value,
        )
        .values(
            state=JobState.DONE.value,
            finished_at=bindparam("now", type_=Job.finished_at.type),
            lease_until=null(),
            last_error=null(),
        )
        .returning(_jobs.c.id)
    ),
)


def claim_batch(
    session: Session,
    now: datetime,
    lease_seconds: float,
    worker_id: str,
    limit: int,
    queues: Collection[str] | None = None,
) -> list[Any]:
    """Takes up to `limit` due jobs (of `queues`, or any) and leases them; concurrent
    workers skip locked rows. The jobs come back as rows (named tuples with the Job's
    attribute names) that show the lease, not as Job objects.

    At most one job per lock key can be due at a time (the others are blocked behind it),
    so a batch never holds two jobs of one key. Queued jobs are looked for first and
    jobs whose lease ran out second: two queries that each follow an index, rather than one
    OR that scans the table. The lease is one UPDATE for the batch.
    """
    rows: list[Any] = []
    for query in _claims(queues):
        if len(rows) >= limit:
            break
        rows += query.rows(session, now=now, limit=limit - len(rows))
    if not rows:
        return rows
    lease_until = now + timedelta(seconds=lease_seconds)
    _LEASE.rows(session, [row.id for row in rows], until=lease_until, worker=worker_id)
    return [
        row._replace(
            state=JobState.RUNNING.value,
            attempts=row.attempts + 1,
            lease_until=lease_until,
            locked_by=worker_id,
        )
        for row in rows
    ]


def claim(session: Session, now: datetime, lease_seconds: float, worker_id: str) -> Any | None:
    jobs = claim_batch(session, now, lease_seconds, worker_id, limit=1)
    return jobs[0] if jobs else None


# The earliest moment a claim could find a job: the first queued job's run_at and the first
# lease to run out, of the worker's queues. One statement, two index lookups, run as a
# `PreparedSelect`; built once per queue set (the prepared statement is kept by identity).
_EARLIEST: dict[frozenset[str] | None, Select[Any]] = {}


def _earliest(queues: Collection[str] | None) -> Select[Any]:
    key = frozenset(queues) if queues is not None else None
    found = _EARLIEST.get(key)
    if found is None:
        waiting = select(Job.run_at).where(Job.state == JobState.QUEUED.value)
        leased = select(Job.lease_until).where(
            Job.state == JobState.RUNNING.value, Job.lease_until.is_not(None)
        )
        if key is not None:  # OR of equalities: a PreparedSelect has no expanding IN
            mine = or_(false(), *(Job.queue == name for name in sorted(key)))
            waiting, leased = waiting.where(mine), leased.where(mine)
        found = _EARLIEST[key] = cast(
            "Select[Any]",
            select(
                waiting.order_by(Job.run_at).limit(1).scalar_subquery().label("run_at"),
                leased.order_by(Job.lease_until).limit(1).scalar_subquery().label("lease_until"),
            ),
        )
    return found


def anything_due(db: Database, now: datetime, queues: Collection[str] | None = None) -> bool:
    """Whether a claim (`claim_batch`) of `queues` (None: every queue) could find a job now:
    a queued job due, or a running job whose lease ran out (whether it is held back behind
    another job of its key is the claim's to say). A read on the thread's kept connection: a
    claim that finds nothing costs a write transaction, on SQLite the process's write turn
    and the database's lock, which the API's writes wait for."""
    (row,) = db.prepared(_earliest(queues)).rows()
    return any(at is not None and at <= now for at in row)


def next_due(session: Session) -> datetime | None:
    """When the earliest queued job becomes due, so an idle worker can sleep until then."""
    return session.scalar(
        select(Job.run_at).where(Job.state == JobState.QUEUED.value).order_by(Job.run_at).limit(1)
    )


def purge_finished(session: Session, before: datetime, batch: int = 10_000) -> int:
    """Deletes up to `batch` jobs finished (done or failed) before `before`; how many."""
    ids = session.scalars(
        select(Job.id).where(Job.finished_at < before, Job.state.in_(FINISHED)).limit(batch)
    ).all()
    if ids:
        session.execute(
            Job.__table__.delete().where(Job.id.in_(ids))  # type: ignore[attr-defined]
        )
    return len(ids)


def finish(session: Session, job_id: int, worker_id: str, now: datetime) -> bool:
    """Marks the job done if this worker still holds it; False means the lease was lost."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.state == JobState.RUNNING.value)
        .values(state=JobState.DONE.value, finished_at=now, lease_until=None, last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish_many(session: Session, job_ids: list[int], worker_id: str, now: datetime) -> set[int]:
    """Marks the jobs done that this worker still holds; returns their ids."""
    if not job_ids:
        return set()
    # Not matched against Job objects in the session: the batch's transaction commits right
    # after, which expires them anyway.
    rows = _FINISH_MANY.rows(session, job_ids, worker=worker_id, now=now)
    return {int(row.id) for row in rows}


def release(session: Session, job_ids: list[int], worker_id: str) -> None:
    """Hands claimed jobs back untouched (not an attempt): another worker may take them."""
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.locked_by == worker_id, Job.state == JobState.RUNNING.value)
        .values(
            state=JobState.QUEUED.value,
            attempts=Job.attempts - 1,
            lease_until=None,
            locked_by=None,
        )
    )


def defer(session: Session, jobs: list[tuple[int, float]], worker_id: str, now: datetime) -> None:
    """Puts claimed jobs back to run again after their seconds, not counting the attempt
    (the task is waiting for something outside: `registry.Deferred`)."""
    for job_id, seconds in jobs:
        session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.locked_by == worker_id,
                Job.state == JobState.RUNNING.value,
            )
            .values(
                state=JobState.QUEUED.value,
                attempts=Job.attempts - 1,
                run_at=now + timedelta(seconds=seconds),
                lease_until=None,
                locked_by=None,
            )
        )


def finish_outside(session: Session, job_id: int, now: datetime) -> bool:
    """Marks the job done, queued or running, whoever holds it: its work was done outside
    the worker (a deferred job's answer, recorded by the thread that got it). The worker's
    later `defer` or `finish` of it then matches nothing."""
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
        .values(state=JobState.DONE.value, finished_at=now, lease_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


def wake_job(session: Session, job_id: int, now: datetime) -> bool:
    """Makes a queued job due now (what it waited for has happened); the workers are woken
    at the commit. False when the job is not queued for later."""
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED.value, Job.run_at > now)
        .values(run_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0):
        uow.wake(session, "jobs")
        return True
    return False


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential with full jitter, capped."""
    exponent = min(max(attempts - 1, 0), 64)  # 2**64 s is past any cap; avoids float overflow
    return rng.uniform(0, min(cap, base * (2**exponent)))


def retry_or_fail(
    session: Session,
    job: Job,
    error: str,
    now: datetime,
    *,
    base: float,
    cap: float,
    rng: random.Random,
) -> bool:
    """Puts the job back with backoff, or fails it for good; returns True when final."""
    job.last_error = error[:2000]
    job.lease_until = None
    job.locked_by = None
    if job.attempts >= job.max_attempts:
        job.state = JobState.FAILED.value
        job.finished_at = now
        session.flush()
        return True
    job.state = JobState.QUEUED.value
    job.run_at = now + timedelta(seconds=backoff_seconds(job.attempts, base, cap, rng))
    session.flush()
    return False
