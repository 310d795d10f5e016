"""Planning schedules exactly once: several planners at the same time, and a planner that
dies in the middle of its transaction, leave each transition planned once, none missing."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from iod.app import Services
from iod.auth.tokens import Principal
from iod.connections import service as connections
from iod.connections.schemas import ConnectionRequest
from iod.domain import schedules as calendar
from iod.infra.clock import FrozenClock
from iod.models import BandwidthChange, ScheduleTransition
from iod.schedules import planner, service
from iod.schedules.schemas import ScheduleRequest
from tests.conftest import Tenant, run_jobs

LOC = "PL0001247634"
PLANNING = service.Planning(horizon=timedelta(hours=48), batch=4)
POLICY = connections.Policy()


def _schedules(services: Services, tenant: Tenant, count: int) -> list[str]:
    principal = Principal(tenant.client_id, tenant.customer_id, frozenset({"write"}), 0)
    ids = []
    for index in range(count):
        with services.db.write() as session:
            conn = connections.create_connection(
                session, services.clock, principal,
                ConnectionRequest(bandwidth="100 Mbps", locationId=LOC), POLICY,
            )  # fmt: skip
            body = ScheduleRequest.model_validate({
                "timeZone": ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"][index % 3],
                "defaultBandwidth": "100 Mbps",
                "rules": [
                    {"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00",
                     "recurrence": "FREQ=DAILY"},
                    {"bandwidth": "500 Mbps", "start": "12:00", "end": "13:30",
                     "recurrence": "FREQ=WEEKLY;BYDAY=MO,WE,FR"},
                ],
            })  # fmt: skip
            ids.append(
                service.create(
                    session, services.clock, principal, conn.id, body, POLICY, PLANNING
                ).id
            )
    run_jobs(services)
    return ids


def _planned(services: Services) -> list[tuple[str | None, object]]:
    with services.db.read() as session:
        rows = session.execute(
            select(BandwidthChange.schedule_id, BandwidthChange.effective_at).where(
                BandwidthChange.schedule_id.is_not(None)
            )
        ).all()
    return [(r[0], r[1]) for r in rows]


def _expected(services: Services, ids: list[str], start: object, end: object) -> int:
    from iod.models import Schedule

    total = 0
    with services.db.read() as session:
        for schedule_id in ids:
            schedule = session.get(Schedule, schedule_id)
            assert schedule is not None
            total += len(calendar.transitions(service.spec_of(schedule), start, end)[1])  # type: ignore[arg-type]
    return total


def thirty_hours_later(
    services: Services, tenant: Tenant, clock: FrozenClock, count: int
) -> tuple[list[str], object, int]:
    """`count` schedules planned at creation, then the clock 30 hours on: their ids, how
    far creation planned them, and how many changes schedules had planned by then."""
    ids = _schedules(services, tenant, count)
    created_until = clock.now() + PLANNING.horizon
    before = len(_planned(services))
    clock.advance(timedelta(hours=30))
    return ids, created_until, before


def test_concurrent_planners_plan_each_transition_once(
    services: Services, tenant: Tenant, clock: FrozenClock
) -> None:
    ids, created_until, before = thirty_hours_later(services, tenant, clock, 6)
    errors: list[BaseException] = []

    def planner() -> None:
        try:
            after = None
            while True:
                with services.db.write() as session:
                    _, after = service.plan_due(session, clock, POLICY, PLANNING, after)
                if after is None:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=planner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    planned = _planned(services)
    assert len(planned) == len(set(planned)), "a transition was planned twice"
    added = len(planned) - before
    assert added == _expected(services, ids, created_until, clock.now() + PLANNING.horizon)
    assert added > 0


def test_a_planner_that_dies_mid_transaction_leaves_nothing_half_done(
    services: Services, tenant: Tenant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, created_until, before = thirty_hours_later(services, tenant, clock, 4)
    real = planner._sync
    calls = {"n": 0}

    def dying(*args: object, **kwargs: object) -> None:
        # The batch's rows are written (changes, jobs, transitions, counters); then the
        # process dies: its transaction never commits.
        calls["n"] += 1
        raise SystemExit("killed")

    monkeypatch.setattr(planner, "_sync", dying)
    with pytest.raises(SystemExit), services.db.write() as session:
        service.plan_due(session, clock, POLICY, PLANNING)
    assert calls["n"] == 1
    assert len(_planned(services)) == before  # nothing of the dead transaction is left
    monkeypatch.setattr(planner, "_sync", real)
    after = None
    while True:  # the job runs again (its lease ran out)
        with services.db.write() as session:
            _, after = service.plan_due(session, clock, POLICY, PLANNING, after)
        if after is None:
            break
    planned = _planned(services)
    assert len(planned) == len(set(planned))
    assert len(planned) - before == _expected(
        services, ids, created_until, clock.now() + PLANNING.horizon
    )
    with services.db.read() as session:
        rows = session.scalar(select(func.count()).select_from(ScheduleTransition))
    assert rows == len(planned)
