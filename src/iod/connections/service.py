"""Use cases for connections. Services flush; the caller's edge commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.billing import service as billing
from iod.connections import capacity, jobs, repository
from iod.connections.lifecycle import change_event, record_creation, record_event, target_of
from iod.connections.repository import AnyRow
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
from iod.domain.addressing import DEFAULT_PREFIX_LENGTH, PoolExhausted
from iod.domain.bandwidth import format_bandwidth, parse_bandwidth
from iod.domain.status import ChangeStatus, ConnectionStatus, accepts_changes, cancellable
from iod.domain.tiers import is_offered
from iod.infra.clock import Clock, rfc3339
from iod.infra.db import Database, TransactionWrite, insert_loaded, update_loaded
from iod.infra.errors import (
    AddressPoolExhausted,
    ChangeInvalidState,
    InvalidState,
    NotFound,
    TooManyPendingChanges,
    ValidationFailed,
    shown,
)
from iod.infra.ids import looks_like_id, new_id
from iod.infra.representation import check_if_match, entity_tag
from iod.locations import addressing
from iod.models import BandwidthChange, Connection, Location


@dataclass(frozen=True)
class Policy:
    """The knobs a service call needs from Settings."""

    max_attempts: int = 5
    max_schedule_days: int = 365
    max_pending_changes: int = 100


def _offered_or_400(location: Location | repository.Offer, mbps: int) -> None:
    if not is_offered(mbps, location.tiers_mbps):
        offered = ", ".join(format_bandwidth(t) for t in location.tiers_mbps)
        raise ValidationFailed.field(
            "/bandwidth",
            f"{format_bandwidth(mbps)} is not offered at {location.id}; offered: {offered}",
        )


def change_time(
    now: datetime, effective: datetime | None, revert_at: datetime | None, max_days: int
) -> datetime:
    """When a bandwidth change runs: at `effective`, or now when that is absent or past.
    Its times' rules, for `PUT …/bandwidth` and for a quote of it (`billing.create_quote`),
    so a quote is never made that its change would refuse: `effective` at most `max_days`
    ahead; `revert_at` (a boost's end) after the change runs, within the same days."""
    horizon = now + timedelta(days=max_days)
    if effective is not None and effective > horizon:
        raise ValidationFailed.field("/effectiveDate", f"must be at most {max_days} days ahead")
    run_at = effective if effective is not None and effective > now else now
    if revert_at is not None and not run_at < revert_at <= horizon:
        raise ValidationFailed.field(
            "/revertAt", f"must be after the effective time and at most {max_days} days ahead"
        )
    return run_at


def create_connection(
    session: Session, clock: Clock, principal: Principal, request: ConnectionRequest, policy: Policy
) -> Connection:
    mbps = parse_bandwidth(request.bandwidth)
    location = repository.location(session, request.locationId)
    if location is None:
        raise ValidationFailed.field("/locationId", f"unknown location {request.locationId!r}")
    _offered_or_400(location, mbps)
    now = clock.now()
    connection = Connection(
        id=new_id("con"),
        customer_id=principal.customer_id,
        location_id=location.id,
        status=ConnectionStatus.PROVISIONING.value,
        bandwidth_mbps=mbps,
        # What it commits, written with its row; counted at its location below.
        committed_mbps=capacity.committed_by_new(mbps),
        description=request.description,
        target_status=None,
        ipv4_block=None,  # allocated below
        created_by=principal.client_id,
        created_at=now,
        updated_at=now,
    )
    # Its rows written at once with Core INSERTs, in this order (the connection, its first
    # status, its job), rather than by a flush of ORM objects (issue 14).
    insert_loaded(session, connection)
    record_creation(session, connection, f"ordered by client {principal.client_id}")
    record_event(
        session,
        "connection.ordered",
        connection,
        now,
        bandwidth=format_bandwidth(mbps),
        locationId=location.id,
        description=request.description,
    )
    jobs.enqueue(
        session,
        jobs.PROVISION,
        connection.id,
        run_at=now,
        now=now,
        max_attempts=policy.max_attempts,
    )
    # The location's row last (the capacity, then the IPv4 block): it is locked from here to
    # the commit, so orders at one location overlap everything above (docs/performance.md).
    capacity.reserve_new(session, connection)
    prefix = request.ipv4PrefixLength or DEFAULT_PREFIX_LENGTH
    try:
        block = addressing.allocate(session, location, prefix, connection.id)
        update_loaded(session, connection, {"ipv4_block": block})
    except PoolExhausted as exc:
        raise AddressPoolExhausted(
            f"location {location.id} has no /{prefix} block left in its pool"
            f" {location.ipv4_pool}: {exc}"
        ) from exc
    if request.quoteId is not None:  # the quoted rate for this tier (docs/money.md)
        billing.redeem(session, now, principal, request.quoteId, location_id=location.id,
                       mbps=mbps, connection_id=connection.id, change_id=None)  # fmt: skip
    session.flush()
    return connection


_Found = TypeVar("_Found")


def get_connection(
    session: Session, principal: Principal, connection_id: str, *, lock: bool = False
) -> Connection:
    """`lock`: with the connection's row locked (PostgreSQL; SQLite's write transaction
    holds the database's lock already), in the same SELECT."""
    return _of_customer(
        principal,
        connection_id,
        lambda customer_id: repository.get_for_customer(
            session, customer_id, connection_id, lock=lock
        ),
    )


def _of_customer(
    principal: Principal, connection_id: str, lookup: Callable[[str], _Found | None]
) -> _Found:
    """What `lookup` finds for the principal's customer, or 404. Ids that cannot exist are
    not looked up; another customer's id is a 404 too."""
    found = lookup(principal.customer_id) if looks_like_id(connection_id) else None
    if found is None:
        raise NotFound(f"no connection {shown(connection_id)}")
    return found


LIVE_STATUSES = (
    ConnectionStatus.PROVISIONING.value,
    ConnectionStatus.ACTIVE.value,
    ConnectionStatus.SUSPENDED.value,
)


def encode_cursor(last_id: str) -> str:
    # The last id seen is the position: ids sort by creation time and are URL-safe, and any
    # string is a valid position, so a cursor can never point "nowhere".
    return last_id


def list_connections(
    db: Database,
    principal: Principal,
    *,
    statuses: Sequence[ConnectionStatus] = (),
    location_id: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page as `Connection` documents (plain dicts, validated by the caller's response
    model), and the cursor of the next one. Terminated connections only when asked."""
    # Each distinct set size is a statement of its own: repeats must not make new ones.
    wanted = sorted({s.value for s in statuses}) or list(LIVE_STATUSES)
    rows = repository.page_for_customer(
        db,
        principal.customer_id,
        statuses=wanted,
        location_id=location_id,
        after_id=cursor or None,
        limit=limit + 1,
    )
    documents = _documents(rows)
    if len(documents) > limit:
        return documents[:limit], encode_cursor(documents[limit - 1]["id"])
    return documents, None


def update_bandwidth(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection_id: str,
    update: BandwidthUpdate,
    policy: Policy,
    if_match: str | None = None,
    *,
    always: bool = False,
) -> tuple[Connection, BandwidthChange | None, BandwidthChange | None, list[Any]]:
    """The connection and the change (and a boost's revert) it accepted; no change when the
    bandwidth asked for is what will be in force then anyway (`is_no_op`). Last, the
    connection's pending changes after it, in the order they apply (read with its row
    locked, so the answer needs no second query): the new ones as models, the others as
    rows of `repository.pending_of` (the same attribute names). `always`: record the
    change even then (a schedule's transition must hold whatever happens to the changes
    before it)."""
    # The connection's row lock serialises its changes (and, on PostgreSQL, anything else
    # that would move what it commits); the location's row is only locked at the end, by the
    # capacity check. With If-Match, compared with the row locked, so nothing changes the
    # connection between the check and the commit.
    connection, location = _of_customer(
        principal,
        connection_id,
        lambda customer_id: repository.get_to_change(session, customer_id, connection_id),
    )
    if if_match is not None:
        check_if_match(if_match, etag(session, connection))
    # "Now" is read under the connection's lock, so its changes that are accepted one after
    # the other are also due one after the other, in that order.
    now = clock.now()
    run_at = change_time(now, update.effectiveDate, update.revertAt, policy.max_schedule_days)
    mbps = parse_bandwidth(update.bandwidth)
    if not accepts_changes(target_of(connection)):
        raise InvalidState(
            f"connection {connection.id} is {target_of(connection).value}; it cannot change"
        )
    _offered_or_400(location, mbps)
    pending = repository.pending_of(session, connection.id)
    if not always and is_no_op(connection.bandwidth_mbps, pending, mbps, run_at, update.revertAt):
        return connection, None, None, pending
    # Each pending change is a row and a job; a client may not pile them up without end.
    # Counted under the connection's lock, so concurrent requests cannot both take the last
    # slot.
    adding = 1 if update.revertAt is None else 2
    if len(pending) + adding > policy.max_pending_changes:
        raise TooManyPendingChanges(
            f"connection {connection.id} has {len(pending)} pending bandwidth changes, at most "
            f"{policy.max_pending_changes} are allowed; cancel some or wait until they apply"
        )
    change = _new_change(session, principal, connection, mbps, run_at, now, policy)
    revert = None
    if update.revertAt is not None:
        before = bandwidth_at(connection.bandwidth_mbps, pending, run_at)
        revert = _new_change(
            session, principal, connection, before, update.revertAt, now, policy, change.id
        )
    change_event(
        session, "bandwidth_change.scheduled", connection, change, now,
        effectiveDate=rfc3339(change.effective_at),
        revertAt=rfc3339(revert.effective_at) if revert is not None else None,
        revertChangeId=revert.id if revert is not None else None,
    )  # fmt: skip
    if revert is not None:
        change_event(session, "bandwidth_change.scheduled", connection, revert, now,
                     effectiveDate=rfc3339(revert.effective_at))  # fmt: skip
    # The connection commits the most it will have once these changes join its pending
    # ones; checked last, for the location's row lock to be held briefly.
    added = [c.to_mbps for c in (change, revert) if c is not None]
    # The connection's UPDATE (its figure, `updated_at`) with it, as one statement.
    pending_mbps = [*(c.to_mbps for c in pending), *added]
    capacity.recommit_locked(session, connection, pending_mbps, {"updated_at": now}, check=True)
    if update.quoteId is not None:  # the quoted rate for this tier (docs/money.md)
        billing.redeem(session, now, principal, update.quoteId, location_id=location.id,
                       mbps=mbps, connection_id=connection.id, change_id=change.id,
                       for_change_of=connection.id, effective=update.effectiveDate,
                       revert_at=update.revertAt)  # fmt: skip
    session.flush()
    # The order of `repository.pending_changes`: the new ones among those read under the lock.
    after = sorted([*pending, change, *((revert,) if revert else ())], key=_apply_order)
    return connection, change, revert, after


def _apply_order(change: BandwidthChange) -> tuple[datetime, str]:
    return change.effective_at, change.id


def is_no_op(
    current: int,
    pending: Sequence[BandwidthChange],
    mbps: int,
    at: datetime,
    revert_at: datetime | None,
) -> bool:
    """Whether a change to `mbps` at `at` would change nothing: the connection will have
    `mbps` then anyway (its bandwidth after its pending changes due by `at`, which apply
    first). A boost is one only if no pending change falls before its revert, which would
    otherwise undo it."""
    for change in pending:  # ordered by effective time
        if change.effective_at <= at:
            current = change.to_mbps
        elif revert_at is not None and change.effective_at <= revert_at:
            return False
    return current == mbps


def bandwidth_at(current: int, pending: Sequence[BandwidthChange], moment: datetime) -> int:
    """What the connection will have just before `moment`, given its pending changes."""
    for change in pending:  # ordered by effective time
        if change.effective_at < moment:
            current = change.to_mbps
    return current


def _new_change(
    session: Session,
    principal: Principal,
    connection: Connection,
    mbps: int,
    at: datetime,
    now: datetime,
    policy: Policy,
    revert_of: str | None = None,
) -> BandwidthChange:
    values = {
        "id": new_id("chg"),
        "connection_id": connection.id,
        "from_mbps": None,
        "to_mbps": mbps,
        "effective_at": at,
        "status": ChangeStatus.SCHEDULED.value,
        "requested_by": principal.client_id,
        "requested_at": now,
        "revert_of": revert_of,
    }
    # Written now with a Core INSERT (its job, flushed later, refers to it), not through the
    # ORM's flush; the object returned is not in the session: it only carries the values
    # (a later query in this transaction loads the row as usual).
    _INSERT_CHANGE.later(session, values)  # with the next round trip (`db/later.py`)
    change = BandwidthChange(**values)
    jobs.enqueue(  # an INSERT: the connection and the change are written
        session,
        jobs.APPLY_BANDWIDTH,
        connection.id,
        change_id=change.id,
        run_at=at,
        now=now,
        max_attempts=policy.max_attempts,
    )
    return change


_INSERT_CHANGE = TransactionWrite(insert(cast(Table, BandwidthChange.__table__)))


def cancel_change(
    session: Session, clock: Clock, principal: Principal, connection_id: str, change_id: str
) -> BandwidthChange:
    """Cancels a change still scheduled; cancelling a boost cancels its revert too."""
    change = get_change(session, principal, connection_id, change_id)
    # The connection's row first, then the change's: the order every writer takes them in.
    connection = repository.get_for_update(session, change.connection_id)
    assert connection is not None  # a foreign key guarantees it
    change = repository.get_change_for_update(session, change.id) or change
    session.refresh(change)
    if not cancellable(ChangeStatus(change.status)):
        raise ChangeInvalidState(_not_cancellable(change))
    reason = f"cancelled by client {principal.client_id}"
    change.status = ChangeStatus.CANCELLED.value
    change.failure_reason = reason
    now = clock.now()
    change_event(session, "bandwidth_change.cancelled", connection, change, now,
                 reason="request")  # fmt: skip
    revert = repository.revert_of(session, change.id)
    if revert is not None and revert.status == ChangeStatus.SCHEDULED.value:
        revert.status = ChangeStatus.CANCELLED.value
        revert.failure_reason = f"{reason} (its boost was cancelled)"
        change_event(session, "bandwidth_change.cancelled", connection, revert, now,
                     reason="boost_cancelled")  # fmt: skip
    capacity.recommit(session, connection)
    return change


def _not_cancellable(change: BandwidthChange) -> str:
    """Says it is the change's own state that refuses the cancel."""
    state = {
        ChangeStatus.CANCELLED.value: "is already cancelled",
        ChangeStatus.APPLIED.value: "is already applied",
        ChangeStatus.FAILED.value: "has already failed",
        ChangeStatus.APPLYING.value: "is being applied now",
    }.get(change.status, f"is {change.status}")
    return (
        f"the change {state} (bandwidth change {change.id}); only a scheduled change can be "
        "cancelled"
    )


def changes_of(session: Session, connection_id: str) -> Sequence[BandwidthChange]:
    return repository.changes_of(session, connection_id)


def changes_page(
    session: Session, connection_id: str, *, cursor: str | None, limit: int
) -> tuple[Sequence[BandwidthChange], str | None]:
    """A page of the connection's changes in effective order (then id) after the change
    `cursor` (the last of the previous page), and the next page's cursor, if any. A cursor
    that is no change of this connection is a 400 at /query/cursor."""
    after = None
    if cursor is not None:
        after = repository.get_change(session, cursor)
        if after is None or after.connection_id != connection_id:
            raise ValidationFailed.field(
                "/query/cursor",
                f"{shown(cursor)} is not a cursor of this connection's changes: pass the "
                "`nextCursor` of the previous page",
            )
    rows = repository.changes_of(session, connection_id, after=after, limit=limit + 1)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def get_change(
    session: Session, principal: Principal, connection_id: str, change_id: str
) -> BandwidthChange:
    connection = get_connection(session, principal, connection_id)
    change = repository.get_change(session, change_id) if looks_like_id(change_id) else None
    if change is None or change.connection_id != connection.id:
        raise NotFound(
            f"no bandwidth change {shown(change_id)} on connection {shown(connection_id)}"
        )
    return change


def _pending_fields(
    change_id: str, mbps: int, at: datetime, status: str, schedule_id: str | None = None
) -> dict[str, Any]:
    fields = {
        "id": change_id,
        "bandwidth": format_bandwidth(mbps),
        "effectiveDate": at,
        "status": "applying" if status == ChangeStatus.APPLYING.value else "scheduled",
    }
    if schedule_id is not None:
        fields["scheduleId"] = schedule_id
    return fields


def _pending_out(change: BandwidthChange | AnyRow) -> PendingBandwidthChange:
    return PendingBandwidthChange(
        **_pending_fields(
            change.id, change.to_mbps, change.effective_at, change.status, change.schedule_id
        )
    )


def to_schema(
    connection: Connection | AnyRow, pending: list[PendingBandwidthChange]
) -> ConnectionOut:
    """From a model or a plain row of `repository.CONNECTION_COLUMNS` (the same names)."""
    return ConnectionOut(**{**connection_fields(connection), "pendingBandwidthChanges": pending})


def connection_fields(connection: Connection | Any) -> dict[str, Any]:
    """The fields of a `Connection` document (no pending changes yet) from a model or a row
    with the columns' names; the response model validates them."""
    return {
        "id": connection.id,
        "status": connection.status,
        "bandwidth": format_bandwidth(connection.bandwidth_mbps),
        "location": connection.location_id,
        "createdAt": connection.created_at,
        "description": connection.description,
        "updatedAt": connection.updated_at,
        "ipv4Block": connection.ipv4_block,
        "pendingBandwidthChanges": [],
        "targetStatus": connection.target_status,
    }


CONNECTION_FIELDS = set(ConnectionOut.model_fields)


def etag_of(view: ConnectionOut) -> str:
    """The ETag of a connection's representation; for a subclass (the PUT result), of its
    connection part, so it equals what a GET answers for the same state."""
    return entity_tag(view, CONNECTION_FIELDS)


def etag(session: Session, connection: Connection) -> str:
    return etag_of(present(session, [connection])[0])


def present_new(connection: Connection) -> ConnectionOut:
    """`present` for a connection just created: it has no pending change yet, so no query
    (create runs this with the location's row locked)."""
    return to_schema(connection, [])


def present(session: Session, connections: Sequence[Connection]) -> list[ConnectionOut]:
    pending = repository.pending_changes(session, [c.id for c in connections])
    return [to_schema(c, [_pending_out(p) for p in pending[c.id]]) for c in connections]


def view(db: Database, principal: Principal, connection_id: str) -> ConnectionOut:
    """What GET /connections/{id} answers, from one statement (`repository.view_rows`);
    404 like `get_connection` for an id that cannot exist or is another customer's."""
    rows = (
        repository.view_rows(db, principal.customer_id, connection_id)
        if looks_like_id(connection_id)
        else ()
    )
    if not rows:
        raise NotFound(f"no connection {shown(connection_id)}")
    return ConnectionOut.model_validate(_documents(rows)[0])


def _documents(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """`Connection` documents from rows of a connection and its pending changes
    (`repository._with_pending`): one row per pending change, in the order they apply, or a
    single row for a connection without any."""
    documents: list[dict[str, Any]] = []
    for row in rows:
        if not documents or documents[-1]["id"] != row.id:
            documents.append(connection_fields(row))
        if row.change_id is not None:
            documents[-1]["pendingBandwidthChanges"].append(
                _pending_fields(
                    row.change_id,
                    row.change_mbps,
                    row.change_at,
                    row.change_status,
                    row.change_schedule,
                )
            )
    return documents


def change_to_schema(change: BandwidthChange) -> BandwidthChangeOut:
    return BandwidthChangeOut(
        id=change.id,
        fromBandwidth=format_bandwidth(change.from_mbps) if change.from_mbps else None,
        bandwidth=format_bandwidth(change.to_mbps),
        effectiveDate=change.effective_at,
        status=ChangeStatus(change.status).value,
        requestedAt=change.requested_at,
        appliedAt=change.applied_at,
        requestedBy=change.requested_by,
        failureReason=change.failure_reason,
        revertOf=change.revert_of,
        scheduleId=change.schedule_id,
    )


def present_update(
    session: Session,
    connection: Connection,
    change: BandwidthChange | None,
    revert: BandwidthChange | None,
    pending: Sequence[BandwidthChange] | None = None,
) -> BandwidthUpdateResult:
    """`pending`: the connection's pending changes in the order they apply, when the caller
    has them (`update_bandwidth` does); otherwise they are read."""
    if pending is None:
        pending = repository.pending_changes(session, [connection.id])[connection.id]
    fields = connection_fields(connection)
    fields["pendingBandwidthChanges"] = [_pending_out(p) for p in pending]
    return BandwidthUpdateResult(
        **fields,
        change=change_to_schema(change) if change is not None else None,
        revertChange=change_to_schema(revert) if revert is not None else None,
    )
