"""Use cases for schedules: create, read, edit, pause, delete, preview, and planning their
transitions as ordinary scheduled bandwidth changes (docs/schedules.md). Services flush;
the caller's edge commits.

Lock order, as everywhere: the connection's row first, then the schedule's, then the
changes and the location (planning: `planner.plan_batch`, connections and schedules of a
batch each in id order, its locations last).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from iod import events
from iod.auth.tokens import Principal
from iod.connections import capacity
from iod.connections import service as connections
from iod.connections.lifecycle import change_event, target_of
from iod.domain import schedules as calendar
from iod.domain.bandwidth import format_bandwidth, parse_bandwidth
from iod.domain.status import ChangeStatus, ConnectionStatus, accepts_changes
from iod.domain.tiers import is_offered
from iod.infra.clock import Clock, as_utc
from iod.infra.db import Database
from iod.infra.errors import (
    FieldError,
    InvalidState,
    NotFound,
    ScheduleExists,
    ValidationFailed,
    shown,
)
from iod.infra.ids import looks_like_id, new_id
from iod.locations import repository as locations
from iod.models import Connection, Location, Schedule
from iod.schedules import planner, repository
from iod.schedules.schemas import (
    PreviewTransition,
    ScheduleException,
    ScheduleExceptionOut,
    SchedulePatch,
    SchedulePreview,
    ScheduleRequest,
    ScheduleRule,
    ScheduleRuleOut,
)
from iod.schedules.schemas import Schedule as ScheduleOut

MAX_PREVIEW = timedelta(days=31)
log = structlog.get_logger("iod.schedules")


@dataclass(frozen=True)
class Planning:
    """The knobs planning needs from Settings."""

    horizon: timedelta = timedelta(hours=48)
    batch: int = 50

    @property
    def margin(self) -> timedelta:
        """A schedule is topped up once it is planned less than `horizon - margin` ahead, so
        a planner run touches each schedule about once an hour, not every run."""
        return min(timedelta(hours=1), self.horizon / 2)


# --- reading and presenting --------------------------------------------------------------


def spec_of(schedule: Schedule) -> calendar.Spec:
    """The schedule's content as the calendar evaluates it (built once per content)."""
    return planner.spec_of_key(planner.spec_key(schedule))


def to_schema(schedule: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.id,
        connectionId=schedule.connection_id,
        timeZone=schedule.time_zone,
        defaultBandwidth=format_bandwidth(schedule.default_mbps),
        rules=[
            ScheduleRuleOut(
                bandwidth=format_bandwidth(r["mbps"]),
                start=r["start"],
                end=r["end"],
                recurrence=r["recurrence"],
            )
            for r in schedule.rules
        ],
        exceptions=[
            ScheduleExceptionOut(
                date=e["date"],
                bandwidth=format_bandwidth(e["mbps"]) if e.get("mbps") is not None else None,
            )
            for e in schedule.exceptions
        ],
        validFrom=schedule.valid_from,
        validUntil=schedule.valid_until,
        paused=schedule.paused,
        description=schedule.description,
        plannedUntil=schedule.planned_until,
        createdAt=schedule.created_at,
        updatedAt=schedule.updated_at,
    )


def _connection(
    session: Session, principal: Principal, connection_id: str, *, lock: bool = False
) -> Connection:
    return connections.get_connection(session, principal, connection_id, lock=lock)


def get(
    session: Session,
    principal: Principal,
    connection_id: str,
    schedule_id: str,
    *,
    lock: bool = False,
) -> tuple[Connection, Schedule]:
    """The connection and its schedule; 404 for anything not the customer's (or not the
    connection's): existence is not leaked."""
    connection = _connection(session, principal, connection_id, lock=lock)
    schedule = (
        repository.get_for_customer(session, principal.customer_id, schedule_id, lock=lock)
        if looks_like_id(schedule_id)
        else None
    )
    if schedule is None or schedule.connection_id != connection.id:
        raise NotFound(f"no schedule {shown(schedule_id)} on connection {shown(connection_id)}")
    return connection, schedule


