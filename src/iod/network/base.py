"""The driver protocol. Every operation is idempotent: calling it twice changes nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ConnectionSpec:
    connection_id: str
    location_id: str
    bandwidth_mbps: int


@dataclass(frozen=True)
class ConfiguredConnection:
    """What the network actually has, for reconciliation."""

    connection_id: str
    location_id: str
    bandwidth_mbps: int
    suspended: bool


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
