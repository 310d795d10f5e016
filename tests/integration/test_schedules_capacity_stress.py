"""Stress on PostgreSQL: the set-based planner's batches, several at once
(`service.plan_concurrently`, optimistic capacity check with a locked fallback), racing API
writes (bandwidth changes, cancellations, suspends, terminations, orders) and the worker
applying changes, all on the same connections at a small (1 Gbps) location, so capacity
refusals and the planner's fallbacks actually happen.

Invariants checked: the location's counter and every connection's figure equal the
recomputed ones (in every snapshot a monitor takes meanwhile, and at the end), the counter
never exceeds the capacity, each schedule transition is recorded at most once and has at
most one change per instant, every transition owed is recorded (planned or refused), no
deadlock (neither raised to a caller nor counted by PostgreSQL), no 5xx. And a batch that
dies mid-write among several in flight leaves nothing of itself behind."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from iod.app import Services
from iod.auth.tokens import Principal
from iod.connections import capacity
from iod.connections import repository as connections_repository
from iod.connections import service as connections
from iod.connections.schemas import ConnectionRequest
from iod.domain import schedules as calendar
from iod.infra.clock import FrozenClock, as_utc
from iod.models import (
    BandwidthChange,
    Connection,
    Event,
    Job,
    Location,
    Schedule,
    ScheduleTransition,
)
from iod.schedules import planner, service
from iod.schedules.schemas import ScheduleRequest
from tests.conftest import Tenant, get_token, run_jobs

pytestmark = pytest.mark.parametrize("database", ["postgres"], indirect=True)

SMALL = "PL0002290011"  # 1 Gbps; tiers 10, 50, 100, 200, 300, 500 Mbps
BASE = "/internet-on-demand/connections"
POLICY = connections.Policy()
PLANNING = service.Planning(horizon=timedelta(hours=48), batch=3)
TIERS = [10, 50, 100, 200, 300, 500]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]


def _principal(tenant: Tenant) -> Principal:
    return Principal(tenant.client_id, tenant.customer_id, frozenset({"write"}), 0)


def _body(index: int) -> ScheduleRequest:
    """Peaks of different heights at different hours: many transitions a day, and
    together far more than the port's 1 Gbps."""
    peak = [500, 300, 200, 100, 50][index % 5]
    rules = [
        {"bandwidth": f"{peak} Mbps", "start": f"{(index + h) % 24:02d}:00",
         "end": f"{(index + h) % 24:02d}:45", "recurrence": "FREQ=DAILY"}
        for h in (0, 5, 11, 17)
    ]  # fmt: skip
    rules.append({"bandwidth": f"{TIERS[index % 3 + 1]} Mbps", "start": "06:30",
                  "end": "07:15", "recurrence": "FREQ=WEEKLY;BYDAY=MO,WE,FR,SU"})  # fmt: skip
    return ScheduleRequest.model_validate(
        {"timeZone": ZONES[index % len(ZONES)], "defaultBandwidth": "10 Mbps", "rules": rules}
    )


def _setup(services: Services, tenant: Tenant, count: int) -> tuple[list[str], list[str]]:
    """`count` provisioned 10 Mbps connections at SMALL, each with a schedule (planned at
    creation, refusals included): connection ids, schedule ids."""
    principal = _principal(tenant)
    conn_ids = []
    for _ in range(count):
        with services.db.write() as session:
            made = connections.create_connection(
                session, services.clock, principal,
                ConnectionRequest(bandwidth="10 Mbps", locationId=SMALL), POLICY,
            )  # fmt: skip
            conn_ids.append(made.id)
    run_jobs(services)  # provisioned: active
    schedule_ids = []
    for index, connection_id in enumerate(conn_ids):
        with services.db.write() as session:
            schedule = service.create(
                session, services.clock, principal, connection_id, _body(index), POLICY,
                PLANNING,
            )  # fmt: skip
            schedule_ids.append(schedule.id)
    return conn_ids, schedule_ids


def _snapshot_problems(services: Services) -> list[str]:
    """The figures compared in one REPEATABLE READ snapshot, without locking anything
    (capacity.check's SHARE lock would hold the writers back)."""
    problems = []
    with services.db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn) as session, session.begin():
            location = session.execute(
                select(Location.committed_mbps, Location.capacity_mbps).where(Location.id == SMALL)
            ).one()
            reference = connections_repository.committed_at_location(session, SMALL)
            per_connection = connections_repository.committed_per_connection(session)
            stored = dict(session.execute(select(Connection.id, Connection.committed_mbps)).all())
    if location.committed_mbps != reference:
        problems.append(f"counter {location.committed_mbps} != reference {reference}")
    if location.committed_mbps > location.capacity_mbps:
        problems.append(f"counter {location.committed_mbps} > capacity {location.capacity_mbps}")
    for cid, figure in stored.items():
        if figure != per_connection.get(cid, 0):
            problems.append(f"connection {cid}: {figure} != {per_connection.get(cid, 0)}")
    return problems


