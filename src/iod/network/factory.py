"""Pick the network driver the settings name."""

from __future__ import annotations

from iod.config import Settings
from iod.network.base import NetworkDriver
from iod.network.simulated import SimulatedDriver


def make_driver(settings: Settings) -> NetworkDriver:
    if settings.network_driver == "simulated":
        return SimulatedDriver(
            provision_seconds=settings.simulated_provision_seconds,
            change_seconds=settings.simulated_change_seconds,
            failure_rate=settings.simulated_failure_rate,
            state_path=settings.data_dir / "simulated-network.sqlite3",
        )
    raise ValueError(f"unknown network driver {settings.network_driver!r}")
