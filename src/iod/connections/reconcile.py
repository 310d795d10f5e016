"""Reconciliation: make the network hold exactly what the database says is in force.

The connections feature owns this (it reads the connections and their jobs); the driver
(`network/`) only compares what it holds with the desired state it is given and mends it.

The database is the truth for connections no job is working on. A connection is left alone
(`skip`) while it is provisioning (its job owns it), or while it has a job running or due
within the horizon: that job is about to change the network itself, and the database
records its result only afterwards, so "correcting" the network first would undo it.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from iod.connections import repository
from iod.domain.status import ConnectionStatus
from iod.infra.clock import Clock
from iod.infra.db import Database
from iod.network.base import ConfiguredConnection, NetworkDriver, ReconcileReport

log = structlog.get_logger("iod.network")

HORIZON = timedelta(seconds=60)
_IN_FORCE = (ConnectionStatus.ACTIVE.value, ConnectionStatus.SUSPENDED.value)


def desired_state(db: Database, clock: Clock) -> tuple[list[ConfiguredConnection], frozenset[str]]:
    """What the network should hold, and the connections to leave to their jobs."""
    with db.read() as session:
        rows = repository.not_terminated(session)
        skip = repository.with_work_due(session, clock.now() + HORIZON)
    desired = []
    for connection_id, location_id, mbps, status, block in rows:
        if status not in _IN_FORCE:
            skip.add(connection_id)
            continue
        desired.append(
            ConfiguredConnection(
                connection_id,
                location_id,
                mbps,
                status == ConnectionStatus.SUSPENDED.value,
                block,
            )
        )
    return desired, frozenset(skip)


def reconcile(
    db: Database, driver: NetworkDriver, clock: Clock, *, dry_run: bool = False
) -> ReconcileReport:
    """Reads the desired state in one short transaction, then lets the driver mend the
    network with no transaction open."""
    desired, skip = desired_state(db, clock)
    report = driver.reconcile(desired, skip, dry_run=dry_run)
    log.info(
        "network.reconciled",
        driver=driver.name,
        dry_run=dry_run,
        created=len(report.created),
        removed=len(report.removed),
        corrected=len(report.corrected),
        skipped=len(report.skipped),
        unchanged=report.unchanged,
    )
    return report
