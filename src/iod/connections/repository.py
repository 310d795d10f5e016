"""Queries for connections and bandwidth changes, always scoped to a customer where asked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeAlias, cast

from sqlalchemy import FromClause, Row, Select, String, Table, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from iod.domain.status import PENDING_CHANGE_STATUSES, ConnectionStatus
from iod.infra.db import Database, TransactionSelect, TransactionSelectIn, as_loaded
from iod.jobs.queue import JobState
from iod.models import BandwidthChange, Connection, Job, Location

_PENDING = [s.value for s in PENDING_CHANGE_STATUSES]
# A plain result row of any columns (SQLAlchemy Core).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

# Hot reads select plain rows (SQLAlchemy Core) instead of ORM objects: a row has the same
# attribute names as the model (`row.bandwidth_mbps`), costs a fraction to load, and the
# statements are built once here, so SQLAlchemy compiles each of them once per process.
_connections = Connection.__table__.c
_changes = BandwidthChange.__table__.c
_locations = Location.__table__.c
CONNECTION_COLUMNS = (
    _connections.id,
    _connections.status,
    _connections.target_status,
    _connections.bandwidth_mbps,
    _connections.location_id,
    _connections.description,
    _connections.ipv4_block,
    _connections.created_at,
    _connections.updated_at,
)
_PENDING_COLUMNS = (
    _changes.connection_id,
    _changes.id,
    _changes.to_mbps,
    _changes.effective_at,
    _changes.status,
)

# `status IN (...)` spelt out as `=` ... OR: SQLAlchemy renders an IN list anew on every
# execution (an "expanding" parameter), which cost a fifth of this read.
_pending_status = or_(*(_changes.status == status for status in _PENDING))


def _with_pending(connections: FromClause, columns: Iterable[Any], id_column: Any) -> Select[Any]:
    """`columns` of `connections` with their pending changes: one row per pending change,
    or a single row with NULL change columns for a connection without any. The caller
    orders the rows (by connection, then `_changes.effective_at, _changes.id`)."""
    return select(
        *columns,
        _changes.id.label("change_id"),
        _changes.to_mbps.label("change_mbps"),
        _changes.effective_at.label("change_at"),
        _changes.status.label("change_status"),
        _changes.schedule_id.label("change_schedule"),
    ).select_from(
        connections.outerjoin(
            BandwidthChange.__table__,
            and_(_changes.connection_id == id_column, _pending_status),
        )
    )


# A connection of one customer and its pending changes, in the order they apply.
_VIEW = (
    _with_pending(Connection.__table__, CONNECTION_COLUMNS, _connections.id)
    .where(
        _connections.id == bindparam("connection_id"),
        _connections.customer_id == bindparam("customer_id"),
    )
    .order_by(_changes.effective_at, _changes.id)
)


def view_rows(db: Database, customer_id: str, connection_id: str) -> Sequence[Any]:
    """The rows of `_VIEW` (named tuples); none when the customer has no such connection.
    The hottest read: run as a `PreparedSelect`, see there."""
    return db.prepared(_VIEW).rows(connection_id=connection_id, customer_id=customer_id)


def get_for_customer(
    session: Session, customer_id: str, connection_id: str, *, lock: bool = False
) -> Connection | None:
    """`lock`: with its row locked (PostgreSQL) and its columns as stored, in one SELECT,
    run straight on the transaction's connection (`TransactionSelect`, issue 14)."""
    if lock:
        rows = _LOCKED_FOR_CUSTOMER.rows(session, id=connection_id, customer=customer_id)
        if not rows:
            return None
        loaded: Connection | None = as_loaded(session, Connection, rows[0])
        if loaded is not None:
            return loaded
    statement = select(Connection).where(
        Connection.id == connection_id, Connection.customer_id == customer_id
    )
    if lock:  # the session holds the object with changes not flushed: the ORM's way
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.scalar(statement)


_LOCKED_FOR_CUSTOMER = TransactionSelect(
    select(*Connection.__table__.c)
    .where(
        _connections.id == bindparam("id", type_=String),
        _connections.customer_id == bindparam("customer", type_=String),
    )
    .with_for_update()
)