def of_connection(session: Session, principal: Principal, connection_id: str) -> list[Schedule]:
    connection = _connection(session, principal, connection_id)
    found = repository.of_connection(session, connection.id)
    return [found] if found is not None else []


def page(
    session: Session, principal: Principal, cursor: str | None, limit: int
) -> tuple[list[Schedule], str | None]:
    rows = list(repository.page_for_customer(session, principal.customer_id, cursor, limit + 1))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


# --- writing -----------------------------------------------------------------------------


def _offered(location: Location, mbps: int, pointer: str) -> None:
    if not is_offered(mbps, location.tiers_mbps):
        offered = ", ".join(format_bandwidth(t) for t in location.tiers_mbps)
        raise ValidationFailed.field(
            pointer, f"{format_bandwidth(mbps)} is not offered at {location.id}; offered: {offered}"
        )


def _rules(location: Location, rules: Sequence[ScheduleRule]) -> list[dict[str, Any]]:
    stored = []
    for index, rule in enumerate(rules):
        mbps = parse_bandwidth(rule.bandwidth)
        _offered(location, mbps, f"/rules/{index}/bandwidth")
        start = calendar.parse_time(rule.start)
        end = calendar.parse_time(rule.end, end=True)
        if start == end:
            raise ValidationFailed.field(
                f"/rules/{index}/end", "must differ from start (use 00:00 to 24:00 for a day)"
            )
        stored.append(
            {"mbps": mbps, "start": rule.start, "end": rule.end, "recurrence": rule.recurrence}
        )
    return stored


def _exceptions(location: Location, items: Sequence[ScheduleException]) -> list[dict[str, Any]]:
    stored = []
    for index, item in enumerate(items):
        mbps = None
        if item.bandwidth is not None:
            mbps = parse_bandwidth(item.bandwidth)
            _offered(location, mbps, f"/exceptions/{index}/bandwidth")
        stored.append({"date": item.date, "mbps": mbps})
    return sorted(stored, key=lambda e: str(e["date"]))


def _window(valid_from: datetime | None, valid_until: datetime | None) -> None:
    # The calendar's arithmetic (local dates, days around a window) stays in range.
    for name, moment in (("validFrom", valid_from), ("validUntil", valid_until)):
        if moment is not None and not _in_years(moment):
            raise ValidationFailed.field(f"/{name}", "must be within the years 1970 to 9000 (UTC)")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ValidationFailed.field("/validUntil", "must be after validFrom")


def _in_years(moment: datetime) -> bool:
    """Whether the instant is within the years 1970 to 9000 in UTC (whatever its offset)."""
    return 1970 <= moment.astimezone(UTC).year <= 9000


def _anchor(schedule_zone: str, valid_from: datetime | None, now: datetime) -> str:
    return (valid_from or now).astimezone(calendar.zone(schedule_zone)).date().isoformat()


def _check_recurrences(schedule: Schedule) -> None:
    anchor = date.fromisoformat(schedule.anchor)
    for index, rule in enumerate(schedule.rules):
        try:
            calendar.recurrence(rule["recurrence"], anchor)
        except calendar.ScheduleError as exc:
            raise ValidationFailed.field(f"/rules/{index}/recurrence", str(exc)) from None


def _location(session: Session, connection: Connection) -> Location:
    location = locations.get(session, connection.location_id)
    assert location is not None  # a foreign key guarantees it
    return location


def _schedule_event(session: Session, name: str, schedule: Schedule, at: datetime) -> None:
    events.record(
        session,
        name,
        customer_id=schedule.customer_id,
        subject_id=schedule.connection_id,
        at=at,
        connectionId=schedule.connection_id,
        scheduleId=schedule.id,
        paused=schedule.paused,
        version=schedule.version,
    )


