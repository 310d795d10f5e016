"""The connection state machine: one table, and every transition checked against it."""

from __future__ import annotations

from enum import StrEnum


class ConnectionStatus(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class ChangeStatus(StrEnum):
    SCHEDULED = "scheduled"
    APPLYING = "applying"
    APPLIED = "applied"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[ConnectionStatus, frozenset[ConnectionStatus]] = {
    ConnectionStatus.PROVISIONING: frozenset(
        {ConnectionStatus.ACTIVE, ConnectionStatus.TERMINATED}
    ),
    ConnectionStatus.ACTIVE: frozenset({ConnectionStatus.SUSPENDED, ConnectionStatus.TERMINATED}),
    ConnectionStatus.SUSPENDED: frozenset({ConnectionStatus.ACTIVE, ConnectionStatus.TERMINATED}),
    ConnectionStatus.TERMINATED: frozenset(),
}


class Action(StrEnum):
    """What a customer may ask of a connection's lifecycle."""

    SUSPEND = "suspend"
    RESUME = "resume"
    TERMINATE = "terminate"


ACTION_TARGETS: dict[Action, ConnectionStatus] = {
    Action.SUSPEND: ConnectionStatus.SUSPENDED,
    Action.RESUME: ConnectionStatus.ACTIVE,
    Action.TERMINATE: ConnectionStatus.TERMINATED,
}

PENDING_CHANGE_STATUSES = frozenset({ChangeStatus.SCHEDULED, ChangeStatus.APPLYING})


class IllegalTransition(Exception):
    def __init__(self, current: ConnectionStatus, target: ConnectionStatus) -> None:
        super().__init__(f"a connection that is {current} cannot become {target}")
        self.current = current
        self.target = target


def can_transition(current: ConnectionStatus, target: ConnectionStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(current: ConnectionStatus, target: ConnectionStatus) -> ConnectionStatus:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def accepts_changes(status: ConnectionStatus) -> bool:
    """Only a terminated (or terminating) connection refuses bandwidth changes."""
    return status is not ConnectionStatus.TERMINATED


def cancellable(status: ChangeStatus) -> bool:
    """Only a change that has not started applying can be cancelled."""
    return status is ChangeStatus.SCHEDULED
