"""The audit log: who changed what, when and from where.

Each change of state adds one row in the transaction that makes the change, so a change and
its record commit or roll back together (a refused request records nothing). API calls are
recorded by their endpoint (the client, its address, the request id), admin commands by the
CLI (operator: the OS user, source "cli"). What the worker does on its own (a connection
becoming active, a change applied) is in the status history and the changes, not here.
Secrets and tokens are never part of the details.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.clock import Clock
from iod.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    type: Literal["client", "operator"]
    id: str
    source: str
    request_id: str | None = None


def from_request(request: Request, principal: Principal) -> Actor:
    """The API caller: its client id, the address it connected from and the request id.

    Behind a proxy the address is the one uvicorn derives from X-Forwarded-For, which it
    trusts only from the addresses in FORWARDED_ALLOW_IPS (default 127.0.0.1)."""
    address = request.client.host if request.client is not None else "unknown"
    request_id = getattr(request.state, "request_id", None)
    return Actor("client", principal.client_id, address, request_id)


def operator() -> Actor:
    """Whoever runs an admin command, as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (e.g. a bare container)
        user = "unknown"
    return Actor("operator", user, "cli")


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
    session.add(event)
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
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if since is not None:
        statement = statement.where(AuditEvent.at >= since)
    if customer_id is not None:
        statement = statement.where(AuditEvent.customer_id == customer_id)
    if target_id is not None:
        statement = statement.where(AuditEvent.target_id == target_id)
    return session.scalars(statement).all()


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
