"""Suspend, resume, terminate, and the status history they leave behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from iod import events
from iod.auth.tokens import Principal
from iod.connections import capacity, jobs, repository
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import (
    ACTION_TARGETS,
    Action,
    ChangeStatus,
    ConnectionStatus,
    can_transition,
    transition,
)
from iod.infra.clock import Clock
from iod.infra.db import TransactionWrite, update_loaded
from iod.infra.errors import InvalidState
from iod.models import BandwidthChange, Connection, StatusTransition

_JOB_KINDS = {
    Action.SUSPEND: jobs.SUSPEND,
    Action.RESUME: jobs.RESUME,
    Action.TERMINATE: jobs.TERMINATE,
}


def target_of(connection: Connection) -> ConnectionStatus:
    """The status the connection will have once its accepted actions are done."""
    return ConnectionStatus(connection.target_status or connection.status)


# The domain event of each arrival in a status (from -> to; None: from any).
_ARRIVALS = {
    (ConnectionStatus.PROVISIONING.value, ConnectionStatus.ACTIVE): "connection.activated",
    (ConnectionStatus.SUSPENDED.value, ConnectionStatus.ACTIVE): "connection.resumed",
    (None, ConnectionStatus.SUSPENDED): "connection.suspended",
    (None, ConnectionStatus.TERMINATED): "connection.terminated",
}


def record_event(
    session: Session, name: str, connection: Connection, at: datetime, **payload: object
) -> None:
    """A domain event about `connection`, on the transaction's unit of work."""
    events.record(
        session,
        name,
        customer_id=connection.customer_id,
        subject_id=connection.id,
        at=at,
        connectionId=connection.id,
        **payload,
    )


def record_transition(
    session: Session,
    connection: Connection,
    new: ConnectionStatus,
    reason: str,
    at: datetime,
    *,
    more_to_come: bool = False,
) -> None:
    """Moves the connection along the state machine and writes why, in one place (and
    records the domain event of the arrival). `more_to_come`: actions accepted after this
    one are still queued, so the target (the last accepted action's) stays as it is."""
    old = connection.status
    status = transition(ConnectionStatus(old), new).value
    target = connection.target_status
    if (
        not more_to_come
        and target is not None
        and not can_transition(new, ConnectionStatus(target))
    ):
        target = None
    if not more_to_come and target == status:
        target = None
    # Two statements (`update_loaded`, `TransactionWrite`) rather than a flush of ORM
    # objects: the worker records every provisioning and action this way (issue 14).
    update_loaded(
        session, connection, {"status": status, "updated_at": at, "target_status": target}
    )
    _INSERT_TRANSITION.execute(
        session,
        {
            "connection_id": connection.id,
            "from_status": old,
            "to_status": new.value,
            "reason": reason,
            "at": at,
        },
    )
    name = _ARRIVALS.get((old, new)) or _ARRIVALS.get((None, new))
    if name is not None:
        record_event(session, name, connection, at, fromStatus=old, reason=reason)
    if new is ConnectionStatus.TERMINATED:
        # The only status that changes what a connection commits (a suspended one keeps its
        # port): it gives its capacity back.
        capacity.recommit(session, connection)


def record_creation(session: Session, connection: Connection, reason: str) -> None:
    """The connection's first status, written at once (a Core INSERT: nothing reads the
    row back in the transaction), so the connection's row must be written already."""
    _INSERT_TRANSITION.execute(
        session,
        {
            "connection_id": connection.id,
            "from_status": None,
            "to_status": connection.status,
            "reason": reason,
            "at": connection.created_at,
        },
    )


_INSERT_TRANSITION = TransactionWrite(insert(cast(Table, StatusTransition.__table__)))


def request_action(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection: Connection,
    action: Action,
    max_attempts: int,
    precondition: Callable[[Connection], None] | None = None,
    *,
    locked: bool = False,
) -> Connection:
    """Accepts the action if the state machine allows it after what is already pending.
    `precondition` (If-Match) is checked with the row locked. `locked`: the caller loaded
    the connection with its row locked in this transaction (no second SELECT)."""
    if not locked:
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
                change_event(session, "bandwidth_change.cancelled", connection, change, now,
                             reason="termination")  # fmt: skip
        capacity.recommit(session, connection)
    record_event(
        session,
        f"connection.{action.value}_requested",
        connection,
        now,
        status=connection.status,
        targetStatus=connection.target_status,
    )
    jobs.enqueue(
        session,
        _JOB_KINDS[action],
        connection.id,
        run_at=now,
        now=now,
        max_attempts=max_attempts,
    )
    session.flush()
    return connection


def change_event(
    session: Session,
    name: str,
    connection: Connection,
    change: BandwidthChange,
    at: datetime,
    **payload: object,
) -> None:
    """A domain event about a bandwidth change (its subject is the connection)."""
    record_event(
        session,
        name,
        connection,
        at,
        changeId=change.id,
        bandwidth=format_bandwidth(change.to_mbps),
        revertOf=change.revert_of,
        **payload,
    )


def history(session: Session, connection_id: str) -> Sequence[StatusTransition]:
    return session.scalars(
        select(StatusTransition)
        .where(StatusTransition.connection_id == connection_id)
        .order_by(StatusTransition.id)
    ).all()
