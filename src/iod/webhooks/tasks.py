"""The webhooks feature's registrations: the delivery task and the events subscriber."""

from __future__ import annotations

from iod import events
from iod.jobs.registry import Task, register
from iod.webhooks import delivery

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
events.subscribe(delivery.fan_out)
