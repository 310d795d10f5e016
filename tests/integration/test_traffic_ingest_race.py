"""Two identical readings of one connection ingested at once (an agent's post sent twice,
the second before the first committed), on PostgreSQL: the bytes are counted once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from iod.app import Services
from iod.infra.clock import FrozenClock
from iod.infra.ids import new_id
from iod.models import TrafficSample
from iod.traffic import repository, service
from tests.conftest import reads_meet


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_one_reading_ingested_twice_at_once_is_counted_once(
    services: Services, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = new_id("con")
    with services.db.write() as session:
        service.ingest(session, clock.now(), {connection_id: (0, 0, 0, 0)})
    clock.advance(timedelta(seconds=10))
    reads_meet(monkeypatch, repository, "counters")

    def ingest(_: int) -> int:
        with services.db.write() as session:
            return service.ingest(session, clock.now(), {connection_id: (1_000_000, 0, 10, 0)})

    with ThreadPoolExecutor(2) as pool:
        written = sorted(pool.map(ingest, range(2)))
    assert written == [0, 1]
    with services.db.read() as session:
        total = session.scalar(
            select(func.sum(TrafficSample.bytes_in)).where(
                TrafficSample.connection_id == connection_id
            )
        )
    assert total == 1_000_000
