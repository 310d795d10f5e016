"""The retention tasks, hourly: expired Idempotency-Keys, events past
IOD_EVENTS_RETENTION_DAYS, jobs finished more than IOD_JOBS_RETENTION_DAYS ago.

Each deletes in batches of at most `BATCH` rows per statement, within its job's transaction,
and stops after `MAX_BATCHES`: a backlog is worked off over the following hours instead of
one long transaction holding the rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from iod import events
from iod.jobs import queue
from iod.jobs.registry import JobRef, TaskContext, periodic
from iod.models import IdempotencyKey

BATCH = 5_000
MAX_BATCHES = 20


def expire_idempotency_keys(session: Session, now: datetime, batch: int = BATCH) -> int:
    """Deletes up to `batch` keys past their `expires_at` (they are kept 24 hours).

    The DELETE checks the expiry again: on PostgreSQL a request may renew an expired key
    (claim it again) between the SELECT and the DELETE, and the DELETE, waiting for its row
    lock, then sees the renewed row; deleting it would let a retry of that request act twice.
    Returns how many were selected (those deleted, but for such renewed ones): the caller
    goes on while whole batches come back.
    """
    expired = (
        select(IdempotencyKey.customer_id, IdempotencyKey.key)
        .where(IdempotencyKey.expires_at <= now)
        .limit(batch)
    )
    keys = session.execute(expired).all()
    if keys:
        pair = tuple_(IdempotencyKey.customer_id, IdempotencyKey.key)
        session.execute(
            delete(IdempotencyKey).where(
                pair.in_([tuple(k) for k in keys]), IdempotencyKey.expires_at <= now
            )
        )
    return len(keys)


@periodic("retention.idempotency_keys", every="1h")
def _idempotency_keys(session: Session, job: JobRef, ctx: TaskContext) -> None:
    for _ in range(MAX_BATCHES):
        if expire_idempotency_keys(session, ctx.clock.now()) < BATCH:
            break


@periodic("retention.events", every="1h")
def _events(session: Session, job: JobRef, ctx: TaskContext) -> None:
    before = ctx.clock.now() - timedelta(days=ctx.settings.events_retention_days)
    for _ in range(MAX_BATCHES):
        if events.prune(session, before, BATCH) < BATCH:
            break


@periodic("retention.jobs", every="1h")
def _jobs(session: Session, job: JobRef, ctx: TaskContext) -> None:
    before = ctx.clock.now() - timedelta(days=ctx.settings.jobs_retention_days)
    for _ in range(MAX_BATCHES):
        if queue.purge_finished(session, before, BATCH) < BATCH:
            break