def _deadlocks(services: Services) -> int:
    with services.db.engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.scalar(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
            or 0
        )


def _assert_exactly_once(services: Services) -> None:
    with services.db.read() as session:
        # Each (schedule, instant) once: the primary key says so; the changes must agree.
        twice = session.execute(
            select(BandwidthChange.schedule_id, BandwidthChange.effective_at, func.count())
            .where(BandwidthChange.schedule_id.is_not(None))
            .group_by(BandwidthChange.schedule_id, BandwidthChange.effective_at)
            .having(func.count() > 1)
        ).all()
        assert twice == [], f"two changes of a schedule at the same instant: {twice[:5]}"
        planned = session.execute(
            select(ScheduleTransition.schedule_id, ScheduleTransition.change_id).where(
                ScheduleTransition.outcome == "planned"
            )
        ).all()
        changes = dict(
            session.execute(
                select(BandwidthChange.id, BandwidthChange.schedule_id).where(
                    BandwidthChange.schedule_id.is_not(None)
                )
            ).all()
        )
        per_change = Counter(change_id for _, change_id in planned)
        assert all(n == 1 for n in per_change.values()), "a change behind two transitions"
        assert set(per_change) == set(changes), "a schedule's change without its transition"
        assert all(changes[c] == s for s, c in planned)
        jobs = Counter(
            session.scalars(
                select(Job.change_id).where(Job.change_id.in_(list(changes)), Job.kind ==
                                            "apply_bandwidth")
            )
        )  # fmt: skip
        assert all(jobs[c] == 1 for c in changes), "a planned change without exactly one job"
        events = session.scalar(
            select(func.count()).select_from(Event)
            .where(Event.name == "schedule.transition_planned")
        )  # fmt: skip
        assert events == len(planned), (events, len(planned))


def _assert_every_transition_recorded(services: Services, created: dict[str, datetime]) -> None:
    """Each schedule's recorded instants are exactly its initial one and every transition
    up to its `planned_until` (the planner never fell behind the clock here)."""
    with services.db.read() as session:
        for schedule in session.scalars(select(Schedule)):
            recorded = set(
                as_utc(at)
                for at in session.scalars(
                    select(ScheduleTransition.at).where(
                        ScheduleTransition.schedule_id == schedule.id
                    )
                )
            )
            start = created[schedule.id]
            _, found = calendar.transitions(
                service.spec_of(schedule), start, as_utc(schedule.planned_until)
            )
            expected = {start} | {t.at for t in found}
            assert recorded == expected, (
                schedule.id,
                sorted(recorded - expected)[:3],
                sorted(expected - recorded)[:3],
            )


def _created_at(services: Services) -> dict[str, datetime]:
    with services.db.read() as session:
        return {s.id: as_utc(s.created_at) for s in session.scalars(select(Schedule))}


class _Failures:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []

    def add(self, what: str) -> None:
        with self.lock:
            self.items.append(what)


