"""The webhooks feature's registrations: the delivery task, the events subscriber, and the
hourly retention of finished deliveries (kept as long as events, IOD_EVENTS_RETENTION_DAYS)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from iod import events
from iod.jobs.registry import JobRef, Task, TaskContext, periodic, register
from iod.webhooks import delivery, repository

BATCH = 5_000
MAX_BATCHES = 20

register(
    Task(
        delivery.TASK,
        delivery.prepare,
        act=delivery.act,
        record=delivery.record,
        abandon=delivery.abandon,
        preload=delivery.preload,
        queue=delivery.QUEUE,
    )
)
events.subscribe(delivery.fan_out, ahead=delivery.read_ahead)


@periodic("retention.webhook_deliveries", every="1h")
def prune(session: Session, job: JobRef, ctx: TaskContext) -> None:
    before = ctx.clock.now() - timedelta(days=ctx.settings.events_retention_days)
    for _ in range(MAX_BATCHES):
        if repository.prune_deliveries(session, before, BATCH) < BATCH:
            break
