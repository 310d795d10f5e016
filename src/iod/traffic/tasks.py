"""The traffic tasks: sampling the in-process driver's counters every
IOD_TRAFFIC_SAMPLE_SECONDS, and, hourly, folding old raw samples into 5-minute ones and
pruning past IOD_TRAFFIC_RETENTION_DAYS. (Edge agents sample their own kernels and send
the readings to the internal API.)"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from iod.infra.config import get_settings
from iod.jobs.registry import PERIODIC, JobRef, Periodic, Schedule, Task, TaskContext, periodic
from iod.jobs.registry import register as register_task
from iod.traffic import repository, service

SAMPLE = "traffic.sample"
_readings: dict[str, tuple[datetime, dict[str, service.Reading]]] = {}
_lock = threading.Lock()


def _prepare(session: Session, job: JobRef, ctx: TaskContext) -> bool:
    return True


def _act(ctx: TaskContext, prepared: bool, op_id: str) -> None:
    """Reads the counters with no transaction open (a linux driver reads every class)."""
    read = getattr(ctx.driver, "counters", None)
    readings = read() if callable(read) else {}
    with _lock:
        _readings[op_id] = (ctx.clock.now(), readings)


def _record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    with _lock:
        found = _readings.pop(f"job-{job.id}", None)
    if found is not None:
        service.ingest(session, found[0], found[1])


def _register() -> None:
    every = timedelta(seconds=max(1, round(get_settings().traffic_sample_seconds)))
    register_task(Task(SAMPLE, _prepare, _act, _record))
    PERIODIC.setdefault(SAMPLE, Periodic(SAMPLE, Schedule(every=every), max_catch_up=1))


_register()


@periodic("traffic.downsample", every="1h")
def _downsample(session: Session, job: JobRef, ctx: TaskContext) -> None:
    now = ctx.clock.now()
    service.downsample(session, now - timedelta(hours=ctx.settings.traffic_raw_retention_hours))
    repository.prune(session, now - timedelta(days=ctx.settings.traffic_retention_days))
