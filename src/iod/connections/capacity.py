"""The maintained capacity figures: what each connection commits, and their sum per location.

A live connection commits the most it has or will have: its bandwidth or any pending change's
(`iod.domain.capacity.committed_mbps`); a terminated one commits nothing. Summing that over a
location's connections on every order costs O(connections at the location), so each
connection stores its figure (`connections.committed_mbps`) and each location the sum
(`locations.committed_mbps`).

`recommit` is the one place that keeps them in step. Whatever changes what a connection
commits (a change scheduled, applied, failed or cancelled, a termination) calls it in the
same transaction, after the change. It takes the connection's row lock, recomputes the
figure, and applies the difference to the location's row in place. An order writes its new
connection's row with its figure (`committed_by_new`), and `reserve_new` counts it at the
location with the same checked UPDATE. An increase that is
checked (an order, a change) is a conditional `UPDATE ... WHERE committed + d <= capacity`
(the condition built by `iod.domain.capacity.fits`, the rule's one statement):
atomic on both databases, so concurrent orders can never over-commit a location, and the
location's row is locked only from that statement to the commit. Callers therefore call it
last, so the location's lock is the last row lock the service takes (connection rows
first: no deadlock between an order, a change and the worker's batches). Only the commit's
event writer comes after it: the customer's `event_streams` counter row, taken in customer
order by every transaction, never before a location.

`repository.committed_at_location` stays the reference: `check` compares every figure with
it, and `check(..., repair=True)` rewrites them (`iod db check-capacity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from iod.connections import repository
from iod.domain.bandwidth import format_bandwidth
from iod.domain.capacity import committed_mbps, fits
from iod.domain.status import ConnectionStatus
from iod.infra.db import TransactionSelect, update_loaded
from iod.infra.errors import CapacityExceeded
from iod.models import Connection, Location

_locations = Location.__table__.c
# The counters are written with UPDATE statements, not through loaded objects (which
# `_sync_location` brings up to date instead).
_NO_SYNC = {"synchronize_session": False}
_TERMINATED = ConnectionStatus.TERMINATED.value


def recommit(
    session: Session,
    connection: Connection,
    pending_mbps: Iterable[int] | None = None,
    *,
    check: bool = False,
) -> None:
    """Brings `connection.committed_mbps` and its location's sum up to date.

    `pending_mbps`: the `to_mbps` of all the connection's pending changes, when the caller
    has read them with the connection's row locked (an order, a change); otherwise (None) the
    row is locked and they are read here.
    `check`: refuse with 409 `/problems/capacity-exceeded` when the location's capacity would
    be exceeded; the comparison is the one `committed_at_location` made before the counter:
    the other connections' sum plus this connection's new figure against the capacity (so
    with an unchanged figure it still refuses at a location already over its capacity).
    """
    session.flush()  # the caller's changes first: they decide the figure
    if pending_mbps is None:
        # Locked and re-read: another transaction may have moved the figure since the
        # connection was loaded, and ours must start from the stored one.
        session.refresh(
            connection, ["status", "bandwidth_mbps", "committed_mbps"], with_for_update=True
        )
        pending_mbps = repository.pending_mbps(session, connection.id)
    old = connection.committed_mbps
    new = (
        0
        if connection.status == _TERMINATED
        else committed_mbps(connection.bandwidth_mbps, pending_mbps)
    )
    connection.committed_mbps = new
    delta = new - old
    if check:
        _reserve(session, connection.location_id, old, new)
    elif delta:
        session.execute(
            update(Location)
            .where(_locations.id == connection.location_id)
            .values(committed_mbps=_locations.committed_mbps + delta)
            .execution_options(**_NO_SYNC)
        )
        _sync_location(session, connection.location_id)


def recommit_locked(
    session: Session,
    connection: Connection,
    pending_mbps: Iterable[int],
    changes: dict[str, Any],
    *,
    check: bool = False,
) -> None:
    """`recommit` for a connection whose row this transaction has locked and read, with
    the `to_mbps` of all its pending changes known: `changes` (other columns of the
    connection) and its new figure are written in one UPDATE (`db.update_loaded`, no flush
    of the ORM), then the location's counter. The same rows, figures and lock order as
    `recommit`: the connection's row, then the location's."""
    status = changes.get("status", connection.status)
    bandwidth = changes.get("bandwidth_mbps", connection.bandwidth_mbps)
    assert isinstance(bandwidth, int)
    old = connection.committed_mbps
    new = 0 if status == _TERMINATED else committed_mbps(bandwidth, pending_mbps)
    # Sent with the next round trip (the row is locked: its count is checked then).
    update_loaded(session, connection, {**changes, "committed_mbps": new}, send_later=True)
    session.flush()  # the caller's other changes (usually none) before the location's lock
    if check:
        _reserve(session, connection.location_id, old, new)
    elif new != old:
        (row,) = _MOVE.rows(session, location=connection.location_id, delta=new - old)
        _sync_location(session, connection.location_id, row.committed_mbps, row.ipv4_next)


def committed_by_new(bandwidth_mbps: int) -> int:
    """What a connection just ordered commits (no pending change yet): its row is written
    with it, and `reserve_new` counts it at its location."""
    return committed_mbps(bandwidth_mbps, ())


def reserve_new(session: Session, connection: Connection) -> None:
    """`recommit(..., check=True)` for a connection just ordered, whose row was written
    with its figure (`committed_by_new`) in this transaction: only the location's checked
    UPDATE, no second write of the connection's row (issue 14). The location's row is
    locked from here to the commit, as by `recommit`."""
    session.flush()  # the caller's changes first, as `recommit`
    _reserve(session, connection.location_id, 0, connection.committed_mbps)


def _reserve(session: Session, location_id: str, old: int, new: int) -> None:
    """The checked update: applies `new - old` only if the location's capacity allows it."""
    delta = new - old

    def checked(done: list[Any]) -> None:
        if done:
            _sync_location(session, location_id, done[0].committed_mbps, done[0].ipv4_next)
        else:
            _refuse(session, location_id, old, new)

    # Compiled once and run on the transaction's DBAPI connection: on every order and
    # change, building it and SQLAlchemy's execution cost more than the statement
    # (docs/performance.md). Where the location is not loaded in the session (a change),
    # nothing reads its counter before the commit: the UPDATE goes with the transaction's
    # next round trip (`db/later.py`), the check on its row before the commit. On
    # PostgreSQL the location's row is then locked from that round trip, not from here:
    # the statements before the commit are sent with it or one round trip later, not one
    # by one while every other change at the location waits for the row (issue 14).
    if session.identity_map.get(session.identity_key(Location, location_id)) is None:
        _RESERVE.later(session, checked, location=location_id, delta=delta)
    else:
        checked(_RESERVE.rows(session, location=location_id, delta=delta))


