"""Domain events: recorded by services and worker tasks on the unit of work, written by its
commit to the append-only `events` table in the same transaction (a transactional outbox).

Each customer's events get positions 1, 2, 3, … without gaps and in commit order: the commit
takes the next positions from the customer's `event_streams` row with one UPDATE, which
holds that row's lock until the transaction ends, so a second transaction of the same
customer takes its positions only after the first has committed (or rolled back, giving
them back). Then the in-transaction subscribers run (the audit log), and after the commit
the listeners of the topic "events" are woken (`Database.listen`, NOTIFY `iod_events` on
PostgreSQL). The names and payloads are documented in docs/events.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Integer,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from iod.infra.db import TransactionSelect, TransactionWrite, bulk, uow
from iod.models import Event, EventStream

# Names in use, for documentation and a guard against typos (docs/events.md).
NAMES = frozenset(
    {
        "connection.ordered",
        "connection.activated",
        "connection.provisioning_failed",
        "connection.suspend_requested",
        "connection.resume_requested",
        "connection.terminate_requested",
        "connection.suspended",
        "connection.resumed",
        "connection.terminated",
        "connection.action_failed",
        "bandwidth_change.scheduled",
        "bandwidth_change.applied",
        "bandwidth_change.failed",
        "bandwidth_change.cancelled",
        "client.secret_rotated",
        "schedule.created",
        "schedule.updated",
        "schedule.deleted",
        "schedule.transition_planned",
        "webhook_endpoint.disabled",
        # the customer portal's people (iod.portal)
        "portal_user.created",
        "portal_user.link_issued",
        "portal_user.password_set",
        "portal_user.signed_in",
        "portal_user.sign_in_failed",
        "portal_user.locked",
        "portal_user.signed_out",
        "portal_user.role_changed",
        "portal_user.disabled",
        "portal_user.enabled",
        "quote.created",
        "usage.rated",
        "statement.closed",
    }
)

_ACTOR_KEY = "iod.actor"


class PendingEvent(NamedTuple):
    name: str
    customer_id: str
    subject_id: str
    payload: dict[str, Any]
    actor: dict[str, Any] | None
    at: datetime


class WrittenEvent(NamedTuple):
    """An event as its subscribers see it: written, with its position. Its fields are
    columns of the `events` table (all but the serial id), so it is the row a COPY writes
    (`WrittenEvent._fields` the columns: no dict per event)."""

    customer_id: str
    position: int
    name: str
    subject_id: str
    payload: dict[str, Any]
    actor: dict[str, Any] | None
    at: datetime


Subscriber = Callable[[Session, list[WrittenEvent]], None]
Ahead = Callable[[Session, list[str]], None]
_subscribers: list[Subscriber] = []
_ahead: list[Ahead] = []


def subscribe(subscriber: Subscriber, *, ahead: Ahead | None = None) -> Subscriber:
    """Runs `subscriber` in every transaction that writes events, after they are written
    (with their positions): what it writes commits or rolls back with them. `ahead`, if
    given, runs just before the events are written, with their customers' ids (sorted): a
    read it queues there (`TransactionSelect.later`) goes with the events' own round trip
    on PostgreSQL instead of one of its own after them (issue 14)."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)
        if ahead is not None:
            _ahead.append(ahead)
    return subscriber


def act_as(session: Session, actor: dict[str, Any] | None) -> None:
    """Who the transaction acts for (the edge sets it: an API client, an operator); the
    events recorded in it carry it. None: the service itself (the worker)."""
    session.info[_ACTOR_KEY] = actor


def current_actor(session: Session) -> dict[str, Any] | None:
    """Who the transaction acts for (`act_as`), None for the service itself."""
    actor: dict[str, Any] | None = session.info.get(_ACTOR_KEY)
    return actor


def record(
    session: Session,
    name: str,
    *,
    customer_id: str,
    subject_id: str,
    at: datetime,
    **payload: Any,
) -> None:
    """Records a domain event on the session's unit of work; written at its commit."""
    if name not in NAMES:
        raise ValueError(f"unknown event name {name!r}: add it to iod.events.NAMES and docs")
    actor = session.info.get(_ACTOR_KEY)
    uow.record(session, PendingEvent(name, customer_id, subject_id, payload, actor, at))


