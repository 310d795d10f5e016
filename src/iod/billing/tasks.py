"""The metering periodic task: rate the hours due, close the months done."""

from __future__ import annotations

from sqlalchemy.orm import Session

from iod.billing import metering
from iod.domain.rating import parse_fraction
from iod.jobs.registry import JobRef, TaskContext, periodic


@periodic("billing.metering", every="5m")
def _metering(session: Session, job: JobRef, ctx: TaskContext) -> None:
    """Every five minutes: at most IOD_METERING_MAX_PER_RUN connection-hours in this job's
    transaction; a backlog (after downtime) is worked off over the following runs."""
    s = ctx.settings
    metering.rate_due(
        session,
        ctx.clock.now(),
        fraction=parse_fraction(s.metering_suspended),
        settle_seconds=s.metering_settle_seconds,
        batch=s.metering_batch,
        budget=s.metering_max_per_run,
    )
