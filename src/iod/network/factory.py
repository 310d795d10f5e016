"""Pick the network driver the settings name."""

from __future__ import annotations

from iod.infra.config import Settings
from iod.infra.secure import create_private_file
from iod.network.base import NetworkDriver
from iod.network.simulated import SimulatedDriver


def make_driver(settings: Settings) -> NetworkDriver:
    if settings.network_driver == "simulated":
        state_path = settings.data_dir / "simulated-network.sqlite3"
        state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private_file(state_path)  # its WAL and SHM get the same mode (iod/secure.py)
        return SimulatedDriver(
            provision_seconds=settings.simulated_provision_seconds,
            change_seconds=settings.simulated_change_seconds,
            failure_rate=settings.simulated_failure_rate,
            state_path=state_path,
        )
    if settings.network_driver == "linux":
        # Imported here: pyroute2 loads only where the linux driver is used.
        from iod.network.linux.driver import LinuxDriver

        return LinuxDriver(
            prefix=settings.linux_name_prefix,
            customer_ifname=settings.linux_customer_ifname,
            dry_run=settings.linux_dry_run,
        )
    raise ValueError(f"unknown network driver {settings.network_driver!r}")
