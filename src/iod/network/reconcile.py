"""Reconciliation: make the network hold exactly what the database says is in force.

The database is the truth for connections no job is working on. A connection is left alone
(`skip`) while it is provisioning (its job owns it), or while it has a job running or due
within the horizon: that job is about to change the network itself, and the database
records its result only afterwards, so "correcting" the network first would undo it.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import or_, select

from iod.domain.status import ConnectionStatus
from iod.infra.clock import Clock
from iod.infra.db import Database
from iod.jobs.queue import JobState
from iod.models import Connection, Job
from iod.network.base import ConfiguredConnection, NetworkDriver, ReconcileReport

log = structlog.get_logger("iod.network")

HORIZON = timedelta(seconds=60)
_IN_FORCE = (ConnectionStatus.ACTIVE.value, ConnectionStatus.SUSPENDED.value)


def desired_state(db: Database, clock: Clock) -> tuple[list[ConfiguredConnection], frozenset[str]]:
    """What the network should hold, and the connections to leave to their jobs."""
    with db.read() as session:
        rows = session.execute(
            select(
                Connection.id,
                Connection.location_id,
                Connection.bandwidth_mbps,
                Connection.status,
                Connection.ipv4_block,
            ).where(Connection.status != ConnectionStatus.TERMINATED.value)
        ).all()
        busy = session.scalars(
            select(Job.connection_id)
            .where(
                or_(
                    Job.state == JobState.RUNNING.value,
                    (Job.state == JobState.QUEUED.value) & (Job.run_at <= clock.now() + HORIZON),
                )
            )
            .where(Job.connection_id.is_not(None))
            .distinct()
        ).all()
    skip = {connection_id for connection_id in busy if connection_id is not None}
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
