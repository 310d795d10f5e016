"""The default driver: keeps the "network" in memory, takes configurable time, can fail."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from iod.network.base import ConfiguredConnection, ConnectionSpec, DriverError


@dataclass(frozen=True)
class Operation:
    name: str
    connection_id: str
    detail: str = ""


class SimulatedDriver:
    name = "simulated"

    def __init__(
        self,
        *,
        provision_seconds: float = 0.0,
        change_seconds: float = 0.0,
        failure_rate: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provision_seconds = provision_seconds
        self.change_seconds = change_seconds
        self.failure_rate = failure_rate
        self.fail_next: list[str] = []  # operation names to fail once each, for tests
        self.operations: list[Operation] = []
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - failure injection, not security
        self._lock = threading.Lock()
        self._state: dict[str, ConfiguredConnection] = {}

    def _step(self, name: str, connection_id: str, seconds: float, detail: str = "") -> None:
        if seconds:
            self._sleep(seconds)
        with self._lock:
            if name in self.fail_next:
                self.fail_next.remove(name)
                raise DriverError(f"simulated failure of {name}")
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise DriverError(f"simulated random failure of {name}")
        self.operations.append(Operation(name, connection_id, detail))

    def provision(self, spec: ConnectionSpec) -> None:
        self._step("provision", spec.connection_id, self.provision_seconds)
        with self._lock:
            if spec.connection_id not in self._state:
                self._state[spec.connection_id] = ConfiguredConnection(
                    spec.connection_id, spec.location_id, spec.bandwidth_mbps, suspended=False
                )

    def set_bandwidth(self, spec: ConnectionSpec) -> None:
        self._step(
            "set_bandwidth", spec.connection_id, self.change_seconds, str(spec.bandwidth_mbps)
        )
        self._put(spec, suspended=None)

    def suspend(self, spec: ConnectionSpec) -> None:
        self._step("suspend", spec.connection_id, self.change_seconds)
        self._put(spec, suspended=True)

    def resume(self, spec: ConnectionSpec) -> None:
        self._step("resume", spec.connection_id, self.change_seconds)
        self._put(spec, suspended=False)

    def terminate(self, connection_id: str) -> None:
        self._step("terminate", connection_id, self.change_seconds)
        with self._lock:
            self._state.pop(connection_id, None)

    def inventory(self) -> list[ConfiguredConnection]:
        with self._lock:
            return list(self._state.values())

    def _put(self, spec: ConnectionSpec, *, suspended: bool | None) -> None:
        with self._lock:
            current = self._state.get(spec.connection_id)
            keep = current.suspended if current is not None else False
            self._state[spec.connection_id] = ConfiguredConnection(
                spec.connection_id,
                spec.location_id,
                spec.bandwidth_mbps,
                suspended=keep if suspended is None else suspended,
            )
