"""The set-based planner: a batch of schedules planned at once (docs/schedules.md,
"Evaluation"; the figures are in docs/performance.md, issue 17).

What one transition writes is what `connections.service.update_bandwidth` writes for a
`PUT …/bandwidth` with the transition's instant as `effectiveDate` (with `always`): the
change (with its `schedule_id`), its `apply_bandwidth` job, the connection's `updated_at`,
the capacity figures, the `bandwidth_change.scheduled` event; then its
`schedule_transitions` row and the `schedule.transition_planned` event. Calling it once per
transition costs about 12 statements and 6 ms of CPU each. Here instead:

1. The batch's rows are locked in the usual order (its connections, in id order, then its
   schedules) and read with a few statements: the connections, the schedules, the count and
   highest bandwidth of each connection's pending changes, the transitions already planned.
2. Each schedule's owed transitions are evaluated in Python (`owed`; schedules with the
   same content over the same window are evaluated once per batch).
3. The locations' rows are read without their locks and every transition is checked in
   memory, in the order the one-by-one path met them (schedules in batch order, each one's
   transitions in time order), by the rules of `update_bandwidth` in its order: the
   effective date's limit, the connection's state, the tier, the pending changes' limit,
   the location's capacity (the counter moved per change, as `capacity.recommit` does). A
   refused transition is recorded `refused` with the message the API would have answered.
4. The batch is written with a few multi-row statements: changes (streamed into their
   COPY as they are accepted), jobs, transitions (`bulk`: COPY on PostgreSQL, an INSERT
   executemany on SQLite and for a few rows), then the connections' figures, the
   schedules' `planned_until` (an UPDATE per distinct value), and last the locations'
   counters, one conditional UPDATE each that takes the row's lock and confirms the
   figures the checks used (`_settle_locations`). If they no longer hold, or a change did
   not fit on the figures read, the batch's savepoint is rolled back and steps 3 and 4 run
   again with the locations' rows locked first (a location that is really full pays for
   both passes).
   The events go through `events.record_all` and are written at the commit like every
   other. The rows are tuples (no dict per row), the changes' ids drawn at once
   (`new_ids`), the payloads' JSON text built from templates (`bulk.Encoded`), and the
   cyclic garbage collector is paused meanwhile (`bulk.gc_paused`): docs/performance.md,
   issue 17.

Exactly once: every writer of a schedule's transitions holds the schedule's row lock
(after its connection's), so the transitions read in step 1 are all there are until the
commit; an instant already planned is skipped (as the one-by-one path's savepoint rolled
it back), and the INSERT is a plain one: a duplicate would fail the whole batch rather than
plan twice. A planner killed mid-batch commits nothing; its job runs again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Executable,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from iod import events
from iod.connections import jobs as connection_jobs
from iod.connections.repository import _PENDING
from iod.domain import schedules as calendar
from iod.domain.bandwidth import format_bandwidth
from iod.domain.capacity import committed_mbps, fits
from iod.domain.status import ChangeStatus, ConnectionStatus, accepts_changes
from iod.domain.tiers import is_offered
from iod.infra.clock import as_utc, rfc3339
from iod.infra.db import bulk, uow
from iod.infra.errors import (
    CapacityExceeded,
    InvalidState,
    ProblemError,
    TooManyPendingChanges,
    ValidationFailed,
)
from iod.infra.ids import new_ids
from iod.jobs.queue import JobState
from iod.jobs.registry import TASKS
from iod.models import (
    BandwidthChange,
    Connection,
    Job,
    Location,
    Schedule,
    ScheduleTransition,
)

_connections = cast(Table, Connection.__table__)
_schedules = cast(Table, Schedule.__table__)
_locations = cast(Table, Location.__table__)
_changes = cast(Table, BandwidthChange.__table__)
_jobs = cast(Table, Job.__table__)
_transitions = cast(Table, ScheduleTransition.__table__)

_SCHEDULED = ChangeStatus.SCHEDULED.value
_TERMINATED = ConnectionStatus.TERMINATED.value


# --- evaluation ----------------------------------------------------------------------------


SpecKey = tuple[Any, ...]


def spec_key(schedule: Any) -> SpecKey:
    """What a schedule's evaluation depends on, hashable (a `Schedule` or a row with its
    columns' names): schedules with equal keys plan the same transitions."""
    return (
        schedule.time_zone,
        schedule.default_mbps,
        tuple((r["mbps"], r["start"], r["end"], r["recurrence"]) for r in schedule.rules),
        tuple((e["date"], e.get("mbps")) for e in schedule.exceptions),
        schedule.anchor,
        as_utc(schedule.valid_from) if schedule.valid_from else None,
        as_utc(schedule.valid_until) if schedule.valid_until else None,
    )


