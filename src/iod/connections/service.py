"""Use cases for connections. Services flush; the caller's edge commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.clock import Clock
from iod.connections import repository
from iod.connections.schemas import (
    BandwidthChange as BandwidthChangeOut,
)
from iod.connections.schemas import (
    BandwidthUpdate,
    BandwidthUpdateResult,
    ConnectionRequest,
    PendingBandwidthChange,
)
from iod.connections.schemas import Connection as ConnectionOut
from iod.domain.bandwidth import format_bandwidth, parse_bandwidth
from iod.domain.capacity import fits
from iod.domain.status import ChangeStatus, ConnectionStatus, accepts_changes
from iod.domain.tiers import is_offered
from iod.errors import CapacityExceeded, InvalidState, NotFound, ValidationFailed
from iod.ids import looks_like_id, new_id
from iod.jobs.queue import JobKind, enqueue
from iod.locations import repository as locations
from iod.models import BandwidthChange, Connection, Location


@dataclass(frozen=True)
class Policy:
    """The knobs a service call needs from Settings."""

    max_attempts: int = 5
    max_schedule_days: int = 365


def _offered_or_400(location: Location, mbps: int) -> None:
    if not is_offered(mbps, location.tiers_mbps):
        offered = ", ".join(format_bandwidth(t) for t in location.tiers_mbps)
        raise ValidationFailed.field(
            "/bandwidth",
            f"{format_bandwidth(mbps)} is not offered at {location.id}; offered: {offered}",
        )


def _check_capacity(location: Location, committed: int, mbps: int) -> None:
    if not fits(location.capacity_mbps, committed, mbps):
        free = max(location.capacity_mbps - committed, 0)
        raise CapacityExceeded(
            f"location {location.id} has {format_bandwidth(location.capacity_mbps)} of capacity "
            f"and {free} Mbps uncommitted; {format_bandwidth(mbps)} does not fit"
        )


def create_connection(
    session: Session, clock: Clock, principal: Principal, request: ConnectionRequest, policy: Policy
) -> Connection:
    mbps = parse_bandwidth(request.bandwidth)
    location = locations.get_for_update(session, request.locationId)
    if location is None:
        raise ValidationFailed.field("/locationId", f"unknown location {request.locationId!r}")
    _offered_or_400(location, mbps)
    _check_capacity(location, repository.committed_at_location(session, location.id), mbps)
    now = clock.now()
    connection = Connection(
        id=new_id("con"),
        customer_id=principal.customer_id,
        location_id=location.id,
        status=ConnectionStatus.PROVISIONING.value,
        bandwidth_mbps=mbps,
        description=request.description,
        created_by=principal.client_id,
        created_at=now,
        updated_at=now,
    )
    session.add(connection)
    session.flush()
    enqueue(
        session,
        kind=JobKind.PROVISION,
        connection_id=connection.id,
        run_at=now,
        now=now,
        max_attempts=policy.max_attempts,
    )
    session.flush()
    return connection


def get_connection(session: Session, principal: Principal, connection_id: str) -> Connection:
    # Ids that cannot exist are not looked up; another customer's id is a 404 too.
    connection = (
        repository.get_for_customer(session, principal.customer_id, connection_id)
        if looks_like_id(connection_id)
        else None
    )
    if connection is None:
        raise NotFound(f"no connection {connection_id!r}")
    return connection


def list_connections(session: Session, principal: Principal) -> Sequence[Connection]:
    return repository.list_for_customer(session, principal.customer_id)


def update_bandwidth(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection_id: str,
    update: BandwidthUpdate,
    policy: Policy,
) -> tuple[Connection, BandwidthChange]:
    connection = get_connection(session, principal, connection_id)
    now = clock.now()
    effective = update.effectiveDate
    if effective is not None and effective > now + timedelta(days=policy.max_schedule_days):
        raise ValidationFailed.field(
            "/effectiveDate", f"must be at most {policy.max_schedule_days} days ahead"
        )
    run_at = effective if effective is not None and effective > now else now
    mbps = parse_bandwidth(update.bandwidth)
    location = locations.get_for_update(session, connection.location_id)
    assert location is not None  # a foreign key guarantees it
    # Re-read under the location lock: the status may have moved since the first read.
    session.refresh(connection)
    if not accepts_changes(ConnectionStatus(connection.status)):
        raise InvalidState(f"connection {connection.id} is {connection.status}; it cannot change")
    _offered_or_400(location, mbps)
    # The connection commits the most it will have once this change joins its pending ones.
    others = repository.committed_at_location(session, location.id, connection.id)
    _check_capacity(
        location,
        others,
        max(connection.bandwidth_mbps, mbps, *pending_targets(session, connection.id)),
    )
    change = BandwidthChange(
        id=new_id("chg"),
        connection_id=connection.id,
        from_mbps=None,
        to_mbps=mbps,
        effective_at=run_at,
        status=ChangeStatus.SCHEDULED.value,
        requested_by=principal.client_id,
        requested_at=now,
    )
    session.add(change)
    connection.updated_at = now
    session.flush()
    enqueue(
        session,
        kind=JobKind.APPLY_BANDWIDTH,
        connection_id=connection.id,
        change_id=change.id,
        run_at=run_at,
        now=now,
        max_attempts=policy.max_attempts,
    )
    session.flush()
    return connection, change


def pending_targets(session: Session, connection_id: str) -> list[int]:
    return [c.to_mbps for c in repository.pending_changes(session, [connection_id])[connection_id]]


def _pending_out(change: BandwidthChange) -> PendingBandwidthChange:
    return PendingBandwidthChange(
        id=change.id,
        bandwidth=format_bandwidth(change.to_mbps),
        effectiveDate=change.effective_at,
        status="applying" if change.status == ChangeStatus.APPLYING.value else "scheduled",
    )


def to_schema(connection: Connection, pending: list[BandwidthChange]) -> ConnectionOut:
    return ConnectionOut(
        id=connection.id,
        status=ConnectionStatus(connection.status).value,
        bandwidth=format_bandwidth(connection.bandwidth_mbps),
        location=connection.location_id,
        createdAt=connection.created_at,
        description=connection.description,
        updatedAt=connection.updated_at,
        pendingBandwidthChanges=[_pending_out(c) for c in pending],
    )


def present(session: Session, connections: Sequence[Connection]) -> list[ConnectionOut]:
    pending = repository.pending_changes(session, [c.id for c in connections])
    return [to_schema(c, pending[c.id]) for c in connections]


def change_to_schema(change: BandwidthChange) -> BandwidthChangeOut:
    return BandwidthChangeOut(
        id=change.id,
        fromBandwidth=format_bandwidth(change.from_mbps) if change.from_mbps else None,
        bandwidth=format_bandwidth(change.to_mbps),
        effectiveDate=change.effective_at,
        status=ChangeStatus(change.status).value,
        requestedAt=change.requested_at,
        appliedAt=change.applied_at,
    )


def present_update(
    session: Session, connection: Connection, change: BandwidthChange
) -> BandwidthUpdateResult:
    base = present(session, [connection])[0]
    return BandwidthUpdateResult(**base.model_dump(), change=change_to_schema(change))