def test_concurrent_planning_and_api_writes_keep_capacity_and_exactly_once(
    services: Services, tenant: Tenant, clock: FrozenClock, api: TestClient
) -> None:
    seed = int(os.environ.get("IOD_STRESS_SEED", "13"))
    rng = random.Random(seed)
    conn_ids, _ = _setup(services, tenant, 30)
    created = _created_at(services)
    assert _snapshot_problems(services) == []
    deadlocks_before = _deadlocks(services)
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    failures = _Failures()
    stop = threading.Event()
    statuses: Counter[tuple[str, int]] = Counter()
    stats = Counter[str]()
    stats_lock = threading.Lock()
    live_ids = list(conn_ids)

    # Count the planner's paths: optimistic tries, locked fallbacks, refusals.
    real_read = planner._read_locations

    def counting_read(session: Session, ids: Any, *, lock: bool) -> Any:
        with stats_lock:
            stats["locked read" if lock else "optimistic read"] += 1
        return real_read(session, ids, lock=lock)

    def request(kind: str, method: str, url: str, **kwargs: Any) -> Any:
        response = api.request(method, url, headers=dict(headers), **kwargs)
        if response.status_code == 401:  # the token expired: the clock ran on
            headers["Authorization"] = f"Bearer {get_token(api, tenant)}"
            response = api.request(method, url, headers=dict(headers), **kwargs)
        with stats_lock:
            statuses[(kind, response.status_code)] += 1
        if response.status_code >= 500:
            failures.add(f"{kind} {url}: {response.status_code} {response.text[:500]}")
        return response

    def scheduled_changes() -> list[tuple[str, str]]:
        with services.db.read() as session:
            return [
                (r[0], r[1])
                for r in session.execute(
                    select(BandwidthChange.connection_id, BandwidthChange.id)
                    .join(Connection, Connection.id == BandwidthChange.connection_id)
                    .where(BandwidthChange.status == "scheduled",
                           Connection.location_id == SMALL)
                    .limit(200)
                ).all()
            ]  # fmt: skip

    def client(seed: int) -> None:
        local = random.Random(seed)
        terminations = 0
        try:
            while not stop.is_set():
                roll = local.random()
                cid = local.choice(live_ids)
                if roll < 0.45:
                    body: dict[str, str] = {"bandwidth": f"{local.choice(TIERS)} Mbps"}
                    when = local.choice(["now", "later", "boost"])
                    if when != "now":
                        body["effectiveDate"] = (
                            clock.now() + timedelta(minutes=local.randint(1, 600))
                        ).isoformat()
                    if when == "boost":
                        body["revertAt"] = (
                            clock.now() + timedelta(minutes=local.randint(601, 1200))
                        ).isoformat()
                    r = request("put", "PUT", f"{BASE}/{cid}/bandwidth", json=body)
                    if r.status_code not in (200, 409, 422):
                        failures.add(f"PUT bandwidth: {r.status_code} {r.text[:300]}")
                elif roll < 0.80:
                    found = scheduled_changes()
                    if found:
                        ccid, change_id = local.choice(found)
                        url = f"{BASE}/{ccid}/bandwidth-changes/{change_id}/cancel"
                        r = request("cancel", "POST", url)
                        if r.status_code not in (200, 409):
                            failures.add(f"cancel: {r.status_code} {r.text[:300]}")
                elif roll < 0.90:
                    action = local.choice(["suspend", "resume"])
                    r = request(action, "POST", f"{BASE}/{cid}/{action}")
                    if r.status_code not in (202, 409):
                        failures.add(f"{action}: {r.status_code} {r.text[:300]}")
                elif roll < 0.95:
                    body = {"bandwidth": f"{local.choice(TIERS[:3])} Mbps", "locationId": SMALL}
                    r = request("order", "POST", BASE, json=body)
                    if r.status_code not in (201, 409):
                        failures.add(f"order: {r.status_code} {r.text[:300]}")
                elif terminations < 2:
                    terminations += 1
                    r = request("terminate", "POST", f"{BASE}/{cid}/terminate")
                    if r.status_code not in (202, 409):
                        failures.add(f"terminate: {r.status_code} {r.text[:300]}")
        except BaseException as exc:
            failures.add(f"client {seed}: {exc!r}")

    def worker() -> None:
        try:
            while not stop.is_set():
                run_jobs(services)
                time.sleep(0.02)
        except BaseException as exc:
            failures.add(f"worker: {exc!r}")

    def monitor() -> None:
        try:
            while not stop.is_set():
                for problem in _snapshot_problems(services):
                    failures.add(f"snapshot: {problem}")
                with stats_lock:
                    stats["snapshots"] += 1
                time.sleep(0.05)
        except BaseException as exc:
            failures.add(f"monitor: {exc!r}")

    threads = [threading.Thread(target=client, args=(seed * 10 + n,)) for n in (1, 2, 3)]
    threads += [threading.Thread(target=worker), threading.Thread(target=monitor)]
    planned_total, rounds = 0, 0
    patch = pytest.MonkeyPatch()
    patch.setattr(planner, "_read_locations", counting_read)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and rounds < 150:
            clock.advance(timedelta(minutes=rng.choice([30, 60, 90, 120])))
            after = None
            while True:
                try:
                    planned, after = service.plan_concurrently(
                        services.db, clock, POLICY, PLANNING, after, batches=4, at_once=3
                    )
                except BaseException as exc:
                    failures.add(f"planner: {exc!r}")
                    raise
                planned_total += planned
                if after is None:
                    break
            rounds += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        patch.undo()
    assert not any(t.is_alive() for t in threads)
    assert failures.items == [], failures.items[:10]

    # Quiet now: the whole state, locked (`capacity.check`), then once more with the
    # worker done and the planner caught up.
    with services.db.write() as session:
        assert capacity.check(session) == []
    assert _snapshot_problems(services) == []
    run_jobs(services)
    assert _snapshot_problems(services) == []
    _assert_exactly_once(services)
    _assert_every_transition_recorded(services, created)
    time.sleep(0.7)  # the statistics are flushed about once a second
    assert _deadlocks(services) == deadlocks_before, "PostgreSQL detected a deadlock"

    with services.db.read() as session:
        outcomes = Counter(session.scalars(select(ScheduleTransition.outcome)))
        refused_capacity = session.scalar(
            select(func.count()).select_from(ScheduleTransition)
            .where(ScheduleTransition.outcome == "refused",
                   ScheduleTransition.detail.like("%capacity%"))
        )  # fmt: skip
    print(f"\nrounds={rounds} planned={planned_total} outcomes={dict(outcomes)} "
          f"capacity refusals={refused_capacity} stats={dict(stats)} "
          f"statuses={dict(statuses)}")  # fmt: skip
    # The stress did what it is for: the port filled, and batches fell back to the lock.
    assert rounds >= 5
    assert refused_capacity and refused_capacity > 0
    assert stats["locked read"] > 0, stats
    assert statuses[("put", 409)] > 0 and statuses[("put", 200)] > 0


