"""The audit log as a subscriber of the domain events: importing this module subscribes it
(`features.FEATURES`). Each event an API client or an operator caused adds its audit row
in the transaction that records the event, so a change and its record commit or roll back
together (a refused request records nothing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from iod import events
from iod.audit import repository

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
    "schedule.created": ("schedule.create", ("scheduleId", "paused")),
    "schedule.updated": ("schedule.update", ("scheduleId", "paused", "version")),
    "schedule.deleted": ("schedule.delete", ("scheduleId",)),
}
# The portal's people (iod.portal): every one of their events is audited, target a user.
_PORTAL: dict[str, tuple[str, tuple[str, ...]]] = {
    f"portal_user.{what}": (f"portal.{what}", keys)
    for what, keys in [
        ("created", ("email", "role")),
        ("link_issued", ("email", "expiresAt")),
        ("password_set", ("email",)),
        ("signed_in", ("email",)),
        ("sign_in_failed", ("email", "cause")),
        ("locked", ("email", "lockedUntil")),
        ("signed_out", ("email", "everywhere", "sessions")),
        ("role_changed", ("email", "fromRole", "role")),
        ("disabled", ("email",)),
        ("enabled", ("email",)),
    ]
}


_ACTORS = ("client", "operator", "user")


@events.subscribe
def _from_events(session: Session, written: list[events.WrittenEvent]) -> None:
    """The audit rows of the events a client or an operator caused: one per request, so a
    boost's revert (scheduled with `revertOf`) and what a cancel or a termination drags
    along (`reason` other than "request") are not separate records."""
    rows: list[dict[str, Any]] = []
    for event in written:
        audited = _AUDITED.get(event.name) or _PORTAL.get(event.name)
        actor = event.actor
        if audited is None or actor is None or actor.get("type") not in _ACTORS:
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
                "target_type": "portal_user" if event.name in _PORTAL else "connection",
                "target_id": event.subject_id,
                "customer_id": event.customer_id,
                "details": {k: payload.get(k) for k in keys},
            }
        )
    repository.insert_rows(session, rows)
