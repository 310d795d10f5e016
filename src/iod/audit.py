"""The audit log: who changed what, when and from where.

Each change of state adds one row in the transaction that makes the change, so a change and
its record commit or roll back together (a refused request records nothing). API calls are
recorded by their endpoint (the client, its address, the request id), admin commands by the
CLI (operator: the OS user, source "cli"). What the worker does on its own (a connection
becoming active, a change applied) is in the status history and the changes, not here.
Secrets and tokens are never part of the details.

The connections' records come from domain events: the endpoint says who acts
(`act_for`), the service records the event, and `_from_events` (a subscriber of the events
writer) adds the audit row in the same transaction, for the events an API client or an
operator caused. Other admin commands still call `record` directly.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from fastapi import Request
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from iod import events
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


def act_for(session: Session, actor: Actor) -> None:
    """The events this transaction records are caused by `actor` (and audited)."""
    events.act_as(
        session,
        {"type": actor.type, "id": actor.id, "source": actor.source, "requestId": actor.request_id},
    )


# event name -> (audit action, the payload's keys that are the audit details)
_AUDITED: dict[str, tuple[str, tuple[str, ...]]] = {
    "connection.ordered": ("connection.create", ("bandwidth", "locationId", "description")),
    "bandwidth_change.scheduled": (
        "bandwidth.change",
        ("bandwidth", "changeId", "effectiveDate", "revertAt", "revertChangeId"),
    ),
    "bandwidth_change.cancelled": ("bandwidth.cancel", ("changeId", "bandwidth")),
    "connection.suspend_requested": ("connection.suspend", ("status", "targetStatus")),
    "connection.resume_requested": ("connection.resume", ("status", "targetStatus")),
    "connection.terminate_requested": ("connection.terminate", ("status", "targetStatus")),
}


@events.subscribe
def _from_events(session: Session, written: list[events.WrittenEvent]) -> None:
    """The audit rows of the events a client or an operator caused: one per request, so a
    boost's revert (scheduled with `revertOf`) and what a cancel or a termination drags
    along (`reason` other than "request") are not separate records."""
    rows: list[dict[str, Any]] = []
    for event in written:
        audited = _AUDITED.get(event.name)
        actor = event.actor
        if audited is None or actor is None or actor.get("type") not in ("client", "operator"):
            continue
        payload = event.payload
        if event.name == "bandwidth_change.scheduled" and payload.get("revertOf") is not None:
            continue
        if payload.get("reason", "request") != "request":
            continue
        action, keys = audited
        rows.append(
            {
                "at": event.at,
                "actor_type": actor["type"],
                "actor_id": str(actor["id"])[:255],
                "source": str(actor["source"])[:255],
                "request_id": actor.get("requestId"),
                "action": action,
                "target_type": "connection",
                "target_id": event.subject_id,
                "customer_id": event.customer_id,
                "details": {k: payload.get(k) for k in keys},
            }
        )
    if rows:
        # A Core INSERT, as the events': the rows are never read back in the transaction,
        # so ORM objects (and their flush) would be work for nothing on every write.
        session.connection().execute(insert(cast(Table, AuditEvent.__table__)), rows)


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