class _Killed(Exception):
    pass


@pytest.mark.parametrize("path", ["optimistic", "locked"])
def test_a_batch_killed_among_several_in_flight_leaves_nothing_half_done(
    services: Services, tenant: Tenant, clock: FrozenClock, api: TestClient,
    monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:  # fmt: skip
    """The second of three batches in flight dies once its rows are written: in its
    optimistic try, or (`locked`) after that try was undone and redone with the locks."""
    conn_ids, schedule_ids = _setup(services, tenant, 10)
    created = _created_at(services)
    clock.advance(timedelta(hours=30))
    if path == "optimistic":  # room for the victim's changes: its optimistic try holds
        with services.db.write() as session:
            session.execute(
                sql_update(Location).where(Location.id == SMALL).values(capacity_mbps=100_000)
            )
    ordered = sorted(schedule_ids)
    victim_ids = set(ordered[PLANNING.batch : 2 * PLANNING.batch])  # the second batch
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}

    def state() -> dict[str, Any]:
        with services.db.read() as session:
            return {
                "until": dict(session.execute(select(Schedule.id, Schedule.planned_until)).all()),
                "transitions": Counter(session.scalars(select(ScheduleTransition.schedule_id))),
                "changes": Counter(
                    session.scalars(
                        select(BandwidthChange.schedule_id).where(
                            BandwidthChange.schedule_id.is_not(None)
                        )
                    )
                ),
            }

    before = state()
    local = threading.local()
    real_batch, real_write = service._plan_batch, planner._write
    in_write = threading.Event()
    died = [""]
    started = threading.Barrier(3, timeout=5)
    calls = Counter[str]()
    calls_lock = threading.Lock()

    def plan_batch(*args: Any) -> int:
        batch = args[4]
        local.victim = {s for s, _ in batch} <= victim_ids
        with calls_lock:
            calls["batches"] += 1
            first_three = calls["batches"] <= 3
        if first_three:
            with contextlib.suppress(threading.BrokenBarrierError):
                started.wait()  # three batches in flight at once
        return int(real_batch(*args))

    real_read = planner._read_locations

    def read_locations(session: Session, ids: Any, *, lock: bool) -> Any:
        if getattr(local, "victim", False) and path == "locked" and not lock:
            with calls_lock:
                calls["stale"] += 1
            raise planner._Stale  # as if the figures no longer held: redone with the locks
        return real_read(session, ids, lock=lock)

    def write(session: Session, *args: Any) -> None:
        if getattr(local, "victim", False):
            local.died_optimistic = args[-1]
        real_write(session, *args)  # its changes, jobs, transitions, figures written
        if getattr(local, "victim", False):
            in_write.set()
            died[0] = "optimistic" if local.died_optimistic else "locked"
            time.sleep(0.2)  # the others meet its rows meanwhile
            raise _Killed("worker killed mid-batch")

    monkeypatch.setattr(service, "_plan_batch", plan_batch)
    monkeypatch.setattr(planner, "_write", write)
    monkeypatch.setattr(planner, "_read_locations", read_locations)

    # Meanwhile a client moves the same counter.
    stop = threading.Event()
    bad: list[str] = []

    def client() -> None:
        local_rng = random.Random(5)
        while not stop.is_set():
            cid = local_rng.choice(conn_ids)
            body = {"bandwidth": f"{local_rng.choice(TIERS)} Mbps"}
            r = api.put(f"{BASE}/{cid}/bandwidth", json=body, headers=headers)
            if r.status_code not in (200, 409):
                bad.append(f"{r.status_code} {r.text[:300]}")

    thread = threading.Thread(target=client)
    thread.start()
    try:
        with pytest.raises(_Killed):
            service.plan_concurrently(
                services.db, clock, POLICY, PLANNING, None, batches=4, at_once=3
            )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert bad == []
    assert in_write.is_set()
    assert calls["stale"] == (1 if path == "locked" else 0)
    assert died[0] == path
    after = state()
    for schedule_id in victim_ids:  # nothing of the dead batch
        assert after["until"][schedule_id] == before["until"][schedule_id]
        assert after["transitions"][schedule_id] == before["transitions"][schedule_id]
        assert after["changes"][schedule_id] == before["changes"][schedule_id]
    others = set(ordered[: PLANNING.batch]) | set(ordered[2 * PLANNING.batch : 4 * PLANNING.batch])
    moved = [s for s in others if after["until"][s] != before["until"][s]]
    assert moved, "the other batches in flight committed"
    with services.db.write() as session:
        assert capacity.check(session) == []
    assert _snapshot_problems(services) == []
    _assert_exactly_once(services)

    # The job runs again: everything owed is recorded once.
    monkeypatch.setattr(planner, "_write", real_write)
    monkeypatch.setattr(planner, "_read_locations", real_read)
    monkeypatch.setattr(service, "_plan_batch", real_batch)
    cursor = None
    while True:
        _, cursor = service.plan_concurrently(
            services.db, clock, POLICY, PLANNING, cursor, batches=4, at_once=3
        )
        if cursor is None:
            break
    final = state()
    assert all(final["until"][s] != before["until"][s] for s in schedule_ids)
    with services.db.write() as session:
        assert capacity.check(session) == []
    assert _snapshot_problems(services) == []
    _assert_exactly_once(services)
    _assert_every_transition_recorded(services, created)