def create(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection_id: str,
    body: ScheduleRequest,
    policy: connections.Policy,
    planning: Planning,
) -> Schedule:
    """A new schedule for the connection (at most one: 409 otherwise); unless paused, its
    current bandwidth is applied now and its transitions planned `planning.horizon` ahead."""
    connection = _connection(session, principal, connection_id, lock=True)
    if not accepts_changes(target_of(connection)):
        raise InvalidState(
            f"connection {connection.id} is {target_of(connection).value}; it cannot change"
        )
    if repository.of_connection(session, connection.id) is not None:
        raise ScheduleExists(
            f"connection {connection.id} already has a schedule; change it (PATCH) or "
            "delete it first"
        )
    location = _location(session, connection)
    default_mbps = parse_bandwidth(body.defaultBandwidth)
    _offered(location, default_mbps, "/defaultBandwidth")
    _window(body.validFrom, body.validUntil)
    now = clock.now()
    schedule = Schedule(
        id=new_id("sch"),
        customer_id=principal.customer_id,
        connection_id=connection.id,
        time_zone=body.timeZone,
        default_mbps=default_mbps,
        rules=_rules(location, body.rules),
        exceptions=_exceptions(location, body.exceptions),
        valid_from=body.validFrom,
        valid_until=body.validUntil,
        paused=body.paused,
        description=body.description,
        anchor=_anchor(body.timeZone, body.validFrom, now),
        version=1,
        planned_until=None,
        created_by=principal.client_id,
        created_at=now,
        updated_at=now,
    )
    _check_recurrences(schedule)
    session.add(schedule)
    session.flush()
    _schedule_event(session, "schedule.created", schedule, now)
    if not schedule.paused:
        plan(session, clock, policy, planning, schedule, initial=True)
    return schedule


def update(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection_id: str,
    schedule_id: str,
    patch: SchedulePatch,
    policy: connections.Policy,
    planning: Planning,
) -> Schedule:
    """Applies the patch; its unstarted changes are replaced: cancelled, and (unless now
    paused) the current bandwidth applied now and the transitions planned again."""
    connection, schedule = get(session, principal, connection_id, schedule_id, lock=True)
    given = patch.model_fields_set
    location = _location(session, connection)
    now = clock.now()
    if "timeZone" in given and patch.timeZone is not None:
        schedule.time_zone = patch.timeZone
    if "defaultBandwidth" in given and patch.defaultBandwidth is not None:
        schedule.default_mbps = parse_bandwidth(patch.defaultBandwidth)
        _offered(location, schedule.default_mbps, "/defaultBandwidth")
    if "rules" in given and patch.rules is not None:
        schedule.rules = _rules(location, patch.rules)
    if "exceptions" in given and patch.exceptions is not None:
        schedule.exceptions = _exceptions(location, patch.exceptions)
    if "validFrom" in given:
        schedule.valid_from = patch.validFrom
    if "validUntil" in given:
        schedule.valid_until = patch.validUntil
    if "description" in given:
        schedule.description = patch.description
    if "paused" in given and patch.paused is not None:
        schedule.paused = patch.paused
    _window(
        as_utc(schedule.valid_from) if schedule.valid_from else None,
        as_utc(schedule.valid_until) if schedule.valid_until else None,
    )
    if "timeZone" in given or "validFrom" in given:
        schedule.anchor = _anchor(
            schedule.time_zone,
            as_utc(schedule.valid_from) if schedule.valid_from else None,
            as_utc(schedule.created_at),
        )
    _check_recurrences(schedule)
    schedule.version += 1
    schedule.updated_at = now
    reason = "schedule_paused" if schedule.paused else "schedule_updated"
    _withdraw(session, clock, connection, schedule, reason)
    if not schedule.paused and connection.status != ConnectionStatus.TERMINATED.value:
        plan(session, clock, policy, planning, schedule, initial=True)
    session.flush()
    _schedule_event(session, "schedule.updated", schedule, now)
    return schedule


def delete(
    session: Session, clock: Clock, principal: Principal, connection_id: str, schedule_id: str
) -> None:
    """Deletes the schedule and cancels its unstarted changes (its applied ones stay in the
    connection's history, with their `scheduleId`)."""
    connection, schedule = get(session, principal, connection_id, schedule_id, lock=True)
    now = clock.now()
    _withdraw(session, clock, connection, schedule, "schedule_deleted")
    _schedule_event(session, "schedule.deleted", schedule, now)
    repository.delete_all_transitions(session, schedule.id)
    session.delete(schedule)
    session.flush()


