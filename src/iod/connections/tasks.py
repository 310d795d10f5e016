"""The connection tasks, registered with the worker's task registry: read the intent, act
on the network, record it (and the domain event of what happened).

Each task has three steps so no database transaction stays open while the network works:
`prepare` (a write transaction: returns what the network must do, or None when nothing is
left to do), the driver call, and `record` (a write transaction that also finishes the job);
`abandon` is the final-failure hook. Every step reloads by id and is safe to run again after
a crash. Their jobs carry the connection (and change) id and the lock key
`connection:<id>` (`jobs.py`).
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.connections import capacity, jobs, repository
from iod.connections.lifecycle import change_event, record_event, record_transition
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import (
    ACTION_TARGETS,
    PENDING_CHANGE_STATUSES,
    Action,
    ChangeStatus,
    ConnectionStatus,
    can_transition,
)
from iod.infra.db import update_loaded
from iod.jobs.queue import JobState
from iod.jobs.registry import JobGone, JobRef, Task, TaskContext, register
from iod.locations import addressing
from iod.models import BandwidthChange, Connection, Job
from iod.network.base import ConnectionSpec, NetworkDriver


def _load_connections(session: Session, jobs: list[JobRef], preparing: bool) -> list[object]:
    """A batch's connections (`repository.loaded_by_ids`); the tasks then find them in the
    session (whose identity map holds rows weakly: the caller keeps the returned list while
    it works).

    Recording locks them: recording moves what connections commit at their locations
    (`capacity.recommit`), and every connection's row must be locked before the first
    location's row, the order an order or a change takes them in; otherwise a batch holding
    a location could wait for a connection whose change waits for that location."""
    ids = {job.connection_id for job in jobs if job.connection_id}
    return repository.loaded_by_ids(session, Connection, ids, lock=not preparing)


# --- provision -------------------------------------------------------------------------


def _connection(session: Session, job: JobRef) -> Connection:
    connection = repository.get(session, job.connection_id or "")
    if connection is None:
        raise JobGone(f"connection {job.connection_id} does not exist")
    return connection


def _provision_prepare(session: Session, job: JobRef, ctx: TaskContext) -> ConnectionSpec | None:
    connection = _connection(session, job)
    if connection.status != ConnectionStatus.PROVISIONING.value:
        return None
    return spec_of(connection)


def spec_of(connection: Connection, mbps: int | None = None) -> ConnectionSpec:
    return ConnectionSpec(
        connection.id,
        connection.location_id,
        connection.bandwidth_mbps if mbps is None else mbps,
        connection.ipv4_block,
    )


def _provision_record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    connection = _connection(session, job)
    if connection.status == ConnectionStatus.PROVISIONING.value:
        record_transition(
            session,
            connection,
            ConnectionStatus.ACTIVE,
            "the network is configured",
            ctx.clock.now(),
        )


def _provision_abandon(session: Session, job: JobRef, ctx: TaskContext, reason: str) -> None:
    """Provisioning failed for good: the connection is terminated and its changes fail."""
    connection = repository.get_for_update(session, job.connection_id or "")
    if connection is None or connection.status != ConnectionStatus.PROVISIONING.value:
        return
    now = ctx.clock.now()
    record_event(session, "connection.provisioning_failed", connection, now,
                 attempts=job.attempts, error=reason)  # fmt: skip
    record_transition(
        session,
        connection,
        ConnectionStatus.TERMINATED,
        f"provisioning failed after {job.attempts} attempts: {reason}",
        now,
    )
    for change in repository.pending_changes(session, [connection.id])[connection.id]:
        change.status = ChangeStatus.FAILED.value
        change.failure_reason = f"provisioning failed: {reason}"
        change_event(session, "bandwidth_change.failed", connection, change, now,
                     error=change.failure_reason)  # fmt: skip
    # (record_transition has already given its capacity back: a terminated one commits 0.)
    # Whatever a failed provisioning left on the network is an orphan that reconciliation
    # removes; a driver given the block again replaces a stale holder (docs/network.md).
    # An edge agent's desired row becomes a tombstone (the agent removes what it applied).
    _settle_edge(session, ctx, connection)
    addressing.release(session, connection.id)


# --- apply a bandwidth change ----------------------------------------------------------


def _apply_preload(session: Session, jobs: list[JobRef], preparing: bool) -> list[object]:
    """The batch's changes, locked when preparing: a customer's cancel and the worker's
    start cannot both win. Once a change is `applying` no cancel touches it, so
    recording needs no lock on it (but does on the connections: `_load_connections`)."""
    ids = {job.change_id for job in jobs if job.change_id}
    rows = repository.loaded_by_ids(session, BandwidthChange, ids, lock=preparing)
    rows += _load_connections(session, jobs, preparing)
    if not preparing:
        # Recording moves what each connection commits (`capacity.recommit`), from its
        # pending changes: read here for the whole batch in one statement compiled once,
        # with the connections locked above, instead of a refresh and a query per job
        # (issue 14: they were a quarter of a PUT's CPU). Only for connections with one job
        # in the batch (a batch never holds two of a connection's jobs, they share a lock
        # key), so what is read here is still true when that job records.
        once = [c for c, n in Counter(j.connection_id for j in jobs).items() if c and n == 1]
        session.info[_PENDING_KEY] = repository.pending_mbps_of(session, sorted(once))
    return rows


_PENDING_KEY = "iod.connections.pending"


def _pending_after(session: Session, connection_id: str, change_id: str) -> list[int] | None:
    """The `to_mbps` of the connection's pending changes once `change_id` is no longer
    pending, from `_apply_preload`'s read (None: not read there, `recommit` reads them)."""
    pending = session.info.get(_PENDING_KEY, {}).get(connection_id)
    if pending is None:
        return None
    return [row.to_mbps for row in pending if row.id != change_id]