@pytest.fixture(autouse=True)
def _postgres_only(services: Services) -> Iterator[None]:
    assert not services.db.is_sqlite
    yield


def test_the_workers_recording_locks_its_connections_in_id_order(
    services: Services, tenant: Tenant, clock: FrozenClock, api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """What the stress above ran into (a PostgreSQL deadlock between the worker's recording
    and a planner batch, surfacing as the planner's exception or a PUT's 503): a batch of
    jobs of several kinds is preloaded a query per kind (`Worker._preload`), each locking
    its connections in id order, but not the batch's connections in id order overall: a
    suspend of B claimed before a change of A (A < B) locked B, then A; a planner batch
    locks A, then B. The worker now locks the whole batch's connections in id order first."""

    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    made = [
        api.post(BASE, json={"bandwidth": "10 Mbps", "locationId": SMALL}, headers=headers)
        for _ in range(2)
    ]
    assert [r.status_code for r in made] == [201, 201]
    run_jobs(services)  # provisioned
    low, high = sorted(r.json()["id"] for r in made)
    assert api.post(f"{BASE}/{high}/suspend", headers=headers).status_code == 202
    put = api.put(f"{BASE}/{low}/bandwidth", json={"bandwidth": "50 Mbps"}, headers=headers)
    assert put.status_code == 200, put.text

    # Another transaction (a planner batch) holds the lower id's row and will take the
    # higher one's next, in id order; the worker's recording meets it.
    failures: list[BaseException] = []

    def work() -> None:
        try:
            services.worker().run_once()  # one batch: the suspend and the change
        except BaseException as exc:
            failures.append(exc)

    with services.db.engine.connect() as other:
        lock = text("SELECT id FROM connections WHERE id = :id FOR UPDATE")
        other.execute(lock, {"id": low})
        worker = threading.Thread(target=work)
        worker.start()
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%connections%'"
        )
        deadline = time.monotonic() + 30
        with services.db.engine.connect() as probe:
            while not probe.execute(waiting).scalar() and time.monotonic() < deadline:
                probe.rollback()
                time.sleep(0.02)
        # The worker waits for the lower id now. Had it locked the higher one first (kind
        # after kind), this would wait for the worker: a deadlock, one of the two aborted.
        other.execute(text("SET LOCAL lock_timeout = '20s'"))
        other.execute(lock, {"id": high})
        other.commit()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert failures == []
    with services.db.read() as session:
        states = {c.id: c.status for c in session.scalars(select(Connection))}
    assert states[high] == "suspended"