def _withdraw(
    session: Session, clock: Clock, connection: Connection, schedule: Schedule, reason: str
) -> None:
    """Cancels the schedule's changes that have not started and forgets their transitions
    (and any planned after now), so planning starts again from now."""
    now = clock.now()
    cancelled = []
    for change in repository.unstarted_changes(session, schedule.id):
        change.status = ChangeStatus.CANCELLED.value
        change.failure_reason = {
            "schedule_updated": "replaced: its schedule was changed",
            "schedule_deleted": "its schedule was deleted",
            "schedule_paused": "its schedule was paused",
        }.get(reason, "its schedule was withdrawn")
        change_event(session, "bandwidth_change.cancelled", connection, change, now,
                     reason=reason, scheduleId=schedule.id)  # fmt: skip
        cancelled.append(change.id)
    repository.forget_transitions(session, schedule.id, now, cancelled)
    schedule.planned_until = None
    if cancelled:
        capacity.recommit(session, connection)
    session.flush()


# --- planning ------------------------------------------------------------------------------


def _limits(policy: connections.Policy) -> planner.Limits:
    return planner.Limits(policy.max_attempts, policy.max_schedule_days, policy.max_pending_changes)


def plan(
    session: Session,
    clock: Clock,
    policy: connections.Policy,
    planning: Planning,
    schedule: Schedule,
    *,
    initial: bool = False,
) -> int:
    """Plans the schedule's transitions up to now + horizon as bandwidth changes, from where
    its planning stopped (`planned_until`); returns how many it planned. The caller holds
    the connection's and the schedule's rows.

    `initial` (create, edit, resume): the bandwidth it asks for now is applied now. A
    planner that missed transitions (workers down) applies the last one missed, now.
    Each transition is a `schedule_transitions` row, written with its change: one already
    there (another worker, a rerun) is skipped, so each is planned once
    (`planner.plan_batch`, a batch of one)."""
    planned, _ = planner.plan_batch(
        session, clock.now(), _limits(policy), planning.horizon, [schedule.id],
        [schedule.connection_id], initial=initial,
    )  # fmt: skip
    return planned


def plan_due(
    session: Session,
    clock: Clock,
    policy: connections.Policy,
    planning: Planning,
    after_id: str | None = None,
) -> tuple[int, str | None]:
    """Plans up to `planning.batch` schedules that need it (the periodic task) at once
    (`planner.plan_batch`); returns how many transitions it planned and the last schedule id
    when there may be more."""
    now, before, batch = _due(session, clock, planning, after_id)
    planned = _plan_due_batch(session, now, _limits(policy), planning.horizon, batch, before)
    last = batch[-1][0] if len(batch) == planning.batch else None
    return planned, last


def _due(
    session: Session, clock: Clock, planning: Planning, after_id: str | None
) -> tuple[datetime, datetime, Sequence[tuple[str, str]]]:
    """The next batch of schedules due after `after_id` ((schedule, connection) ids), the
    instant it is planned at, and how far a schedule must be planned not to be due."""
    now = clock.now()
    before = now + planning.horizon - planning.margin
    return now, before, repository.due_for_planning(session, before, after_id, planning.batch)


def _plan_due_batch(
    session: Session,
    now: datetime,
    limits: planner.Limits,
    horizon: timedelta,
    batch: Sequence[tuple[str, str]],
    before: datetime,
) -> int:
    planned, _ = planner.plan_batch(
        session, now, limits, horizon, [s for s, _ in batch], [c for _, c in batch],
        before=before,
    )  # fmt: skip
    return planned