def _change_of(session: Session, job: JobRef) -> BandwidthChange:
    change = repository.get_change(session, job.change_id or "")
    if change is None:
        raise JobGone(f"bandwidth change {job.change_id} does not exist")
    return change


def _apply_prepare(session: Session, job: JobRef, ctx: TaskContext) -> ConnectionSpec | None:
    change = _change_of(session, job)  # locked by _apply_preload
    if ChangeStatus(change.status) not in PENDING_CHANGE_STATUSES:
        return None
    connection = repository.get(session, change.connection_id)
    if connection is None:
        raise JobGone(f"connection {change.connection_id} does not exist")
    if connection.status == ConnectionStatus.TERMINATED.value:
        # What it commits stays 0 (terminated): no `capacity.recommit` needed, nor the
        # connection's lock it would take after the change's.
        change.status = ChangeStatus.CANCELLED.value
        change.failure_reason = "the connection was terminated before the change applied"
        change_event(session, "bandwidth_change.cancelled", connection, change,
                     ctx.clock.now(), reason="termination")  # fmt: skip
        return None
    change.status = ChangeStatus.APPLYING.value
    return spec_of(connection, change.to_mbps)


def _apply_record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    change = _change_of(session, job)
    connection = repository.get(session, change.connection_id)
    if connection is None:
        raise JobGone(f"connection {change.connection_id} does not exist")
    now = ctx.clock.now()
    # The change's row, then (the connection's row is locked already) what the connection
    # commits, then the location's row: the order the ORM's flush wrote them in. Each is
    # one statement, without the ORM's flush (`update_loaded`, issue 14).
    update_loaded(
        session,
        change,
        {"from_mbps": connection.bandwidth_mbps, "status": ChangeStatus.APPLIED.value,
         "applied_at": now},
    )  # fmt: skip
    applied = {"bandwidth_mbps": change.to_mbps, "updated_at": now}
    # The change is no longer pending. The connection's row is locked and was read in this
    # transaction (`_load_connections`), so `recommit` need not lock and re-read it; its
    # pending changes were read for the batch (`_apply_preload`), unless it has two jobs in it.
    pending = _pending_after(session, connection.id, change.id)
    if pending is None:
        for name, value in applied.items():
            setattr(connection, name, value)
        capacity.recommit(session, connection)
    else:
        capacity.recommit_locked(session, connection, pending, applied)
    change_event(session, "bandwidth_change.applied", connection, change, now,
                 fromBandwidth=format_bandwidth(change.from_mbps))  # fmt: skip


def _apply_abandon(session: Session, job: JobRef, ctx: TaskContext, reason: str) -> None:
    # The connection's row before the change's, the order every writer takes them in.
    connection = repository.get_for_update(session, job.connection_id or "")
    change = repository.get_change(session, job.change_id or "")
    if change is not None and ChangeStatus(change.status) in PENDING_CHANGE_STATUSES:
        change.status = ChangeStatus.FAILED.value
        change.failure_reason = reason
        if connection is not None:
            capacity.recommit(session, connection)
            change_event(session, "bandwidth_change.failed", connection, change,
                         ctx.clock.now(), error=reason)  # fmt: skip
            _settle_edge(session, ctx, connection)