def record_all(
    session: Session, at: datetime, recorded: Iterable[tuple[str, str, str, dict[str, Any]]]
) -> None:
    """`record` for many events at once (a schedule planner's batch): each `(name,
    customer_id, subject_id, payload)`, all at `at`, for the transaction's actor."""
    actor = session.info.get(_ACTOR_KEY)
    pending = [
        PendingEvent(name, customer_id, subject_id, payload, actor, at)
        for name, customer_id, subject_id, payload in recorded
    ]
    unknown = {event.name for event in pending} - NAMES
    if unknown:
        raise ValueError(f"unknown event names {sorted(unknown)}: add them to iod.events.NAMES")
    where = session.get_nested_transaction()
    uow.of(session).events.extend((where, event) for event in pending)


@uow.on_commit
def _write(session: Session, pending: list[Any]) -> None:
    if len(pending) < bulk.COPY_FROM:
        _write_events(session, pending)
    else:
        with bulk.gc_paused():  # many small objects (a schedule planner's batch)
            _write_events(session, pending)


def _write_events(session: Session, pending: list[Any]) -> None:
    by_customer: dict[str, list[PendingEvent]] = {}
    for event in pending:
        by_customer.setdefault(event.customer_id, []).append(event)
    for ahead in _ahead:
        ahead(session, sorted(by_customer))
    new_stream = False  # the folded statement found no stream row of the customer
    if len(by_customer) == 1 and len(pending) <= _FOLDED_MOST:
        # A request's transaction: on PostgreSQL the position and the rows in one statement.
        written = _advance_and_insert(session, pending[0].customer_id, pending)
        if written:
            _written(session, written)
            return
        new_stream = written is not None
    rows: list[WrittenEvent] = []
    # Customers in a fixed order, so two transactions never wait on each other's rows.
    for customer_id in sorted(by_customer):
        events = by_customer[customer_id]
        last = _advance(session, customer_id, len(events), new=new_stream)
        first = last - len(events) + 1
        rows += [
            WrittenEvent(customer_id, position, e.name, e.subject_id, e.payload, e.actor, e.at)
            for position, e in zip(range(first, last + 1), events, strict=True)
        ]
    # A Core INSERT on the table, on the transaction's connection (one statement, many rows;
    # not the ORM's bulk INSERT, whose bookkeeping costs more than the statement): the rows
    # are never read back here. Many rows (a schedule planner's batch) are a COPY on
    # PostgreSQL (`bulk.insert_tuples`: the events are the rows).
    if len(rows) < bulk.COPY_FROM:
        _INSERT_EVENTS.execute(session, [row._asdict() for row in rows])
    else:
        bulk.insert_tuples(session, _events, WrittenEvent._fields, rows)
    _written(session, rows)


def _written(session: Session, rows: list[WrittenEvent]) -> None:
    for subscriber in _subscribers:
        subscriber(session, rows)
    uow.wake(session, "events")


