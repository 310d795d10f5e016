"""A pooled PostgreSQL connection is checked at checkout without a round trip
(`iod.infra.db._ping_if_disturbed`): a healthy one is handed out as it is, one whose
server end was closed (a restart, `pg_terminate_backend`) is replaced before any request
uses it. tests/faults/test_database_restart.py restarts the whole cluster under load."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from iod.infra.db import make_engine
from tests.conftest import postgres_url


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine(postgres_url(), pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The dialect's pings, counted (each one is a round trip to the server)."""
    seen: list[object] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        seen.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_healthy_connection_is_checked_out_without_a_round_trip(
    engine: Engine, pings: list[object]
) -> None:
    first = backend_pid(engine)
    for _ in range(5):
        assert backend_pid(engine) == first  # the same pooled connection each time
    assert pings == []


def test_a_connection_the_server_closed_is_replaced_at_checkout(
    engine: Engine, pings: list[object]
) -> None:
    victim = backend_pid(engine)  # now idle in the pool
    admin = make_engine(postgres_url())
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": victim}).scalar()
            conn.commit()
            deadline = time.monotonic() + 30
            # A transaction per look: PostgreSQL keeps one snapshot of its activity
            # statistics for the whole of a transaction, so polling in one would see the
            # backend alive for ever if the first look came before it ended.
            while conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": victim}
            ).scalar_one():
                conn.rollback()
                assert time.monotonic() < deadline, "the backend did not end"
                time.sleep(0.05)
    finally:
        admin.dispose()
    # Without the check this checkout hands out the dead connection and the query fails.
    replacement = backend_pid(engine)
    assert replacement != victim
    assert len(pings) == 1  # the readable socket was pinged, failed, and was replaced
    assert backend_pid(engine) == replacement
    assert len(pings) == 1  # and the new connection is healthy: no further ping


def test_an_explicit_pre_ping_is_left_to_sqlalchemy() -> None:
    engine = make_engine(postgres_url(), pool_pre_ping=True)
    try:
        assert engine.pool._pre_ping
        assert not engine.pool.dispatch.checkout  # no second check of ours
    finally:
        engine.dispose()