def _settle_edge(session: Session, ctx: TaskContext, connection: Connection) -> None:
    """A job given up for good: an edge agent's desired row of the connection says again
    what the database has in force (`edge.service.settle`)."""
    from iod.edge import service as edge

    edge.settle(session, ctx.clock.now(), connection)


# --- suspend, resume, terminate --------------------------------------------------------

_ACTION_OF_KIND = {
    jobs.SUSPEND: Action.SUSPEND,
    jobs.RESUME: Action.RESUME,
    jobs.TERMINATE: Action.TERMINATE,
}
_REASONS = {
    Action.SUSPEND: "suspended at the customer's request: traffic blocked, configuration kept",
    Action.RESUME: "resumed at the customer's request",
    Action.TERMINATE: "terminated at the customer's request: configuration removed",
}


def _action_prepare(session: Session, job: JobRef, ctx: TaskContext) -> ConnectionSpec | None:
    connection = _connection(session, job)
    wanted = ACTION_TARGETS[_ACTION_OF_KIND[job.kind]]
    if not can_transition(ConnectionStatus(connection.status), wanted):
        # Already there (a rerun), or overtaken (provisioning failed, or an earlier action
        # failed for good): the last action queued settles the target.
        if not _later_actions(session, job):
            _settle_target(connection)
        return None
    return spec_of(connection)


def _settle_target(connection: Connection) -> None:
    """No action of the connection is left to run: no target, unless one is still to reach."""
    target = connection.target_status
    status = ConnectionStatus(connection.status)
    if target is not None and (
        target == status or not can_transition(status, ConnectionStatus(target))
    ):
        connection.target_status = None


def _action_act(driver: NetworkDriver, spec: ConnectionSpec, op_id: str, kind: str) -> None:
    action = _ACTION_OF_KIND[kind]
    if action is Action.SUSPEND:
        driver.suspend(spec, op_id)
    elif action is Action.RESUME:
        driver.resume(spec, op_id)
    else:
        driver.terminate(spec.connection_id, op_id)


def _action_record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    connection = _connection(session, job)
    action = _ACTION_OF_KIND[job.kind]
    wanted = ACTION_TARGETS[action]
    if can_transition(ConnectionStatus(connection.status), wanted):
        record_transition(session, connection, wanted, _REASONS[action], ctx.clock.now(),
                          more_to_come=_later_actions(session, job))  # fmt: skip
        if wanted is ConnectionStatus.TERMINATED:
            addressing.release(session, connection.id)  # the network has let it go


def _later_actions(session: Session, job: JobRef) -> bool:
    """Whether actions of the connection accepted after this job's are still queued (they
    run in order: the connection's lock key)."""
    found = session.execute(
        select(Job.id)
        .where(
            Job.lock_key == jobs.lock_key(job.connection_id or ""),
            Job.state == JobState.QUEUED.value,
            Job.kind.in_(list(_ACTION_OF_KIND)),
            Job.id > job.id,
        )
        .limit(1)
    ).first()
    return found is not None


def _action_abandon(session: Session, job: JobRef, ctx: TaskContext, reason: str) -> None:
    """The network refused for good: the connection stays as it is, and says so. Its row is
    locked first, as every writer of it does: whether later actions are queued is then read
    after any being accepted has committed, and the commit's event positions (the customer's
    `event_streams` row) are taken after the row, not before (a deadlock with the API)."""
    connection = repository.get_for_update(session, job.connection_id or "")
    if connection is not None:
        if not _later_actions(session, job):  # else the target stays the last accepted's
            connection.target_status = None
        connection.updated_at = ctx.clock.now()
        record_event(session, "connection.action_failed", connection, connection.updated_at,
                     action=_ACTION_OF_KIND[job.kind].value, error=reason)  # fmt: skip
        _settle_edge(session, ctx, connection)


def _action_task(kind: str) -> Task[ConnectionSpec]:
    return Task(
        kind,
        _action_prepare,
        lambda ctx, s, op: _action_act(ctx.driver, s, op, kind),
        _action_record,
        _action_abandon,
        _load_connections,
    )


register(
    Task(
        jobs.PROVISION,
        _provision_prepare,
        lambda ctx, s, op: ctx.driver.provision(s, op),
        _provision_record,
        _provision_abandon,
        _load_connections,
    )
)
register(
    Task(
        jobs.APPLY_BANDWIDTH,
        _apply_prepare,
        lambda ctx, s, op: ctx.driver.set_bandwidth(s, op),
        _apply_record,
        _apply_abandon,
        _apply_preload,
    )
)
for _kind in (jobs.SUSPEND, jobs.RESUME, jobs.TERMINATE):
    register(_action_task(_kind))