def get_to_change(
    session: Session, customer_id: str, connection_id: str
) -> tuple[Connection, Location | Offer] | None:
    """`get_for_customer(..., lock=True)` and `offer_of` its location in one SELECT (issue
    14: a change's reads): the connection's row locked (`FOR UPDATE OF connections` on
    PostgreSQL; the location's row is read, not locked) with its location's tiers. Its
    pending changes are not joined: on PostgreSQL a row lock that had to wait sees the
    locked row as committed since, but the joined rows as of the statement's start, and a
    change committed in between would be missed (`pending_of` reads them after the lock).
    The tiers are likewise those of the statement's start: a catalog change committed while
    the change waited for the connection's lock is not seen (the location's row is not
    locked by a change in any case, so a catalog change never waits for it)."""
    rows = _TO_CHANGE.rows(session, id=connection_id, customer=customer_id)
    if not rows:
        return None
    values = rows[0]._asdict()
    offer = _Offer(values["location_id"], values.pop("offer_tiers_mbps"))
    loaded: Connection | None = as_loaded(session, Connection, values)
    if loaded is None:  # the session holds it with changes not flushed: the ORM's way
        loaded = get_for_customer(session, customer_id, connection_id, lock=True)
        assert loaded is not None  # locked above: it cannot have gone
    held = session.identity_map.get(session.identity_key(Location, (offer.id,)))
    return loaded, (cast(Location, held) if held is not None else cast(Offer, offer))


class _Offer(NamedTuple):
    id: str
    tiers_mbps: list[int]


_TO_CHANGE = TransactionSelect(
    select(*Connection.__table__.c, _locations.tiers_mbps.label("offer_tiers_mbps"))
    .join_from(Connection, Location, _connections.location_id == _locations.id)
    .where(
        _connections.id == bindparam("id", type_=String),
        _connections.customer_id == bindparam("customer", type_=String),
    )
    .with_for_update(of=Connection.__table__)
)


def get(session: Session, connection_id: str) -> Connection | None:
    return session.get(Connection, connection_id)


def get_for_update(session: Session, connection_id: str) -> Connection | None:
    """The connection with its row locked (PostgreSQL). Writers that touch a connection and
    its changes lock the connection first, then the changes, then the location."""
    return session.get(Connection, connection_id, with_for_update=True, populate_existing=True)


def pending_changes(
    session: Session, connection_ids: Sequence[str]
) -> dict[str, list[BandwidthChange]]:
    result: dict[str, list[BandwidthChange]] = {cid: [] for cid in connection_ids}
    if not connection_ids:
        return result
    rows = session.scalars(
        select(BandwidthChange)
        .where(
            BandwidthChange.connection_id.in_(connection_ids),
            BandwidthChange.status.in_(_PENDING),
        )
        .order_by(BandwidthChange.effective_at, BandwidthChange.id)
    )
    for change in rows:
        result[change.connection_id].append(change)
    return result


def pending_of(session: Session, connection_id: str) -> list[Any]:
    """`pending_changes` of one connection as plain rows (the model's attribute names), in
    the order they apply: one prepared statement on the transaction's connection."""
    return _PENDING_OF.rows(session, id=connection_id)


_PENDING_OF = TransactionSelect(
    select(
        _changes.id,
        _changes.connection_id,
        _changes.to_mbps,
        _changes.effective_at,
        _changes.status,
        _changes.schedule_id,
        _changes.revert_of,
    )
    .where(_changes.connection_id == bindparam("id", type_=String), _pending_status)
    .order_by(_changes.effective_at, _changes.id)
)


class Offer(Protocol):
    """What a change needs of its location: the tiers it offers."""

    id: str
    tiers_mbps: list[int]


def location(session: Session, location_id: str) -> Location | None:
    """`locations.repository.get` for an order: the Location the session holds, or one
    prepared read of its row (`TransactionSelect`) made a loaded object (`as_loaded`)
    rather than the ORM's load by primary key."""
    held = session.identity_map.get(session.identity_key(Location, (location_id,)))
    if held is not None:
        return cast(Location, held)
    rows = _LOCATION.rows(session, id=location_id)
    if not rows:
        return None
    loaded = as_loaded(session, Location, rows[0])
    return cast(Location, loaded) if loaded is not None else session.get(Location, location_id)


_LOCATION = TransactionSelect(
    select(*Location.__table__.c).where(_locations.id == bindparam("id", type_=String))
)


def get_change(session: Session, change_id: str) -> BandwidthChange | None:
    return session.get(BandwidthChange, change_id)