def _refuse(session: Session, location_id: str, old: int, new: int) -> None:
    """The 409 for a checked update that did not fit."""
    row = session.execute(
        select(_locations.capacity_mbps, _locations.committed_mbps).where(
            _locations.id == location_id
        )
    ).one()
    free = max(row.capacity_mbps - (row.committed_mbps - old), 0)
    raise CapacityExceeded(
        f"location {location_id} has {format_bandwidth(row.capacity_mbps)} of capacity "
        f"and {free} Mbps uncommitted; {format_bandwidth(new)} does not fit"
    )


def _build_reserve() -> TransactionSelect:
    """The checked UPDATE, its condition stated by `domain.capacity.fits` (the one rule),
    compiled once (`TransactionSelect`)."""
    return TransactionSelect(
        update(cast(Table, Location.__table__))
        .where(
            _locations.id == bindparam("location", type_=String),
            fits(
                _locations.capacity_mbps,
                _locations.committed_mbps,
                bindparam("delta", type_=Integer),
            ),
        )
        .values(committed_mbps=_locations.committed_mbps + bindparam("delta", type_=Integer))
        .returning(_locations.committed_mbps, _locations.ipv4_next)
    )


_RESERVE = _build_reserve()
# The unchecked move of the location's counter (a change applied, a figure that goes down).
_MOVE = TransactionSelect(
    update(cast(Table, Location.__table__))
    .where(_locations.id == bindparam("location", type_=String))
    .values(committed_mbps=_locations.committed_mbps + bindparam("delta", type_=Integer))
    .returning(_locations.committed_mbps, _locations.ipv4_next)
)


def _sync_location(
    session: Session, location_id: str, committed: int | None = None, ipv4_next: int | None = None
) -> None:
    """A Location loaded in this session has stale counters after an UPDATE that the ORM did
    not write: they take the values the UPDATE returned (the row is locked from then on, so
    they stay true), or are expired, and the next read of them loads the stored ones. The
    order's IPv4 block is then allocated from the fresh `ipv4_next` without another query."""
    location = session.identity_map.get(session.identity_key(Location, location_id))
    if location is None:
        return
    # Inside a savepoint the values are expired, never set: its rollback would not expire
    # values set behind the ORM's back, and they would outlive the rows they came from.
    if committed is None or ipv4_next is None or session.in_nested_transaction():
        session.expire(location, ["committed_mbps", "ipv4_next"])
    else:
        set_committed_value(location, "committed_mbps", committed)
        set_committed_value(location, "ipv4_next", ipv4_next)


@dataclass(frozen=True)
class Mismatch:
    """A stored figure that differs from the one recomputed from the connections."""

    kind: str  # "connection" or "location"
    id: str
    stored: int
    expected: int


def check(session: Session, *, repair: bool = False) -> list[Mismatch]:
    """Every stored figure against its recomputation (`committed_at_location` for the
    locations); with `repair`, the wrong ones are rewritten. In a write transaction
    (`Database.write`): SQLite's write lock, or on PostgreSQL a SHARE lock on the three
    tables, holds writers back until it commits, so what it compares is one state."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE connections, bandwidth_changes, locations IN SHARE MODE"))
    per_connection = repository.committed_per_connection(session)
    found = _compare(
        session,
        "connection",
        Connection,
        lambda cid: per_connection.get(cid, 0),
        repair=repair,
    )
    found += _compare(
        session,
        "location",
        Location,
        lambda lid: repository.committed_at_location(session, lid),
        repair=repair,
    )
    if repair:
        session.expire_all()
    return found


def _compare(
    session: Session,
    kind: str,
    model: type[Connection] | type[Location],
    expected_of: Callable[[str], int],
    *,
    repair: bool,
) -> list[Mismatch]:
    """The rows of `model` whose stored figure is not `expected_of(id)`; rewritten if asked."""
    found = []
    for row_id, stored in session.execute(select(model.id, model.committed_mbps)).all():
        want = expected_of(row_id)
        if stored != want:
            found.append(Mismatch(kind, row_id, stored, want))
            if repair:
                session.execute(
                    update(model)
                    .where(model.id == row_id)
                    .values(committed_mbps=want)
                    .execution_options(**_NO_SYNC)
                )
    return found
