"""The portal's periodic task: expired sessions and sign-in links are deleted hourly (an
expired one is refused on sight anyway; this only keeps the tables small)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from iod.jobs.registry import JobRef, TaskContext, periodic
from iod.portal import service


@periodic("portal.expired_sessions", every="1h")
def _expired_sessions(session: Session, job: JobRef, ctx: TaskContext) -> None:
    service.purge(session, ctx.clock.now(), service.PortalPolicy.of(ctx.settings))