def _committed_per_connection(session: Session) -> tuple[Any, Any]:
    """What each live connection commits, as a SQL expression over `connections` outer-joined
    to the max of its pending changes (the join's right side is returned too)."""
    pending_max = (
        select(
            BandwidthChange.connection_id.label("cid"),
            func.max(BandwidthChange.to_mbps).label("mx"),
        )
        .where(BandwidthChange.status.in_(_PENDING))
        .group_by(BandwidthChange.connection_id)
        .subquery()
    )
    per_connection = func.coalesce(
        func.max(Connection.bandwidth_mbps, pending_max.c.mx)
        if session.get_bind().dialect.name == "sqlite"
        else func.greatest(Connection.bandwidth_mbps, pending_max.c.mx),
        Connection.bandwidth_mbps,
    )
    return per_connection, pending_max


def committed_at_location(
    session: Session, location_id: str, exclude_connection_id: str | None = None
) -> int:
    """Sum over live connections of the most each has or will have (pending changes).

    The reference the maintained counters (`capacity.recommit`) are checked against; it
    costs O(connections at the location), so the request paths no longer call it."""
    per_connection, pending_max = _committed_per_connection(session)
    query = (
        select(func.coalesce(func.sum(per_connection), 0))
        .select_from(Connection)
        .outerjoin(pending_max, pending_max.c.cid == Connection.id)
        .where(
            Connection.location_id == location_id,
            Connection.status != ConnectionStatus.TERMINATED.value,
        )
    )
    if exclude_connection_id is not None:
        query = query.where(Connection.id != exclude_connection_id)
    return int(session.scalar(query) or 0)


def committed_per_connection(session: Session) -> dict[str, int]:
    """What every live connection commits, recomputed (terminated ones are absent: 0)."""
    per_connection, pending_max = _committed_per_connection(session)
    query = (
        select(Connection.id, per_connection)
        .outerjoin(pending_max, pending_max.c.cid == Connection.id)
        .where(Connection.status != ConnectionStatus.TERMINATED.value)
    )
    return {cid: int(mbps) for cid, mbps in session.execute(query)}


def pending_mbps(session: Session, connection_id: str) -> list[int]:
    """The `to_mbps` of the connection's pending changes."""
    return list(
        session.scalars(
            select(BandwidthChange.to_mbps).where(
                BandwidthChange.connection_id == connection_id,
                BandwidthChange.status.in_(_PENDING),
            )
        )
    )


def loaded_by_ids(
    session: Session,
    model: type[Connection] | type[BandwidthChange],
    ids: Iterable[str],
    *,
    lock: bool = False,
) -> list[Any]:
    """The rows of `ids` (sorted by id; missing ones left out) as the session's loaded
    objects: one statement compiled once (`TransactionSelectIn`, on the transaction's
    connection) made loaded objects by `as_loaded`, rather than the ORM's loading of an IN
    query built anew (issue 14: the worker's batches). `lock`: the rows locked (PostgreSQL),
    in id order."""
    found: list[Any] = []
    for row in _BY_IDS[(model, lock)].rows(session, sorted(set(ids))):
        loaded = as_loaded(session, model, row)
        if loaded is None:  # the session holds it with changes not flushed: the ORM's way
            loaded = session.get(model, row.id, with_for_update=lock)
        found.append(loaded)
    return found


def _by_ids(table: Table, lock: bool) -> TransactionSelectIn:
    def build(ids: Any) -> Select[Any]:
        query = select(*table.c).where(ids).order_by(table.c.id)
        return query.with_for_update() if lock else query

    return TransactionSelectIn(table.c.id, build)


_BY_IDS = {
    (model, lock): _by_ids(cast(Table, model.__table__), lock)
    for model in (Connection, BandwidthChange)
    for lock in (False, True)
}


def pending_mbps_of(session: Session, connection_ids: Sequence[str]) -> dict[str, list[Any]]:
    """`pending_mbps` of several connections in one statement compiled once: per
    connection, its pending changes as (connection_id, id, to_mbps) rows."""
    result: dict[str, list[Any]] = {cid: [] for cid in connection_ids}
    for row in _PENDING_MBPS_OF.rows(session, connection_ids):
        result[row.connection_id].append(row)
    return result