def _advance_and_insert(
    session: Session, customer_id: str, events: list[PendingEvent]
) -> list[WrittenEvent] | None:
    """On PostgreSQL, `_advance` and the events' INSERT as one statement (a data-modifying
    WITH: the stream's row is updated, and locked, first), one round trip fewer in every
    write that records events (issue 14). None on SQLite (no such WITH); no rows when the
    customer has no stream row yet (nothing was written: the caller's path makes it)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    count = len(events)
    statement = _FOLDED.get(count)
    if statement is None:
        statement = _FOLDED[count] = _folded(count)
    params: dict[str, Any] = {"stream": customer_id, "count": count}
    for n, event in enumerate(events):
        params.update({f"name_{n}": event.name, f"subject_{n}": event.subject_id,
                       f"payload_{n}": event.payload, f"actor_{n}": event.actor,
                       f"at_{n}": event.at})  # fmt: skip
    returned = statement.rows(session, **params)
    if not returned:
        return []
    first = min(row.position for row in returned)
    return [
        WrittenEvent(customer_id, first + n, e.name, e.subject_id, e.payload, e.actor, e.at)
        for n, e in enumerate(events)
    ]


_FOLDED_MOST = 8  # more events (a planner's batch): the general path
_FOLDED: dict[int, TransactionSelect] = {}


def _folded(count: int) -> TransactionSelect:
    """`count` events of one customer: its position moved on by `count` and the rows at
    the positions it passed, numbered in the order they were recorded."""
    values = ", ".join(
        f"({n}, :name_{n}, :subject_{n}, :payload_{n}, :actor_{n}, :at_{n})" for n in range(count)
    )
    # `values` is placeholders named by integers: no text of anyone's goes into the SQL.
    sql = (
        "WITH advanced AS (UPDATE event_streams SET position = position + :count"  # noqa: S608
        " WHERE customer_id = :stream RETURNING position)"
        " INSERT INTO events (customer_id, position, name, subject_id, payload, actor, at)"
        " SELECT :stream, advanced.position - :count + 1 + v.n, v.name, v.subject_id,"
        " v.payload, v.actor, v.at"
        " FROM advanced, (VALUES " + values + ") AS v (n, name, subject_id, payload, actor, at)"
        " RETURNING events.position"
    )
    statement = text(sql).bindparams(
        bindparam("stream", type_=String),
        bindparam("count", type_=Integer),
        *(bindparam(f"name_{n}", type_=String) for n in range(count)),
        *(bindparam(f"subject_{n}", type_=String) for n in range(count)),
        # The columns' own types: bound (and cast) as the general path's INSERT binds them,
        # so the stored text is the same (a missing actor is JSON null, not SQL NULL).
        *(bindparam(f"payload_{n}", type_=_events.c.payload.type) for n in range(count)),
        *(bindparam(f"actor_{n}", type_=_events.c.actor.type) for n in range(count)),
        *(bindparam(f"at_{n}", type_=_events.c.at.type) for n in range(count)),
    )
    return TransactionSelect(statement.columns(position=Integer))


def _advance(session: Session, customer_id: str, count: int, *, new: bool = False) -> int:
    """Moves the customer's position on by `count` (locking its row to the commit) and
    returns the new last position. `new`: the customer had no stream row a moment ago (the
    UPDATE is not tried again)."""
    rows = [] if new else _ADVANCE.rows(session, stream=customer_id, count=count)
    if not rows:  # the customer's first event: its row, or another transaction's just made
        first = _FIRST[session.connection().dialect.name]
        rows = first.rows(session, stream=customer_id, count=count)
    return int(rows[0].position)


# Compiled once, run straight on the transaction's DBAPI connection (`TransactionSelect`,
# `TransactionWrite`): on every write transaction, SQLAlchemy's execution cost more than
# the statements themselves (docs/performance.md, issue 14 item 2). No loaded object holds
# these rows.
_events = cast(Table, Event.__table__)
_INSERT_EVENTS = TransactionWrite(insert(_events))
_streams = cast(Table, EventStream.__table__)
_ADVANCE = TransactionSelect(
    update(_streams)
    .where(_streams.c.customer_id == bindparam("stream", type_=String))
    .values(position=_streams.c.position + bindparam("count", type_=Integer))
    .returning(_streams.c.position)
)


def _first_advance(insert: Any) -> TransactionSelect:
    """INSERT the counter at `count`, or (a concurrent first write made the row: it waits
    for that transaction, as the UPDATE would) move it on: one statement (issue 14, a
    customer's first write)."""
    statement = insert(_streams).values(
        customer_id=bindparam("stream", type_=String), position=bindparam("count", type_=Integer)
    )
    return TransactionSelect(
        statement.on_conflict_do_update(
            index_elements=[_streams.c.customer_id],
            set_={"position": _streams.c.position + statement.excluded.position},
        ).returning(_streams.c.position)
    )


_FIRST = {"sqlite": _first_advance(sqlite.insert), "postgresql": _first_advance(postgresql.insert)}


def stream(session: Session, customer_id: str, after: int = 0, limit: int = 100) -> list[Event]:
    """A customer's events after `after`, in position order."""
    return list(
        session.scalars(
            select(Event)
            .where(Event.customer_id == customer_id, Event.position > after)
            .order_by(Event.position)
            .limit(limit)
        ).all()
    )


def prune(session: Session, before: datetime, batch: int = 10_000) -> int:
    """Deletes up to `batch` events older than `before`; returns how many. Positions are
    not reused: a customer's counter row stays."""
    ids = session.scalars(select(Event.id).where(Event.at < before).limit(batch)).all()
    if ids:
        session.execute(delete(Event).where(Event.id.in_(ids)))
    return len(ids)