@lru_cache(maxsize=4096)
def spec_of_key(key: SpecKey) -> calendar.Spec:
    """The calendar's `Spec` of a schedule's content, built once per content: its zone and
    times parsed, its RRULEs parsed (`calendar.recurrence`, cached too)."""
    time_zone, default_mbps, rules, exceptions, anchor, valid_from, valid_until = key
    return calendar.Spec(
        zone=calendar.zone(time_zone),
        default_mbps=default_mbps,
        rules=tuple(
            calendar.Rule(
                mbps,
                calendar.parse_time(start),
                calendar.parse_time(end, end=True),
                recurrence,
            )
            for mbps, start, end, recurrence in rules
        ),
        anchor=date.fromisoformat(anchor),
        exceptions={date.fromisoformat(day): mbps for day, mbps in exceptions},
        valid_from=valid_from,
        valid_until=valid_until,
    )


@dataclass(frozen=True)
class Owed:
    """A transition to plan: its instant (the key of its `schedule_transitions` row), when
    its change takes effect (the instant, or now for one owed now), the bandwidth."""

    at: datetime
    effective: datetime
    mbps: int


def owed(
    spec: calendar.Spec,
    planned_until: datetime | None,
    now: datetime,
    until: datetime,
    *,
    initial: bool,
) -> tuple[list[Owed], datetime]:
    """The transitions a schedule owes up to `until`, from where its planning stopped, and
    its new `planned_until`.

    `initial` (create, edit, resume) or never planned: the bandwidth it asks for now, now.
    Planned up to before now (workers down): the last transition missed, now (keyed by its
    own instant). Then every transition in (begin, until]."""
    begin = planned_until
    due: list[Owed] = []
    if initial or begin is None:
        current = calendar.value_at(spec, now)
        if current is not None:
            due.append(Owed(now, now, current))
        begin = now
    elif begin < now:
        missed = calendar.last_transition(spec, begin, now)
        if missed is not None:
            due.append(Owed(missed.at, now, missed.mbps))
        begin = now
    if begin < until:
        _, found = calendar.transitions(spec, begin, until)
        due += [Owed(t.at, t.at, t.mbps) for t in found]
    return due, max(until, begin)


# --- the batch's state, read with its rows locked --------------------------------------------


@dataclass
class _Connection:
    id: str
    customer_id: str
    location_id: str
    status: str
    target_status: str | None
    bandwidth_mbps: int
    committed_mbps: int
    pending: int = 0  # its pending changes (scheduled or applying)
    highest: int | None = None  # the highest bandwidth among them
    changed: bool = False  # a change was planned: `updated_at` moves

    def committed_with(self, mbps: int) -> int:
        """What it commits once a change to `mbps` joins its pending ones."""
        pending = [mbps] if self.highest is None else [self.highest, mbps]
        return committed_mbps(self.bandwidth_mbps, pending)


@dataclass
class _Location:
    id: str
    capacity_mbps: int
    committed_mbps: int
    tiers_mbps: list[int]
    read_mbps: int  # the counter as read: the UPDATE applies the difference
    # The most the counter rose above `read_mbps` when a change was checked (None: no
    # change accepted here): the optimistic check's condition (`_settle_locations`).
    peak: int | None = None


