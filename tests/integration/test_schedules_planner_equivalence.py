"""The set-based planner (`schedules.planner.plan_batch`) writes exactly what planning each
transition through `connections.service.update_bandwidth`, one by one, wrote: the same
changes, jobs, transitions, events, connection and location figures, on SQLite and
PostgreSQL (there with COPY forced for every table).

Two identical worlds (a customer, a location, the same connections and schedules) are
planned, one by each path, in the same order; their rows are compared with every id
replaced by its place in the world. The batch mixes: a day of the spring-forward change in
New York (a rule at 02:30, in the gap), a capacity refusal then acceptances on the same
connection, a tier no longer offered, the pending-changes limit, a connection being
terminated, a paused schedule, a transition planned already, and a second round that
applies the last missed transition now."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Text, func, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from iod import events
from iod.app import Services
from iod.auth.tokens import Principal
from iod.connections import lifecycle
from iod.connections import repository as connections_repository
from iod.connections import service as connections
from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.domain import schedules as calendar
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import Action
from iod.infra.clock import FrozenClock, as_utc, rfc3339
from iod.infra.db import bulk, insert_new
from iod.infra.errors import CapacityExceeded, InvalidState, TooManyPendingChanges, ValidationFailed
from iod.infra.ids import new_id
from iod.locations import service as locations
from iod.models import (
    BandwidthChange,
    Connection,
    Event,
    Job,
    Location,
    Schedule,
    ScheduleTransition,
)
from iod.schedules import planner, repository
from iod.schedules import service as schedules
from tests.conftest import Tenant

HORIZON = timedelta(hours=48)
POLICY = connections.Policy(max_pending_changes=8)
# Saturday 2030-03-09 12:00 UTC: the 48 hours hold Sunday 10 March, when New York springs
# forward (02:00 EST -> 03:00 EDT).
START = datetime(2030, 3, 9, 12, 0, tzinfo=UTC)
TIERS = ["100 Mbps", "500 Mbps", "1 Gbps", "2 Gbps"]
DAILY = "FREQ=DAILY"


def _rule(bandwidth: int, start: str, end: str, recurrence: str = DAILY) -> dict[str, Any]:
    return {"mbps": bandwidth, "start": start, "end": end, "recurrence": recurrence}


# (bandwidth, zone, default, rules, paused) per connection, in the order they are planned.
SCHEDULES: list[tuple[str, str, int, list[dict[str, Any]], bool]] = [
    # office hours, and 02:30-04:00 every day: on 10 March 02:30 does not exist (03:30 EDT)
    ("100 Mbps", "America/New_York", 100,
     [_rule(1000, "08:00", "18:00"), _rule(1000, "02:30", "04:00")], False),
    # 2 Gbps does not fit beside the others (capacity 3,500 Mbps): refused, then its returns
    # to 100 Mbps are accepted
    ("100 Mbps", "Europe/Berlin", 100, [_rule(2000, "09:00", "17:00")], False),
    # its 500 Mbps rule is no longer offered (the tier is withdrawn after it was made)
    ("100 Mbps", "Australia/Lord_Howe", 100,
     [_rule(500, "10:00", "11:00"), _rule(1000, "12:00", "13:00")], False),
    # many short windows: past the pending-changes limit (8) the rest are refused
    ("1 Gbps", "Europe/Berlin", 1000,
     [_rule(100, f"{h:02d}:00", f"{h:02d}:30") for h in range(6, 22, 2)], False),
    # its connection is being terminated: every transition refused (invalid state)
    ("100 Mbps", "America/New_York", 100, [_rule(1000, "08:00", "18:00")], False),
    # paused: nothing planned
    ("100 Mbps", "America/New_York", 100, [_rule(1000, "08:00", "18:00")], True),
    # a transition planned already (another worker): skipped
    ("100 Mbps", "America/New_York", 100, [_rule(1000, "08:00", "18:00")], False),
]  # fmt: skip
TERMINATING = 4
PLANNED_ALREADY = 6


def _world(services: Services, tenant: Tenant, location_id: str) -> dict[str, Any]:
    """A location, connections (active) and never-planned schedules, all alike."""
    clock = services.clock
    entry = {"id": location_id, "name": "Equivalence", "address": "-",
             "capacity": "3500 Mbps", "tiers": TIERS}  # fmt: skip
    principal = Principal(tenant.client_id, tenant.customer_id, frozenset({"write"}), 0)
    with services.db.write() as session:
        locations.upsert(session, clock, locations.parse_catalog([entry]))
    conns, scheds = [], []
    for bandwidth, zone, default, rules, paused in SCHEDULES:
        with services.db.write() as session:
            request = ConnectionRequest(bandwidth=bandwidth, locationId=location_id)
            conn = connections.create_connection(session, clock, principal, request, POLICY)
            conn.status = "active"  # as provisioning leaves it; its job is not run here
            schedule = Schedule(
                id=new_id("sch"), customer_id=tenant.customer_id, connection_id=conn.id,
                time_zone=zone, default_mbps=default, rules=rules, exceptions=[],
                paused=paused, anchor="2030-03-01", version=1, planned_until=None,
                created_by=tenant.client_id, created_at=clock.now(), updated_at=clock.now(),
            )  # fmt: skip
            session.add(schedule)
            conns.append(conn.id)
            scheds.append(schedule.id)
    with services.db.write() as session:
        # A manual change already pending on the first connection (it counts, commits).
        manual = rfc3339(START + timedelta(minutes=67))
        connections.update_bandwidth(
            session, clock, principal, conns[0],
            BandwidthUpdate(bandwidth="1 Gbps", effectiveDate=manual), POLICY,
        )  # fmt: skip
        connection = connections_repository.get_for_update(session, conns[TERMINATING])
        assert connection is not None
        lifecycle.request_action(session, clock, principal, connection, Action.TERMINATE, 5)
        made = session.get(Schedule, scheds[PLANNED_ALREADY])
        assert made is not None
        first = calendar.transitions(schedules.spec_of(made), START, START + HORIZON)[1][0]
        insert_new(session, ScheduleTransition.__table__, {
            "schedule_id": scheds[PLANNED_ALREADY], "at": first.at, "mbps": first.mbps,
            "outcome": "planned", "change_id": None, "detail": None, "created_at": clock.now(),
        })  # fmt: skip
        # 500 Mbps is withdrawn at the location after the schedules were made.
        session.execute(
            update(Location).where(Location.id == location_id).values(tiers_mbps=[100, 1000, 2000])
        )
    return {"location": location_id, "connections": conns, "schedules": scheds,
            "tenant": tenant}  # fmt: skip


# --- the one-by-one path: each transition through update_bandwidth -----------------------------


def _plan_one_by_one(session: Session, clock: FrozenClock, schedule: Schedule) -> None:
    """Planning as it was before the set-based planner (one `update_bandwidth` call, in a
    savepoint, per transition), kept here as the reference."""
    now = clock.now()
    until = now + HORIZON
    spec = schedules.spec_of(schedule)
    begin = as_utc(schedule.planned_until) if schedule.planned_until is not None else None
    due: list[tuple[datetime, datetime, int]] = []
    if begin is None:
        current = calendar.value_at(spec, now)
        if current is not None:
            due.append((now, now, current))
        begin = now
    elif begin < now:
        missed = calendar.last_transition(spec, begin, now)
        if missed is not None:
            due.append((missed.at, now, missed.mbps))
        begin = now
    if begin < until:
        due += [(t.at, t.at, t.mbps) for t in calendar.transitions(spec, begin, until)[1]]
    caller = events.current_actor(session)
    events.act_as(session, None)
    try:
        for at, effective, mbps in due:
            _transition(session, clock, schedule, at, effective, mbps, now)
    finally:
        events.act_as(session, caller)
    schedule.planned_until = max(until, begin)


def _transition(
    session: Session, clock: FrozenClock, schedule: Schedule, at: datetime,
    effective: datetime, mbps: int, now: datetime,
) -> None:  # fmt: skip
    row: dict[str, Any] = {"schedule_id": schedule.id, "at": at, "mbps": mbps,
                           "outcome": "planned", "change_id": None, "detail": None,
                           "created_at": now}  # fmt: skip
    principal = Principal(schedule.created_by, schedule.customer_id, frozenset({"write"}), 0)
    body = BandwidthUpdate.model_validate(
        {"bandwidth": format_bandwidth(mbps), "effectiveDate": rfc3339(effective)}
    )
    savepoint = session.begin_nested()
    try:
        _, change, _, _ = connections.update_bandwidth(
            session, clock, principal, schedule.connection_id, body, POLICY, always=True
        )
    except (CapacityExceeded, InvalidState, TooManyPendingChanges, ValidationFailed) as exc:
        savepoint.rollback()
        row.update(outcome="refused", detail=exc.detail[:500])
        insert_new(session, ScheduleTransition.__table__, row)
        return
    assert change is not None
    row["change_id"] = change.id
    if not insert_new(session, ScheduleTransition.__table__, row):
        savepoint.rollback()
        return
    savepoint.commit()
    repository.mark_change(session, change.id, schedule.id)
    events.record(session, "schedule.transition_planned", customer_id=schedule.customer_id,
                  subject_id=schedule.connection_id, at=now, connectionId=schedule.connection_id,
                  scheduleId=schedule.id, changeId=change.id, bandwidth=format_bandwidth(mbps),
                  transitionAt=rfc3339(at), effectiveDate=rfc3339(change.effective_at))  # fmt: skip


def _one_by_one(services: Services, world: dict[str, Any]) -> None:
    with services.db.write() as session:
        for connection_id, schedule_id in zip(
            world["connections"], world["schedules"], strict=True
        ):
            connection = connections_repository.get_for_update(session, connection_id)
            schedule = repository.get_locked(session, schedule_id)
            assert connection is not None and schedule is not None
            if schedule.paused or connection.status == "terminated":
                continue
            _plan_one_by_one(session, services.clock, schedule)  # type: ignore[arg-type]


def _set_based(services: Services, world: dict[str, Any]) -> None:
    limits = planner.Limits(POLICY.max_attempts, POLICY.max_schedule_days,
                            POLICY.max_pending_changes)  # fmt: skip
    with services.db.write() as session:
        planner.plan_batch(session, services.clock.now(), limits, HORIZON, world["schedules"],
                           world["connections"])  # fmt: skip


# --- comparing two worlds -----------------------------------------------------------------------


def _snapshot(services: Services, world: dict[str, Any]) -> dict[str, Any]:
    """The world's rows with its ids replaced by names (`conn0`, `sch0`, `chg3`, ...)."""
    tenant: Tenant = world["tenant"]
    names: dict[str, str] = {world["location"]: "LOC", tenant.customer_id: "customer",
                             tenant.client_id: "client"}  # fmt: skip
    names |= {cid: f"conn{i}" for i, cid in enumerate(world["connections"])}
    names |= {sid: f"sch{i}" for i, sid in enumerate(world["schedules"])}
    with services.db.read() as session:
        changes = session.scalars(
            select(BandwidthChange).where(BandwidthChange.connection_id.in_(world["connections"]))
        ).all()
        ordered = sorted(changes, key=lambda c: (names[c.connection_id], c.effective_at, c.to_mbps))
        names |= {c.id: f"chg{i}" for i, c in enumerate(ordered)}

        def canon(value: Any) -> Any:
            if isinstance(value, str):
                for real, name in names.items():
                    value = value.replace(real, name)
                return value
            if isinstance(value, dict):
                return {k: canon(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [canon(v) for v in value]
            if isinstance(value, datetime):
                return as_utc(value)
            return value

        def rows(model: Any, where: Any, order: Any, columns: list[str]) -> list[Any]:
            found = session.scalars(select(model).where(where).order_by(*order)).all()
            return [canon([getattr(r, c) for c in columns]) for r in found]

        return {
            "changes": [canon([c.connection_id, c.from_mbps, c.to_mbps, c.effective_at, c.status,
                               c.requested_by, c.requested_at, c.revert_of, c.schedule_id,
                               c.failure_reason, c.applied_at, c.id]) for c in ordered],
            "jobs": rows(Job, Job.connection_id.in_(world["connections"]), [Job.id],
                         ["kind", "args", "lock_key", "queue", "connection_id", "change_id",
                          "state", "run_at", "scheduled_at", "attempts", "max_attempts",
                          "created_at", "lease_until", "finished_at"]),
            "transitions": sorted(
                rows(ScheduleTransition, ScheduleTransition.schedule_id.in_(world["schedules"]),
                     [ScheduleTransition.at],
                     ["schedule_id", "at", "mbps", "outcome", "change_id", "detail", "created_at"]),
                key=lambda r: (r[0], r[1]),
            ),
            "events": rows(Event, Event.customer_id == tenant.customer_id, [Event.position],
                           ["position", "name", "subject_id", "payload", "actor", "at"]),
            "connections": rows(Connection, Connection.id.in_(world["connections"]),
                                [Connection.created_at, Connection.id],
                                ["id", "status", "target_status", "bandwidth_mbps",
                                 "committed_mbps", "updated_at"]),
            "locations": rows(Location, Location.id == world["location"], [Location.id],
                              ["committed_mbps", "tiers_mbps"]),
            "schedules": sorted(rows(Schedule, Schedule.id.in_(world["schedules"]), [Schedule.id],
                                     ["id", "planned_until", "paused"])),
        }  # fmt: skip


@pytest.fixture
def copy_everything(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL every bulk write is a COPY (not only the large ones)."""
    monkeypatch.setattr(bulk, "COPY_FROM", 1)


def test_set_based_planning_writes_what_one_by_one_planning_wrote(
    services: Services, make_tenant: Callable[..., Tenant], clock: FrozenClock,
    copy_everything: None,
) -> None:  # fmt: skip
    clock.set(START)
    reference = _world(services, make_tenant(name="One by one"), "EQUIV-A")
    batch = _world(services, make_tenant(name="Set based"), "EQUIV-B")
    _one_by_one(services, reference)
    _set_based(services, batch)
    first = _snapshot(services, reference)
    assert first == _snapshot(services, batch)
    # What the batch held: refusals of each kind, the DST day's shifted start, a skip.
    details = [t[5] for t in first["transitions"] if t[3] == "refused"]
    assert any("does not fit" in d for d in details)
    assert any("is not offered" in d for d in details)
    assert any("pending bandwidth changes" in d for d in details)
    assert any("it cannot change" in d for d in details)
    dst = datetime(2030, 3, 10, 7, 30, tzinfo=UTC)  # 03:30 EDT: 02:30 shifted by the gap
    assert ["sch0", dst, 1000, "planned"] in [t[:4] for t in first["transitions"]]
    assert date(2030, 3, 10) == dst.astimezone(calendar.zone("America/New_York")).date()
    assert not any(t[0] == "sch5" for t in first["transitions"])  # paused
    planned = [t for t in first["changes"] if t[8] is not None]
    assert len(planned) > 10
    # Round two, 60 hours on: each schedule's planning ended 12 hours ago; the last missed
    # transition is applied now, then the next 48 hours.
    clock.advance(timedelta(hours=60))
    _one_by_one(services, reference)
    _set_based(services, batch)
    second = _snapshot(services, reference)
    assert second == _snapshot(services, batch)
    assert len(second["changes"]) > len(first["changes"])
    now_changes = [c for c in second["changes"] if c[3] == clock.now() and c[8] is not None]
    assert now_changes, "no missed transition applied now"


def test_the_json_the_planner_writes_is_what_json_dumps_writes(
    services: Services, make_tenant: Callable[..., Tenant], clock: FrozenClock,
    copy_everything: None,
) -> None:  # fmt: skip
    """The payloads and job arguments go into the COPY as text built from templates
    (`bulk.Encoded`): the very text `json.dumps` gives for the objects read back, so the
    stored JSON is the same whichever path wrote it."""
    clock.set(START)
    world = _world(services, make_tenant(name="Text"), "EQUIV-T")
    _set_based(services, world)
    with services.db.read() as session:
        texts = session.scalars(
            select(sql_cast(Event.payload, Text)).where(
                Event.name.in_(["bandwidth_change.scheduled", "schedule.transition_planned"]),
                Event.subject_id.in_(world["connections"]),
            )
        ).all()
        args = session.scalars(
            select(sql_cast(Job.args, Text)).where(Job.connection_id.in_(world["connections"]))
        ).all()
    assert len(texts) > 20 and len(args) > 10
    for text in [*texts, *args]:
        assert text == json.dumps(json.loads(text))


def test_the_transitions_planned_already_are_found(
    services: Services, make_tenant: Callable[..., Tenant], clock: FrozenClock
) -> None:
    """`planner._planned_already` (a LATERAL probe per schedule on PostgreSQL, an IN on
    SQLite) finds exactly the rows of the batch's schedules from the instant given on, and
    planning them again at the same instant skips them all (a duplicate would fail the
    batch's INSERT)."""
    clock.set(START)
    world = _world(services, make_tenant(name="Already"), "EQUIV-L")
    _set_based(services, world)
    since = START + timedelta(hours=20)
    with services.db.read() as session:
        expected = {
            (row.schedule_id, as_utc(row.at))
            for row in session.execute(
                select(ScheduleTransition.schedule_id, ScheduleTransition.at).where(
                    ScheduleTransition.schedule_id.in_(world["schedules"][:3])
                )
            )
            if as_utc(row.at) >= since
        }
        found = planner._planned_already(session, world["schedules"][:3], since)
    assert expected and found == expected
    with services.db.read() as session:
        before = session.scalar(select(func.count()).select_from(ScheduleTransition))
    with services.db.write() as session:  # as if never planned: all is owed again
        session.execute(
            update(Schedule).where(Schedule.id.in_(world["schedules"])).values(planned_until=None)
        )
    _set_based(services, world)  # the same instant: every transition is there already
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(ScheduleTransition)) == before