def plan_concurrently(
    db: Database,
    clock: Clock,
    policy: connections.Policy,
    planning: Planning,
    after_id: str | None = None,
    *,
    batches: int,
    at_once: int,
) -> tuple[int, str | None]:
    """`plan_due` for up to `batches` batches, `at_once` of them in flight, each in a
    transaction of its own (a thread each): what the planner's job does, with no transaction
    of the worker open (docs/schedules.md, "Evaluation").

    The batches are due schedules in id order, each after the last one handed out, so no
    two hold the same schedule; they meet only on their locations' rows, which each takes
    at its end (`planner.plan_batch`), and on their customers' event streams at the commit.
    While one batch's rows go into PostgreSQL, the next is evaluated here: the planner's
    CPU and the database's overlap (docs/performance.md, issue 17). A batch that fails
    fails the call once those in flight are done (the first failure raised, the others
    logged); those committed stay, the rest is planned by the next run. Returns how many
    transitions were planned and the last schedule id handed out when more may be due."""
    limits = _limits(policy)
    planned, last, more = 0, after_id, True
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="iod-planner") as pool:
        running: set[Future[int]] = set()
        for _ in range(batches):
            with db.read() as session:
                planner.keyed_lookups(session)
                now, before, batch = _due(session, clock, planning, last)
            if batch:
                last = batch[-1][0]
                running.add(
                    pool.submit(_plan_batch, db, now, limits, planning.horizon, batch, before)
                )
            if len(batch) < planning.batch:
                more = False
                break
            if len(running) >= at_once:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                planned += _outcomes(done, failures)
                if failures:
                    break  # the next run plans the rest
        planned += _outcomes(wait(running).done, failures)
    if failures:
        for failure in failures[1:]:
            log.error("schedules.batch_failed", error=repr(failure))
        raise failures[0]
    return planned, last if more else None


def _outcomes(done: set[Future[int]], failures: list[BaseException]) -> int:
    """The transitions the finished batches planned; their failures go to `failures`."""
    planned = 0
    for future in done:
        failure = future.exception()
        if failure is None:
            planned += future.result()
        else:
            failures.append(failure)
    return planned


def _plan_batch(
    db: Database,
    now: datetime,
    limits: planner.Limits,
    horizon: timedelta,
    batch: Sequence[tuple[str, str]],
    before: datetime,
) -> int:
    with db.write() as session:
        planner.keyed_lookups(session)
        return _plan_due_batch(session, now, limits, horizon, batch, before)


# --- preview ---------------------------------------------------------------------------


def preview(
    session: Session,
    clock: Clock,
    principal: Principal,
    connection_id: str,
    schedule_id: str,
    start: datetime | None,
    end: datetime | None,
) -> SchedulePreview:
    """The transitions in (from, to]. Cost: once prices exist (docs/schedules.md)."""
    _, schedule = get(session, principal, connection_id, schedule_id)
    start = start or clock.now()
    problem = None
    if not _in_years(start) or (end is not None and not _in_years(end)):
        # The calendar's arithmetic (days around the window, its default end) stays in range.
        raise ValidationFailed(
            "query parameters from and to: must be within the years 1970 to 9000 (UTC)",
            errors=[FieldError("", "from and to must be within the years 1970 to 9000 (UTC)")],
        )
    if end is None and not _in_years(start + timedelta(days=7)):
        problem = "query parameter to: from + 7 days (the default) is past the year 9000 (UTC)"
        raise ValidationFailed(problem, errors=[FieldError("", problem)])
    end = end or start + timedelta(days=7)
    if end <= start:
        problem = "query parameter to: must be after from"
    elif end - start > MAX_PREVIEW:
        problem = f"query parameter to: must be at most {MAX_PREVIEW.days} days after from"
    if problem is not None:  # named as a parameter, like FastAPI's own parameter errors
        raise ValidationFailed(problem, errors=[FieldError("", problem)])
    spec = spec_of(schedule)
    initial, found = calendar.transitions(spec, start, end)
    return SchedulePreview.model_validate(
        {
            "scheduleId": schedule.id,
            "timeZone": schedule.time_zone,
            "paused": schedule.paused,
            "from": start,
            "to": end,
            "initialBandwidth": format_bandwidth(initial) if initial is not None else None,
            "transitions": [
                PreviewTransition(
                    at=t.at,
                    localTime=t.at.astimezone(spec.zone).isoformat(),
                    bandwidth=format_bandwidth(t.mbps),
                )
                for t in found
            ],
        }
    )