class _Stale(Exception):
    """The locations' figures a batch was checked against, read without their locks, no
    longer hold: the batch is checked again with the rows locked."""


@dataclass
class _Refusal:
    schedule_id: str
    owed: Owed
    detail: str


def _among(session: Session, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
    """`column IN (ids)`; on PostgreSQL `column = ANY(:ids)`, one array parameter: the
    statement's text is the same whatever the batch's size, and neither SQLAlchemy nor
    psycopg renders a placeholder per id (a tenth of the planner's CPU with `IN` lists of
    500: docs/performance.md, issue 17). Both are planned as the same index probes."""
    if session.get_bind().dialect.name == "postgresql":
        return cast("ColumnElement[bool]", column == any_(literal(list(ids), ARRAY(String))))
    return cast("ColumnElement[bool]", column.in_(ids))


def _lock_connections(session: Session, ids: Sequence[str]) -> dict[str, _Connection]:
    c = _connections.c
    rows = session.execute(
        select(c.id, c.customer_id, c.location_id, c.status, c.target_status,
               c.bandwidth_mbps, c.committed_mbps)
        .where(_among(session, c.id, ids))
        .order_by(c.id)
        .with_for_update()
    ).all()  # fmt: skip
    found = {row.id: _Connection(*row) for row in rows}
    pending = session.execute(
        select(_changes.c.connection_id, func.count(), func.max(_changes.c.to_mbps))
        .where(_among(session, _changes.c.connection_id, ids), _changes.c.status.in_(_PENDING))
        .group_by(_changes.c.connection_id)
    ).all()
    for connection_id, count, highest in pending:
        found[connection_id].pending = count
        found[connection_id].highest = highest
    return found


_SCHEDULE_COLUMNS = (
    "id", "customer_id", "connection_id", "time_zone", "default_mbps", "rules", "exceptions",
    "valid_from", "valid_until", "paused", "anchor", "planned_until", "created_by",
)  # fmt: skip


def _lock_schedules(session: Session, ids: Sequence[str]) -> list[Any]:
    c = _schedules.c
    return list(
        session.execute(
            select(*(c[name] for name in _SCHEDULE_COLUMNS))
            .where(_among(session, c.id, ids))
            .order_by(c.id)
            .with_for_update()
        ).all()
    )


def _planned_already(
    session: Session, schedule_ids: Sequence[str], since: datetime
) -> set[tuple[str, datetime]]:
    """(schedule, instant) of the transitions planned (or refused) from `since` on.

    On PostgreSQL a LATERAL subquery per schedule id, fenced by `OFFSET 0` so it is not
    pulled up into a join: its only plan is then the primary key (schedule_id, at) probed
    once per id, whatever the table's statistics say. A join (the plain `IN (…)`, or the
    LATERAL without its fence) was planned as a scan of the whole table when they were
    missing or stale (a table grown by planning since its last ANALYZE): 0.1 s a batch at
    700,000 rows."""
    t = _transitions.c
    if session.get_bind().dialect.name == "postgresql":
        statement: Executable = _PLANNED_ALREADY_PG.bindparams(ids=list(schedule_ids), since=since)
    else:
        statement = select(t.schedule_id, t.at).where(
            t.schedule_id.in_(schedule_ids), t.at >= since
        )
    return {(row[0], as_utc(row[1])) for row in session.execute(statement).all()}


_PLANNED_ALREADY_PG = (
    text(
        "SELECT found.schedule_id, found.at FROM unnest(:ids) AS ids(id) CROSS JOIN LATERAL"
        " (SELECT t.schedule_id, t.at FROM schedule_transitions AS t"
        " WHERE t.schedule_id = ids.id AND t.at >= :since OFFSET 0) AS found"
    )
    .bindparams(
        bindparam("ids", type_=ARRAY(String)), bindparam("since", type_=_transitions.c.at.type)
    )
    .columns(_transitions.c.schedule_id, _transitions.c.at)
)


def _read_locations(session: Session, ids: Iterable[str], *, lock: bool) -> dict[str, _Location]:
    c = _locations.c
    statement = (
        select(c.id, c.capacity_mbps, c.committed_mbps, c.tiers_mbps)
        .where(c.id.in_(sorted(set(ids))))
        .order_by(c.id)
    )
    rows = session.execute(statement.with_for_update() if lock else statement).all()
    return {
        row.id: _Location(row.id, row.capacity_mbps, row.committed_mbps, list(row.tiers_mbps),
                          row.committed_mbps)
        for row in rows
    }  # fmt: skip


def keyed_lookups(session: Session) -> None:
    """For the rest of the transaction (PostgreSQL), no sequential scan where an index
    serves: every statement of a planner's transaction looks rows up by key (a batch's few
    hundred connections, schedules, changes), in tables that planning grows by hundreds of
    thousands of rows between two ANALYZEs. With statistics that old, PostgreSQL planned
    some of them as scans of the whole table (the UPDATE of a batch's connections, the due
    schedules' join): 4 of the 33 s of the backends' CPU at 100,000 schedules
    (docs/performance.md, issue 17). `SET LOCAL`: the planner's own transactions only."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))


# --- the rules of update_bandwidth, in memory ------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The knobs of `connections.service.Policy` that planning uses."""

    max_attempts: int
    max_schedule_days: int
    max_pending_changes: int


def _refusal(
    connection: _Connection,
    location: _Location,
    mbps: int,
    effective: datetime,
    now: datetime,
    limits: Limits,
) -> tuple[ProblemError | None, int]:
    """Why `update_bandwidth` would refuse the change (None: accepted), in the order it
    checks, and the connection's committed figure with it."""
    max_schedule_days, max_pending_changes = limits.max_schedule_days, limits.max_pending_changes
    if effective > now + timedelta(days=max_schedule_days):
        return ValidationFailed.field(
            "/effectiveDate", f"must be at most {max_schedule_days} days ahead"
        ), 0
    target = connection.target_status or connection.status
    if not accepts_changes(ConnectionStatus(target)):
        return InvalidState(f"connection {connection.id} is {target}; it cannot change"), 0
    if not is_offered(mbps, location.tiers_mbps):
        offered = ", ".join(format_bandwidth(t) for t in location.tiers_mbps)
        return ValidationFailed.field(
            "/bandwidth",
            f"{format_bandwidth(mbps)} is not offered at {location.id}; offered: {offered}",
        ), 0
    if connection.pending + 1 > max_pending_changes:
        return TooManyPendingChanges(
            f"connection {connection.id} has {connection.pending} pending bandwidth changes, "
            f"at most {max_pending_changes} are allowed; cancel some or wait until they apply"
        ), 0
    # `capacity.recommit(..., check=True)`: checked even when the figure does not move.
    new = connection.committed_with(mbps)
    old = connection.committed_mbps
    if not fits(location.capacity_mbps, location.committed_mbps, new - old):
        free = max(location.capacity_mbps - (location.committed_mbps - old), 0)
        return CapacityExceeded(
            f"location {location.id} has {format_bandwidth(location.capacity_mbps)} of "
            f"capacity and {free} Mbps uncommitted; {format_bandwidth(new)} does not fit"
        ), 0
    return None, new


# --- the batch -------------------------------------------------------------------------------


def plan_batch(
    session: Session,
    now: datetime,
    limits: Limits,
    horizon: timedelta,
    schedule_ids: Sequence[str],
    connection_ids: Sequence[str],
    *,
    initial: bool = False,
    before: datetime | None = None,
) -> tuple[int, dict[str, datetime]]:
    """Plans the schedules' transitions up to `now + horizon`; returns how many changes it
    planned and each planned schedule's new `planned_until`.

    `connection_ids`: the schedules' connections (locked first). Skipped: a schedule gone,
    paused, on a terminated connection, or (`before`, the planner's top-up) planned up to
    `before` already (an edit did it meanwhile). `initial`: see `owed`."""
    if not schedule_ids:
        return 0, {}
    session.flush()  # the caller's ORM changes first: the rows below are read as they are
    with bulk.gc_paused():  # the batch's many small objects (`bulk.gc_paused`)
        connections = _lock_connections(session, sorted(set(connection_ids)))
        rows = []
        for row in _lock_schedules(session, sorted(set(schedule_ids))):
            connection = connections.get(row.connection_id)
            if row.paused or connection is None or connection.status == _TERMINATED:
                continue
            planned = as_utc(row.planned_until) if row.planned_until is not None else None
            if before is not None and planned is not None and planned >= before:
                continue  # planned meanwhile (an edit)
            rows.append(row)
        order = {schedule_id: index for index, schedule_id in enumerate(schedule_ids)}
        rows.sort(key=lambda row: order[row.id])  # the caller's order: the one-by-one path's
        until = now + horizon
        evaluated: dict[tuple[SpecKey, datetime | None], tuple[list[Owed], datetime]] = {}
        plans: list[tuple[Any, list[Owed], datetime]] = []
        for row in rows:
            begin = as_utc(row.planned_until) if row.planned_until is not None else None
            key = (spec_key(row), None if initial else begin)
            if key not in evaluated:
                evaluated[key] = owed(spec_of_key(key[0]), begin, now, until, initial=initial)
            due, planned_until = evaluated[key]
            plans.append((row, due, planned_until))
        instants = [o.at for _, due, _ in plans for o in due]
        already = set()
        if instants:
            already = _planned_already(session, [row.id for row in rows], min(instants))
        at = {connections[row.connection_id].location_id for row in rows}
        # Optimistic first: checked against the locations' figures read without their locks,
        # which are taken only by the UPDATE at the end (`_settle_locations`), so a batch
        # holds them for its last statements alone and two batches overlap until then. If
        # the figures no longer hold by then (or a change did not fit), the savepoint goes
        # and the batch is checked again with the rows locked first.
        as_read = {key: replace(value) for key, value in connections.items()}
        try:
            with session.begin_nested():
                return _check_and_write(
                    session, now, limits, plans, connections,
                    _read_locations(session, at, lock=False), already, optimistic=True,
                )  # fmt: skip
        except _Stale:
            pass
        return _check_and_write(
            session, now, limits, plans, as_read, _read_locations(session, at, lock=True),
            already, optimistic=False,
        )  # fmt: skip


# The columns of the rows written, in the order of the tuples built below.
_CHANGE_COLUMNS = (
    "id", "connection_id", "from_mbps", "to_mbps", "effective_at", "status", "requested_by",
    "requested_at", "revert_of", "schedule_id",
)  # fmt: skip
_JOB_COLUMNS = (
    "kind", "args", "lock_key", "queue", "connection_id", "change_id", "state", "run_at",
    "scheduled_at", "attempts", "max_attempts", "created_at",
)  # fmt: skip
_TRANSITION_COLUMNS = ("schedule_id", "at", "mbps", "outcome", "change_id", "detail", "created_at")


def _check_and_write(
    session: Session,
    now: datetime,
    limits: Limits,
    plans: list[tuple[Any, list[Owed], datetime]],
    connections: dict[str, _Connection],
    locations: dict[str, _Location],
    already: set[tuple[str, datetime]],
    *,
    optimistic: bool,
) -> tuple[int, dict[str, datetime]]:
    """Checks the transitions in order and writes the batch. The rows are tuples in the
    columns' order (no dict per row); the changes go into their COPY as they are accepted,
    so PostgreSQL takes them in while the rest is built (`bulk.rows_into`). The ids of the
    changes are drawn at once (`new_ids`), the instants' and bandwidths' texts made once.

    `optimistic`: the locations were read without their locks; a change that does not fit
    raises `_Stale` (its refusal's figures would be the unlocked ones), and the figures
    are confirmed at the end (`_settle_locations`)."""
    registered = TASKS.get(connection_jobs.APPLY_BANDWIDTH)
    queue = registered.queue if registered is not None else "default"
    kind, queued = connection_jobs.APPLY_BANDWIDTH, JobState.QUEUED.value
    attempts, max_pending = limits.max_attempts, limits.max_pending_changes
    latest = now + timedelta(days=limits.max_schedule_days)  # the effective date's limit
    expected = sum(len(due) for _, due, _ in plans)
    change_ids = iter(new_ids("chg", expected))
    jobs: list[tuple[Any, ...]] = []
    transitions: list[tuple[Any, ...]] = []
    # (name, customer, subject, payload) of the events, in the one-by-one path's order
    recorded: list[tuple[str, str, str, dict[str, Any]]] = []
    planned_until: dict[str, datetime] = {}
    texts: dict[datetime, str] = {}  # rfc3339 of each instant met
    bandwidths: dict[int, str] = {}  # format_bandwidth of each figure met
    due_now = False
    with bulk.rows_into(session, _changes, _CHANGE_COLUMNS, expected) as write_change:
        for row, due, until in plans:
            schedule_id, connection = row.id, connections[row.connection_id]
            location = locations[connection.location_id]
            connection_id, lock_key = connection.id, connection_jobs.lock_key(connection.id)
            # Checked once per schedule: what `_refusal` checks per change that no change
            # of the batch moves (the state, the tiers offered), and whether the ids can go
            # into the JSON templates as they are.
            changeable = accepts_changes(
                ConnectionStatus(connection.target_status or connection.status)
            )
            plain = all(map(_plain, (connection_id, row.connection_id, schedule_id)))
            for item in due:
                if (schedule_id, item.at) in already:
                    continue  # planned already (another worker, or this job before a crash)
                run_at = item.effective if item.effective > now else now
                mbps = item.mbps
                new = 0
                if (
                    run_at <= latest
                    and changeable
                    and mbps in location.tiers_mbps
                    and connection.pending < max_pending
                ):
                    new = connection.committed_with(mbps)
                    ok = fits(location.capacity_mbps, location.committed_mbps,
                              new - connection.committed_mbps)  # fmt: skip
                    if not ok and optimistic:
                        raise _Stale
                else:
                    ok = False
                if not ok:  # refused: `_refusal` says why, in `update_bandwidth`'s words
                    refused, _ = _refusal(connection, location, mbps, run_at, now, limits)
                    assert refused is not None  # the checks above are its checks
                    # Not retried: a transition that cannot be planned is skipped, and says why.
                    transitions.append((schedule_id, item.at, mbps, "refused", None,
                                        refused.detail[:500], now))  # fmt: skip
                    continue
                change_id = next(change_ids)
                transitions.append((schedule_id, item.at, mbps, "planned", change_id, None,
                                    now))  # fmt: skip
                write_change((change_id, connection_id, None, mbps, run_at, _SCHEDULED,
                              row.created_by, now, None, schedule_id))  # fmt: skip
                jobs.append((kind, _job_args(connection_id, change_id, plain), lock_key,
                             queue, connection_id, change_id, queued, run_at, run_at, 0,
                             attempts, now))  # fmt: skip
                due_now = due_now or run_at <= now
                location.committed_mbps += new - connection.committed_mbps
                rise = location.committed_mbps - location.read_mbps
                if location.peak is None or rise > location.peak:
                    location.peak = rise
                connection.committed_mbps = new
                connection.pending += 1
                connection.highest = mbps if connection.highest is None else max(
                    connection.highest, mbps)  # fmt: skip
                connection.changed = True
                bandwidth = bandwidths.get(mbps)
                if bandwidth is None:
                    bandwidth = bandwidths[mbps] = _checked(format_bandwidth(mbps))
                effective = texts.get(run_at) or texts.setdefault(run_at, _checked(rfc3339(run_at)))
                at = texts.get(item.at) or texts.setdefault(item.at, _checked(rfc3339(item.at)))
                # `change_event`'s (the connection's customer) and the schedule's own.
                recorded.append(("bandwidth_change.scheduled", connection.customer_id,
                                 connection_id, _scheduled(connection_id, change_id, bandwidth,
                                                           effective, plain)))  # fmt: skip
                recorded.append(("schedule.transition_planned", row.customer_id,
                                 row.connection_id, _transition_planned(
                                     row.connection_id, schedule_id, change_id, bandwidth, at,
                                     effective, plain)))  # fmt: skip
            planned_until[schedule_id] = until
    _write(session, now, jobs, transitions, connections, locations, planned_until, optimistic)
    # The changes are the schedule's doing, not the caller's: the service's events (null
    # actor), as the one-by-one path's were.
    caller = events.current_actor(session)
    events.act_as(session, None)
    try:
        events.record_all(session, now, recorded)
    finally:
        events.act_as(session, caller)
    if due_now:
        uow.wake(session, "jobs")
    return len(jobs), planned_until


def _plain(text: str) -> bool:
    """Whether `json.dumps` writes `text` as it is, between quotes (no escape needed)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _checked(text: str) -> str:
    if not _plain(text):
        raise ValueError(f"{text!r} would need escaping in JSON")
    return text


# The JSON objects of a transition, with their text as `json.dumps` writes it (the same keys
# in the same order, ", " and ": "), so the COPY does not encode them (`bulk.Encoded`). The
# strings are ids, bandwidths and instants checked `_plain`; `plain` False (an id that
# would need escaping) gives plain dicts, encoded as usual.


def _job_args(connection_id: str, change_id: str, plain: bool) -> dict[str, Any]:
    if not plain:
        return {"connectionId": connection_id, "changeId": change_id}
    return bulk.Encoded(
        f'{{"connectionId": "{connection_id}", "changeId": "{change_id}"}}',
        connectionId=connection_id, changeId=change_id,
    )  # fmt: skip


def _scheduled(
    connection_id: str, change_id: str, bandwidth: str, effective: str, plain: bool
) -> dict[str, Any]:
    """`bandwidth_change.scheduled`'s payload."""
    values: dict[str, Any] = {
        "connectionId": connection_id, "changeId": change_id, "bandwidth": bandwidth,
        "revertOf": None, "effectiveDate": effective, "revertAt": None, "revertChangeId": None,
    }  # fmt: skip
    if not plain:
        return values
    return bulk.Encoded(
        f'{{"connectionId": "{connection_id}", "changeId": "{change_id}", '
        f'"bandwidth": "{bandwidth}", "revertOf": null, "effectiveDate": "{effective}", '
        '"revertAt": null, "revertChangeId": null}', **values,
    )  # fmt: skip


def _transition_planned(
    connection_id: str, schedule_id: str, change_id: str, bandwidth: str, at: str,
    effective: str, plain: bool,
) -> dict[str, Any]:  # fmt: skip
    """`schedule.transition_planned`'s payload."""
    values: dict[str, Any] = {
        "connectionId": connection_id, "scheduleId": schedule_id, "changeId": change_id,
        "bandwidth": bandwidth, "transitionAt": at, "effectiveDate": effective,
    }  # fmt: skip
    if not plain:
        return values
    return bulk.Encoded(
        f'{{"connectionId": "{connection_id}", "scheduleId": "{schedule_id}", '
        f'"changeId": "{change_id}", "bandwidth": "{bandwidth}", "transitionAt": "{at}", '
        f'"effectiveDate": "{effective}"}}', **values,
    )  # fmt: skip


def _write(
    session: Session,
    now: datetime,
    jobs: list[tuple[Any, ...]],
    transitions: list[tuple[Any, ...]],
    connections: dict[str, _Connection],
    locations: dict[str, _Location],
    planned_until: dict[str, datetime],
    optimistic: bool,
) -> None:
    """The batch's jobs and transitions, a statement per table (`bulk.insert_tuples`: COPY
    on PostgreSQL; the changes are in already), then the figures: an UPDATE per distinct
    value (a batch's connections commit a few figures, its schedules share their
    `planned_until`), the locations last (`optimistic`: `_settle_locations`; else their rows
    are locked already and the difference is exact). Loaded objects are brought up to date
    without being marked dirty."""
    bulk.insert_tuples(session, _jobs, _JOB_COLUMNS, jobs)
    bulk.insert_tuples(session, _transitions, _TRANSITION_COLUMNS, transitions)
    db = session.connection()
    moved = [c for c in connections.values() if c.changed]
    for committed, ids in _by_value((c.committed_mbps, c.id) for c in moved).items():
        db.execute(
            update(_connections)
            .where(_among(session, _connections.c.id, ids))
            .values(committed_mbps=committed, updated_at=now)
        )
    for until, ids in _by_value((u, sid) for sid, u in planned_until.items()).items():
        db.execute(
            update(_schedules)
            .where(_among(session, _schedules.c.id, ids))
            .values(planned_until=until)
        )
    # The locations last: their rows are the ones other batches and requests wait for.
    if optimistic:
        shifted = _settle_locations(session, locations)
    else:
        shifted = [loc for loc in locations.values() if loc.committed_mbps != loc.read_mbps]
        for location in shifted:  # the row is locked: the difference is exact
            db.execute(
                update(_locations)
                .where(_locations.c.id == location.id)
                .values(
                    committed_mbps=_locations.c.committed_mbps
                    + (location.committed_mbps - location.read_mbps)
                )
            )
    _sync(session, Connection, {c.id: {"committed_mbps": c.committed_mbps, "updated_at": now}
                                for c in moved})  # fmt: skip
    _sync(session, Schedule, {sid: {"planned_until": until}
                              for sid, until in planned_until.items()})  # fmt: skip
    _sync(session, Location, {loc.id: {"committed_mbps": loc.committed_mbps}
                              for loc in shifted})  # fmt: skip


def _settle_locations(session: Session, locations: dict[str, _Location]) -> list[_Location]:
    """The optimistic batch's locations, in id order (the lock order): each counter moves by
    what the batch added, on condition that every check still passes on the figure the row
    has now, with its lock. A change's check was `read + rise <= capacity` (`fits`) with
    the rise so far, so all pass on the current figure exactly when `current + peak` does;
    and the tiers must be the ones the changes were checked against. Otherwise `_Stale`
    (the caller's savepoint undoes the batch's rows). Returns the locations, their figures
    as written."""
    c = _locations.c
    db = session.connection()
    for location in sorted(locations.values(), key=lambda loc: loc.id):
        statement = update(_locations).where(c.id == location.id)
        if location.peak is not None:
            statement = statement.where(fits(c.capacity_mbps, c.committed_mbps, location.peak))
        row = db.execute(
            statement.values(
                committed_mbps=c.committed_mbps + (location.committed_mbps - location.read_mbps)
            ).returning(c.committed_mbps, c.tiers_mbps)
        ).first()
        if row is None or list(row.tiers_mbps) != location.tiers_mbps:
            raise _Stale
        location.committed_mbps = row.committed_mbps
    return list(locations.values())


def _by_value(pairs: Iterable[tuple[Any, str]]) -> dict[Any, list[str]]:
    """The ids of each value, in the order met."""
    grouped: dict[Any, list[str]] = {}
    for value, key in pairs:
        grouped.setdefault(value, []).append(key)
    return grouped


def _sync(session: Session, model: type[Any], values: dict[str, dict[str, Any]]) -> None:
    """Objects of `model` loaded in this session take the values just written."""
    for key, fields in values.items():
        loaded = session.identity_map.get(session.identity_key(model, key))
        if loaded is not None:
            for name, value in fields.items():
                set_committed_value(loaded, name, value)
