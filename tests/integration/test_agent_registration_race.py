"""Two `iod network agent-add` of one location at once, on PostgreSQL: one registers the
agent, the other is refused as a conflict (it was a unique key's IntegrityError, a
traceback from the command)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from iod.app import Services
from iod.edge import repository
from iod.edge import service as edge
from iod.infra.errors import Conflict
from tests.conftest import reads_meet

LOCATION = "PL0001247634"


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_two_registrations_of_one_location_at_once_register_one_agent(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    with services.db.write() as session:  # the edge customer exists already
        edge.register_agent(session, services.clock, "PL0000381920", services.secret_hasher)
    reads_meet(monkeypatch, repository, "agent")

    def register(_: int) -> str:
        try:
            with services.db.write() as session:
                edge.register_agent(session, services.clock, LOCATION, services.secret_hasher)
        except Conflict as refused:
            return refused.detail
        return "registered"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(register, range(2)))
    assert outcomes == [f"location {LOCATION} already has an agent", "registered"]
