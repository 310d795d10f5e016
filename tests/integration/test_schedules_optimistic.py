"""The planner checks a batch against its locations' figures read without their locks and
takes the rows only at its end (`planner._settle_locations`): whatever another transaction
commits in between, the batch writes what the locked check would have written, the
counters stay exact, and batches planned several at once (`service.plan_concurrently`)
plan each transition once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection as DBConnection
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from iod.app import Services
from iod.connections import capacity
from iod.connections import repository as connections_repository
from iod.infra.clock import FrozenClock
from iod.jobs.registry import Deferred, TaskContext
from iod.models import BandwidthChange, Location, ScheduleTransition
from iod.schedules import planner, service, tasks
from tests.conftest import Tenant
from tests.integration.test_schedules_planning import (
    LOC,
    PLANNING,
    POLICY,
    _expected,
    _planned,
    _schedules,
    thirty_hours_later,
)

BUMP = 1_000  # Mbps another transaction commits at the location meanwhile (10 Gbps port)


def _committed(services: Services) -> tuple[int, int]:
    """The location's counter and the reference sum over its connections."""
    with services.db.read() as session:
        location = session.get(Location, LOC)
        assert location is not None
        return location.committed_mbps, connections_repository.committed_at_location(session, LOC)


def _meanwhile(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[DBConnection], None]
) -> dict[bool, int]:
    """Runs `change` on the location right after a batch read it without its lock, as if
    another transaction committed then; counts the reads with and without the lock. The
    change is made in the batch's transaction, inside the savepoint of its optimistic try:
    when that is rolled back, it is made again before the locked read (`change` must be
    idempotent when a batch may be checked again)."""
    reads = {True: 0, False: 0}
    real = planner._read_locations

    def reading(session: Session, ids: Any, *, lock: bool) -> dict[str, Any]:
        reads[lock] += 1
        if lock:
            change(session.connection())
        found = real(session, ids, lock=lock)
        if not lock:
            change(session.connection())
        return found

    monkeypatch.setattr(planner, "_read_locations", reading)
    return reads


def overcommit(db: DBConnection) -> None:
    """The location over-committed meanwhile (a smaller port in the catalog): nothing fits
    any more, not even a change that does not move its connection's figure (checked all the
    same)."""
    db.execute(
        update(Location).where(Location.id == LOC).values(committed_mbps=Location.capacity_mbps + 1)
    )


def _plan_all(services: Services, clock: FrozenClock) -> int:
    total, after = 0, None
    while True:
        with services.db.write() as session:
            planned, after = service.plan_due(session, clock, POLICY, PLANNING, after)
        total += planned
        if after is None:
            return total


def _refusals(services: Services) -> list[str]:
    with services.db.read() as session:
        return list(
            session.scalars(
                select(ScheduleTransition.detail).where(ScheduleTransition.outcome == "refused")
            )
        )


