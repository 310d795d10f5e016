"""The features of the service: importing each registers its tasks, periodic tasks and
event subscribers. A new feature adds its modules here (and nowhere in `jobs/` or `app.py`).
"""

from __future__ import annotations

import importlib

FEATURES = (
    "iod.audit.subscribers",  # subscribes to the domain events it records
    "iod.connections.tasks",
    "iod.retention.tasks",
    "iod.schedules.tasks",
    "iod.webhooks.tasks",  # the delivery task and its events subscriber
    "iod.portal.tasks",
    "iod.lumen.subscribers",  # a Lumen service id for every connection ordered
    "iod.billing.tasks",  # money: hourly metering, statements
    "iod.traffic.tasks",
)


def load() -> None:
    """Imports every feature's registering modules (idempotent)."""
    for name in FEATURES:
        importlib.import_module(name)
