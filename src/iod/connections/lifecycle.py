"""Suspend, resume, terminate, and the status history they leave behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.clock import Clock
from iod.connections import capacity, repository
from iod.domain.status import (
    ACTION_TARGETS,
    Action,
    ChangeStatus,
    ConnectionStatus,
    can_transition,
    transition,
)
from iod.errors import InvalidState
from iod.jobs.queue import JobKind, enqueue
from iod.models import Connection, StatusTransition

_JOB_KINDS = {
    Action.SUSPEND: JobKind.SUSPEND,
    Action.RESUME: JobKind.RESUME,
    Action.TERMINATE: JobKind.TERMINATE,
}


def target_of(connection: Connection) -> ConnectionStatus:
    """The status the connection will have once its accepted actions are done."""
    return ConnectionStatus(connection.target_status or connection.status)


def record_transition(
    session: Session, connection: Connection, new: ConnectionStatus, reason: str, at: datetime
) -> None:
    """Moves the connection along the state machine and writes why, in one place."""
    old = connection.status
    connection.status = transition(ConnectionStatus(old), new).value
    connection.updated_at = at
    if connection.target_status is not None and not can_transition(
        new, ConnectionStatus(connection.target_status)
    ):
        connection.target_status = None
    if connection.target_status == connection.status:
        connection.target_status = None
    session.add(
        StatusTransition(
            connection_id=connection.id, from_status=old, to_status=new.value, reason=reason, at=at
        )
    )
    if new is ConnectionStatus.TERMINATED:
        # The only status that changes what a connection commits (a suspended one keeps its
        # port): it gives its capacity back.
        capacity.recommit(session, connection)


def record_creation(session: Session, connection: Connection, reason: str) -> None:
    session.add(
        StatusTransition(
            connection_id=connection.id,
            from_status=None,
            to_status=connection.status,
            reason=reason,
            at=connection.created_at,
        )
    )


def request_action(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection: Connection,
    action: Action,
    max_attempts: int,
    precondition: Callable[[Connection], None] | None = None,
) -> Connection:
    """Accepts the action if the state machine allows it after what is already pending.
    `precondition` (If-Match) is checked with the row locked."""
    session.refresh(connection, with_for_update=True)
    if precondition is not None:
        precondition(connection)
    current = target_of(connection)
    wanted = ACTION_TARGETS[action]
    if not can_transition(current, wanted):
        pending = "" if current.value == connection.status else " (after its pending actions)"
        raise InvalidState(
            f"connection {connection.id} is {current.value}{pending}; it cannot {action.value}"
        )
    now = clock.now()
    connection.target_status = wanted.value
    connection.updated_at = now
    if action is Action.TERMINATE:
        for change in repository.pending_changes(session, [connection.id])[connection.id]:
            if change.status == ChangeStatus.SCHEDULED.value:
                change.status = ChangeStatus.CANCELLED.value
                change.failure_reason = "the connection is being terminated"
        capacity.recommit(session, connection)
    enqueue(
        session,
        kind=_JOB_KINDS[action],
        connection_id=connection.id,
        run_at=now,
        now=now,
        max_attempts=max_attempts,
    )
    session.flush()
    return connection


def history(session: Session, connection_id: str) -> Sequence[StatusTransition]:
    return session.scalars(
        select(StatusTransition)
        .where(StatusTransition.connection_id == connection_id)
        .order_by(StatusTransition.id)
    ).all()