def test_a_figure_that_moved_but_still_holds_keeps_the_batch(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _schedules(services, tenant, 5)
    counter, reference = _committed(services)
    assert counter == reference
    clock.advance(timedelta(hours=30))
    reads = _meanwhile(
        monkeypatch,
        lambda db: db.execute(
            update(Location)
            .where(Location.id == LOC)
            .values(committed_mbps=Location.committed_mbps + BUMP)
        ),
    )
    assert _plan_all(services, clock) > 0
    assert reads[False] > 0 and reads[True] == 0  # no batch had to be checked again
    counter, reference = _committed(services)
    # Every batch's rise counted on top of the figure the row had, not the one it read.
    assert counter == reference + BUMP * reads[False]
    assert _refusals(services) == []


def test_a_figure_that_no_longer_fits_checks_the_batch_again_with_the_lock(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, created_until, before = thirty_hours_later(services, tenant, clock, 4)

    reads = _meanwhile(monkeypatch, overcommit)
    _plan_all(services, clock)
    assert reads[True] > 0  # the optimistic check saw room the row no longer had
    refusals = _refusals(services)
    assert refusals and all("capacity" in detail for detail in refusals), refusals
    with services.db.read() as session:
        location = session.get(Location, LOC)
        assert location is not None
        assert location.committed_mbps == location.capacity_mbps + 1  # nothing added
        planned = session.scalar(
            select(func.count()).select_from(ScheduleTransition)
            .where(ScheduleTransition.outcome == "planned", ScheduleTransition.at > created_until)
        )  # fmt: skip
    # Each owed transition is recorded once, planned or refused, none missing.
    recorded = len(_planned(services)) - before + len(refusals)
    assert recorded == _expected(services, ids, created_until, clock.now() + PLANNING.horizon)
    assert planned == 0


def test_tiers_changed_meanwhile_check_the_batch_again(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _schedules(services, tenant, 3)
    clock.advance(timedelta(hours=30))

    def no_gigabit(db: DBConnection) -> None:
        tiers = db.scalar(select(Location.tiers_mbps).where(Location.id == LOC))
        assert tiers is not None
        db.execute(
            update(Location)
            .where(Location.id == LOC)
            .values(tiers_mbps=[t for t in tiers if t != 1000])
        )

    reads = _meanwhile(monkeypatch, no_gigabit)
    _plan_all(services, clock)
    assert reads[True] > 0
    refusals = _refusals(services)
    assert refusals and all("1 Gbps is not offered" in detail for detail in refusals), refusals
    with services.db.read() as session:
        gigabit = session.scalar(
            select(func.count()).select_from(BandwidthChange)
            .where(BandwidthChange.to_mbps == 1000, BandwidthChange.status == "scheduled",
                   BandwidthChange.requested_at >= clock.now())
        )  # fmt: skip
    assert gigabit == 0  # none planned against the tiers the batch had read


@pytest.mark.parametrize("at_once", [1, 3])
def test_batches_in_flight_at_once_plan_each_transition_once(
    services: Services, tenant: Tenant, clock: FrozenClock, at_once: int
) -> None:
    ids, created_until, before = thirty_hours_later(services, tenant, clock, 9)
    total, after, jobs = 0, None, 0
    while True:
        planned, after = service.plan_concurrently(
            services.db, clock, POLICY, PLANNING, after, batches=2, at_once=at_once
        )
        total += planned
        jobs += 1
        if after is None:
            break
    assert jobs >= 2  # 9 schedules in batches of 4, two batches a call: a follow-up
    planned_rows = _planned(services)
    assert len(planned_rows) == len(set(planned_rows)), "a transition was planned twice"
    added = len(planned_rows) - before
    assert added == total
    assert added == _expected(services, ids, created_until, clock.now() + PLANNING.horizon)
    counter, reference = _committed(services)
    assert counter == reference
    with services.db.read() as session:
        assert capacity.check(session) == []


def test_keyed_lookups_hold_for_the_planners_transaction_alone(services: Services) -> None:
    postgres = services.db.engine.dialect.name == "postgresql"
    with services.db.engine.connect() as connection:
        session = Session(bind=connection)
        planner.keyed_lookups(session)
        shown = connection.execute(text("SHOW enable_seqscan")).scalar() if postgres else "off"
        assert shown == "off"
        session.commit()
        # The next transaction on the same connection plans as usual (`SET LOCAL`).
        shown = connection.execute(text("SHOW enable_seqscan")).scalar() if postgres else "on"
        assert shown == "on"


def test_a_failed_batch_fails_the_call_and_the_next_run_plans_the_rest(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, created_until, before = thirty_hours_later(services, tenant, clock, 9)
    real = service._plan_batch
    calls = {"n": 0}

    def second_fails(*args: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("batch two failed")
        return real(*args)

    monkeypatch.setattr(service, "_plan_batch", second_fails)
    with pytest.raises(RuntimeError, match="batch two failed"):
        service.plan_concurrently(services.db, clock, POLICY, PLANNING, None, batches=3, at_once=2)
    monkeypatch.setattr(service, "_plan_batch", real)
    after = None
    while True:  # the job again, then its follow-ups
        _, after = service.plan_concurrently(
            services.db, clock, POLICY, PLANNING, after, batches=3, at_once=2
        )
        if after is None:
            break
    planned = _planned(services)
    assert len(planned) == len(set(planned))
    added = len(planned) - before
    assert added == _expected(services, ids, created_until, clock.now() + PLANNING.horizon)


def test_the_planner_job_waits_out_an_outage_without_spending_attempts(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> tuple[int, str | None]:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(service, "plan_concurrently", down)
    context = TaskContext(services.clock, services.settings, services.driver, services.db)
    with pytest.raises(Deferred):
        tasks._act(context, {"after": None, "max_attempts": 5}, "job-1")

    def broken(*args: Any, **kwargs: Any) -> tuple[int, str | None]:
        raise ValueError("a bug")

    monkeypatch.setattr(service, "plan_concurrently", broken)
    with pytest.raises(ValueError, match="a bug"):  # an attempt, retried as usual
        tasks._act(context, {"after": None, "max_attempts": 5}, "job-1")
