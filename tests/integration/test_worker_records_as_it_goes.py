"""A batch of slow operations is recorded job by job (`WorkerPolicy.record_every_seconds`): a
connection is active as soon as its own provisioning is done, not when the whole batch is (a
burst of 20 orders on the simulated network, 2 s each, showed nothing for 30 s)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import exc, select

from iod.app import Services
from iod.models import Connection, Job
from iod.network.base import ConnectionSpec
from iod.network.simulated import SimulatedDriver

BASE = "/internet-on-demand/connections"
ORDER = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}


def _statuses_seen_at_each_provisioning(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    driver: SimulatedDriver,
    monkeypatch: pytest.MonkeyPatch,
    record_every: float,
) -> list[dict[str, str]]:
    for _ in range(3):
        made = api.post(BASE, json=ORDER, headers=headers)
        assert made.status_code == 201, made.text
    seen: list[dict[str, str]] = []
    real = driver.provision

    def provision(spec: ConnectionSpec, op_id: str) -> Any:
        with services.db.read() as session:
            rows = session.execute(select(Connection.id, Connection.status)).all()
        seen.append({row.id: row.status for row in rows})
        return real(spec, op_id)

    monkeypatch.setattr(driver, "provision", provision)
    worker = services.worker()
    worker.policy = dataclasses.replace(worker.policy, record_every_seconds=record_every)
    with structlog.testing.capture_logs() as logs:
        assert worker.run_once() == 3  # one batch
    # Each job recorded once: a chunk recorded again would meet its finished job.
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    _all_done_at_the_first_attempt(services)
    return seen


def _all_done_at_the_first_attempt(services: Services) -> None:
    with services.db.read() as session:
        assert set(session.scalars(select(Connection.status))) == {"active"}
        jobs = session.execute(select(Job.state, Job.attempts)).all()
    assert [tuple(job) for job in jobs] == [("done", 1)] * 3


@pytest.mark.parametrize(
    ("record_every", "active_at_each_start"),
    [
        # 0 s: every operation counts as slow, whatever the machine's speed. When the k-th
        # provisioning starts, the k-1 before it are recorded active.
        (0.0, [0, 1, 2]),
        # Fast operations (an hour to spare): the batch is recorded once, at its end.
        (3600.0, [0, 0, 0]),
    ],
    ids=["slow-one-by-one", "fast-together"],
)
def test_a_batch_is_recorded_as_it_goes_when_slow(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    driver: SimulatedDriver,
    monkeypatch: pytest.MonkeyPatch,
    record_every: float,
    active_at_each_start: list[int],
) -> None:
    seen = _statuses_seen_at_each_provisioning(
        api, headers, services, driver, monkeypatch, record_every
    )
    assert [sum(status == "active" for status in s.values()) for s in seen] == active_at_each_start


@pytest.mark.parametrize("failed_records", [1, 2], ids=["then-back", "still-down-at-the-end"])
def test_a_record_that_fails_midway_leaves_the_rest_to_the_end_of_the_batch(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    driver: SimulatedDriver,
    monkeypatch: pytest.MonkeyPatch,
    failed_records: int,
) -> None:
    """The database unavailable at the first record: the batch is still carried out whole and
    recorded at its end, or held for the next `run_once` if the database is still down then
    (before, the jobs not carried out yet stayed claimed until their lease ran out)."""
    for _ in range(3):
        assert api.post(BASE, json=ORDER, headers=headers).status_code == 201
    provisioned: list[str] = []
    real_provision = driver.provision

    def provision(spec: ConnectionSpec, op_id: str) -> Any:
        provisioned.append(op_id)
        return real_provision(spec, op_id)

    monkeypatch.setattr(driver, "provision", provision)
    worker = services.worker()
    worker.policy = dataclasses.replace(worker.policy, record_every_seconds=0.0)
    real_record = worker._record
    calls: list[int] = []

    def record(acted: Any) -> Any:
        calls.append(len(acted))
        if len(calls) <= failed_records:
            raise exc.OperationalError("SELECT 1", None, Exception("the database went away"))
        return real_record(acted)

    monkeypatch.setattr(worker, "_record", record)
    if failed_records == 1:
        assert worker.run_once() == 3
        assert calls == [1, 3]  # the first job alone, then the whole batch at its end
    else:
        with pytest.raises(exc.OperationalError):
            worker.run_once()
        assert calls == [1, 3]
        assert len(worker._held) == 3  # held, recorded first by the next run
        assert worker.run_once() == 0
    assert len(provisioned) == 3
    _all_done_at_the_first_attempt(services)
