"""The TCP settings of PostgreSQL connections (`IOD_DATABASE_TCP_TIMEOUT`): what the
engine's and the LISTEN connections are opened with. tests/faults/test_silent_database.py
shows what they are for, with a server that stops answering."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from iod.infra.config import Settings
from iod.infra.db import make_engine, tcp_options
from iod.jobs.listener import Listener
from tests.conftest import postgres_url


def test_the_timeout_sets_keepalives_and_the_user_timeout() -> None:
    assert tcp_options(20) == {
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "3",
        "keepalives_count": "3",
        "tcp_user_timeout": "20000",
    }
    assert tcp_options(0.5)["tcp_user_timeout"] == "1000"  # libpq's unit is the millisecond
    assert tcp_options(0) == {}  # the operating system's defaults


def test_the_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOD_DATABASE_TCP_TIMEOUT", "7")
    options = Settings().engine_options
    engine = make_engine("postgresql+psycopg://u@db.invalid/x", **options)
    assert engine.url.query["tcp_user_timeout"] == "7000"
    engine.dispose()


def test_options_in_the_url_win() -> None:
    engine = make_engine("postgresql+psycopg://u@db.invalid/x?tcp_user_timeout=1234")
    assert engine.url.query["tcp_user_timeout"] == "1234"
    assert engine.url.query["keepalives"] == "1"
    engine.dispose()


def test_sqlite_has_no_tcp() -> None:
    engine = make_engine("sqlite://")
    assert not engine.url.query
    engine.dispose()


def test_a_real_connection_and_the_listener_get_them() -> None:
    engine = make_engine(postgres_url(), tcp_timeout=12)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            parameters = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
        assert parameters["tcp_user_timeout"] == "12000"
        assert parameters["keepalives_idle"] == "6"
        stop = threading.Event()
        listener = Listener(engine.url, "iod_test_tcp", threading.Event(), stop)
        assert "tcp_user_timeout=12000" in listener.conninfo
    finally:
        engine.dispose()
