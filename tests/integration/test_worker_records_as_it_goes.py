"""A batch of slow operations is recorded job by job (`WorkerPolicy.record_every_seconds`): a
connection is active as soon as its own provisioning is done, not when the whole batch is (a
burst of 20 orders on the simulated network, 2 s each, showed nothing for 30 s)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services
from iod.models import Connection
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
    assert worker.run_once() == 3  # one batch
    with services.db.read() as session:
        assert set(session.scalars(select(Connection.status))) == {"active"}
    return seen


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