_PENDING_MBPS_OF = TransactionSelectIn(
    _changes.connection_id,
    lambda ids: select(_changes.connection_id, _changes.id, _changes.to_mbps).where(
        ids, _pending_status
    ),
)


def get_change_for_update(session: Session, change_id: str) -> BandwidthChange | None:
    """Locks the change row (PostgreSQL) so a cancel and the worker cannot both win."""
    return session.get(BandwidthChange, change_id, with_for_update=True)


def changes_of(
    session: Session,
    connection_id: str,
    *,
    after: BandwidthChange | None = None,
    limit: int | None = None,
) -> Sequence[BandwidthChange]:
    """The connection's changes in effective order, then by id (a change's effective
    instant never moves): all, or at most `limit` of those after the change `after`."""
    statement = select(BandwidthChange).where(BandwidthChange.connection_id == connection_id)
    if after is not None:
        statement = statement.where(
            or_(
                BandwidthChange.effective_at > after.effective_at,
                and_(
                    BandwidthChange.effective_at == after.effective_at,
                    BandwidthChange.id > after.id,
                ),
            )
        )
    statement = statement.order_by(BandwidthChange.effective_at, BandwidthChange.id)
    if limit is not None:
        statement = statement.limit(limit)
    return session.scalars(statement).all()


def revert_of(session: Session, change_id: str) -> BandwidthChange | None:
    return session.scalar(select(BandwidthChange).where(BandwidthChange.revert_of == change_id))


def _page_statement(statuses: int, by_location: bool, after: bool) -> Select[Any]:
    """One page of a customer's connections and their pending changes in one statement: one
    row per pending change, in the order they apply, or one row with NULL change columns.
    Binds: customer_id, wanted_0.., location_id, after_id, limit."""
    page = select(*CONNECTION_COLUMNS).where(
        _connections.customer_id == bindparam("customer_id"),
        or_(*(_connections.status == bindparam(f"wanted_{i}") for i in range(statuses))),
    )
    if by_location:
        page = page.where(_connections.location_id == bindparam("location_id"))
    if after:
        page = page.where(_connections.id > bindparam("after_id"))
    rows = page.order_by(_connections.id).limit(bindparam("limit")).subquery("page")
    return _with_pending(rows, rows.c, rows.c.id).order_by(
        rows.c.id, _changes.effective_at, _changes.id
    )


# Built once per shape (how many statuses, whether by location, whether after a cursor).
_PAGES: dict[tuple[int, bool, bool], Select[Any]] = {}


def page_for_customer(
    db: Database,
    customer_id: str,
    *,
    statuses: Sequence[str],
    location_id: str | None,
    after_id: str | None,
    limit: int,
) -> Sequence[Any]:
    """Keyset pagination on the id, which sorts by creation time: rows inserted while a
    client pages land after its cursor or before it, never twice and never shifting a page.
    The rows of `_page_statement` (named tuples): the page and its pending changes read in
    one statement, so consistent with each other."""
    shape = (len(statuses), location_id is not None, after_id is not None)
    statement = _PAGES.get(shape)
    if statement is None:
        statement = _PAGES[shape] = _page_statement(*shape)
    params: dict[str, Any] = {f"wanted_{i}": status for i, status in enumerate(statuses)}
    if location_id is not None:
        params["location_id"] = location_id
    if after_id is not None:
        params["after_id"] = after_id
    return db.prepared(statement).rows(customer_id=customer_id, limit=limit, **params)


def not_terminated(session: Session) -> Sequence[AnyRow]:
    """Every connection the network may hold: id, location, Mbps, status, IPv4 block."""
    return session.execute(
        select(
            Connection.id,
            Connection.location_id,
            Connection.bandwidth_mbps,
            Connection.status,
            Connection.ipv4_block,
        ).where(Connection.status != ConnectionStatus.TERMINATED.value)
    ).all()


def with_work_due(session: Session, until: datetime) -> set[str]:
    """The connections with a job running, or queued to run by `until`."""
    busy = session.scalars(
        select(Job.connection_id)
        .where(
            or_(
                Job.state == JobState.RUNNING.value,
                (Job.state == JobState.QUEUED.value) & (Job.run_at <= until),
            )
        )
        .where(Job.connection_id.is_not(None))
        .distinct()
    ).all()
    return {connection_id for connection_id in busy if connection_id is not None}
