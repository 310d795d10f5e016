"""The driver protocol. Every operation is idempotent: calling it twice changes nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ConnectionSpec:
    connection_id: str
    location_id: str
    bandwidth_mbps: int
    ipv4_block: str | None = None  # CIDR; None only for rows from before blocks existed


@dataclass(frozen=True)
class ConfiguredConnection:
    """What the network actually has, for reconciliation."""

    connection_id: str
    location_id: str
    bandwidth_mbps: int
    suspended: bool
    ipv4_block: str | None = None


@dataclass
class ReconcileReport:
    """What a reconciliation found and did; with dry_run, what it would have done."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.removed or self.corrected)


class DriverError(Exception):
    """A driver operation failed; the job that called it is retried with backoff."""


class NetworkDriver(Protocol):
    """Operations take the whole desired state, so a driver that lost its own (a restart, a
    rebooted router) converges instead of failing. `op_id` names the operation (the job):
    the same id twice is one operation, carried out at most once."""

    name: str

    def provision(self, spec: ConnectionSpec, op_id: str) -> None: ...

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None: ...

    def suspend(self, spec: ConnectionSpec, op_id: str) -> None: ...

    def resume(self, spec: ConnectionSpec, op_id: str) -> None: ...

    def terminate(self, connection_id: str, op_id: str) -> None: ...

    def inventory(self) -> list[ConfiguredConnection]: ...

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        """Make the network hold exactly `desired`: create what is missing, correct rates and
        suspension, remove what is not desired. Connections in `skip` (a job is working on
        them) are left as they are."""
        ...
