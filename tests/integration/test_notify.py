"""PostgreSQL's wake-ups of other processes, sent after the commit and coalesced
(infra/db/notify.py): a listener hears every channel a commit woke, never a rolled-back
one's; commits that come while a NOTIFY is in flight share the next one; what is pending
when the database is disposed is sent first; a database that is away costs retries, not
the commits."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url
from structlog.testing import capture_logs

from iod.infra.clock import FrozenClock
from iod.infra.db import Database, make_engine
from iod.infra.db import notify as notify_module
from iod.infra.db.notify import Notifier
from iod.jobs import queue
from tests.conftest import _prepare_postgres, postgres_url


class _Heard:
    """A LISTEN connection of its own on some channels: what it has heard so far."""

    def __init__(self, *channels: str) -> None:
        url = make_url(postgres_url()).set(drivername="postgresql")
        self.conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        for channel in channels:
            self.conn.execute(f"LISTEN {channel}")
        self.heard: list[str] = []

    def collect(self, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for note in self.conn.notifies(timeout=min(left, 0.2), stop_after=1):
                self.heard.append(note.channel)
        return self.heard

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def other() -> Any:
    """A Database of its own, as another process would have."""
    postgres_url()
    _prepare_postgres().dispose()
    db = Database(make_engine(postgres_url(), pool_size=2))
    yield db
    db.dispose()


def test_commits_wake_listeners_after_the_commit(other: Database, clock: FrozenClock) -> None:
    heard = _Heard("iod_jobs", "iod_events")
    try:
        now = clock.now()
        with pytest.raises(RuntimeError), other.write() as session:
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
            raise RuntimeError("rolled back")
        assert other.flush_notifications()
        assert heard.collect(0.5) == [], "a rolled-back transaction wakes nobody"
        with other.write() as session:
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
        assert other.flush_notifications()
        assert heard.collect(2) == ["iod_jobs"]
        # The transaction is over when the listener hears it: its job is there to take.
        with other.read() as session:
            assert queue.next_due(session) is not None
    finally:
        heard.close()


def test_commits_during_a_notify_in_flight_share_the_next(
    other: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load each commit does not cost a NOTIFY: those handed over while one is being
    sent go together in one statement, and every channel is still heard."""
    release, entered = threading.Event(), threading.Event()
    original = notify_module._State._send

    def slow(state: Any, channels: list[str]) -> None:
        entered.set()
        release.wait(10)
        original(state, channels)

    monkeypatch.setattr(notify_module._State, "_send", slow)
    heard = _Heard("iod_jobs", "iod_events")
    try:
        now = clock.now()
        with other.write() as session:  # the first: its NOTIFY is held in flight
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
        assert entered.wait(10)
        for n in range(20):
            with other.write() as session:
                queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
                if n == 7:
                    from iod.infra.db import uow

                    uow.wake(session, "events")
        release.set()
        assert other.flush_notifications()
        notifier = other._wakes
        assert notifier is not None and notifier.sent == 2  # 21 commits, 2 statements
        assert sorted(heard.collect(2)) == ["iod_events", "iod_jobs", "iod_jobs"]
    finally:
        release.set()
        heard.close()


def test_what_is_pending_is_sent_when_the_database_is_disposed(clock: FrozenClock) -> None:
    postgres_url()
    _prepare_postgres().dispose()
    db = Database(make_engine(postgres_url(), pool_size=2))
    heard = _Heard("iod_jobs")
    try:
        now = clock.now()
        with db.write() as session:
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
        notifier = db._wakes
        assert notifier is not None
        thread = notifier._state.thread
        db.dispose()  # at once: the NOTIFY may not have gone yet
        assert heard.collect(2) == ["iod_jobs"]
        assert thread is not None and not thread.is_alive()
        assert db._wakes is None  # a commit after this would make a new notifier
    finally:
        heard.close()


def test_a_database_that_is_away_costs_retries_not_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No server on the port: the wake is kept and retried after a pause that more commits
    do not cut short (each would make the server start a backend to refuse), `wake` never
    blocks, and closing ends the thread."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[float] = []
    original = psycopg.connect

    def counted(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        return original(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counted)
    notifier = Notifier(make_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere"))
    started = time.monotonic()
    while time.monotonic() - started < 1.2:  # a commit every 5 ms
        notifier.wake(["iod_jobs"])
        time.sleep(0.005)
    assert not notifier.flush(0.1)  # it cannot be sent: still pending
    assert notifier.sent == 0
    # At 0 s, then after 0.5 s (a pause of 1 s follows): not one per commit.
    assert 1 <= len(attempts) <= 3, attempts
    thread = notifier._state.thread
    notifier.close()
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()


def test_a_connection_the_server_ended_is_replaced_at_once(other: Database) -> None:
    """A restart ends the notifier's idle connection; the next commit's NOTIFY goes out on a
    new one at once, not after the failure pause."""
    heard = _Heard("iod_jobs")
    try:
        with other.write() as session:
            from iod.infra.db import uow

            uow.wake(session, "jobs")
        assert other.flush_notifications()
        assert heard.collect(1) == ["iod_jobs"]
        notifier = other._wakes
        assert notifier is not None
        pid = notifier._state.connection.info.backend_pid
        heard.conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 30  # autocommit: each look sees the activity anew
        while heard.conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.02)
        # Sent without a failure, so without its pause: a race against the pause's 0.5 s
        # failed when a loaded machine was slow, the failure's warning does not.
        with capture_logs() as logs:
            with other.write() as session:
                uow.wake(session, "jobs")
            assert other.flush_notifications(10)
        failures = [e for e in logs if e["event"] in ("db.notify_failed", "db.notify_back")]
        assert failures == [], "the ended connection cost a failure and its pause"
        assert heard.collect(1) == ["iod_jobs", "iod_jobs"]
        assert not notifier._state.failing
    finally:
        heard.close()


def test_a_thread_that_died_is_started_again(other: Database) -> None:
    heard = _Heard("iod_jobs")
    try:
        with other.write() as session:
            from iod.infra.db import uow

            uow.wake(session, "jobs")
        assert other.flush_notifications()
        notifier = other._wakes
        assert notifier is not None
        first = notifier._state.thread
        assert first is not None
        with notifier._state.changed:  # as if it had died: it ends when nothing is pending
            notifier._state.closed = True
            notifier._state.changed.notify_all()
        first.join(5)
        notifier._state.closed = False
        with other.write() as session:
            uow.wake(session, "jobs")
        assert other.flush_notifications()
        assert notifier._state.thread is not first
        assert heard.collect(1) == ["iod_jobs", "iod_jobs"]
    finally:
        heard.close()


def test_sqlite_has_no_notifier(sqlite_database: Database, clock: FrozenClock) -> None:
    now = clock.now()
    with sqlite_database.write() as session:
        queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
    assert sqlite_database._wakes is None and sqlite_database.flush_notifications()
