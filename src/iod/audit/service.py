"""The audit log's service: who acts (`Actor`, `operator`, `act_for`), the rows the admin
commands add (`record`), the log read back (`query`, `to_dict`). The connections' rows come
from the domain events (`subscribers.py`). Nothing here knows HTTP: the edge derives the
API caller's `Actor` (`auth.dependencies.actor`)."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from iod import events
from iod.audit import repository
from iod.infra.clock import Clock
from iod.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    type: Literal["client", "operator", "user"]  # "user": a person in the portal
    id: str
    source: str
    request_id: str | None = None


def operator() -> Actor:
    """Whoever runs an admin command, as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (e.g. a bare container)
        user = "unknown"
    return Actor("operator", user, "cli")


def act_for(session: Session, actor: Actor) -> None:
    """The events this transaction records are caused by `actor` (and audited)."""
    events.act_as(
        session,
        {"type": actor.type, "id": actor.id, "source": actor.source, "requestId": actor.request_id},
    )


def record(
    session: Session,
    clock: Clock,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    *,
    customer_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        at=clock.now(),
        actor_type=actor.type,
        actor_id=actor.id[:255],
        source=actor.source[:255],
        request_id=actor.request_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        customer_id=customer_id,
        details=details or {},
    )
    repository.add(session, event)
    return event


def query(
    session: Session,
    *,
    since: datetime | None = None,
    customer_id: str | None = None,
    target_id: str | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    """The newest matching events first."""
    return repository.newest(
        session, since=since, customer_id=customer_id, target_id=target_id, limit=limit
    )


def to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "actorType": event.actor_type,
        "actor": event.actor_id,
        "source": event.source,
        "requestId": event.request_id,
        "action": event.action,
        "targetType": event.target_type,
        "target": event.target_id,
        "customerId": event.customer_id,
        "details": event.details,
    }
