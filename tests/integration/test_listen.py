"""On PostgreSQL an idle worker of any process is woken by the commit of a job due now
(NOTIFY iod_jobs sent after the enqueuing transaction's commit, infra/db/notify.py; LISTEN
in the worker); a rollback or a job due later wakes nobody."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from iod.infra.clock import FrozenClock
from iod.infra.db import Database, make_engine
from iod.jobs import queue
from iod.jobs.listener import Listener
from tests.conftest import _prepare_postgres, postgres_url


def test_a_commit_of_a_job_due_now_wakes_listeners_in_other_processes(
    clock: FrozenClock,
) -> None:
    postgres_url()
    _prepare_postgres().dispose()
    # The enqueuing side: a Database of its own, as another process would have.
    other = Database(make_engine(postgres_url(), pool_size=2))
    wakeup, stop = threading.Event(), threading.Event()
    listener = Listener(other.engine.url, "iod_jobs", wakeup, stop)
    listener.start()
    try:
        assert listener.listening.wait(10)
        now = clock.now()
        with pytest.raises(RuntimeError), other.write() as session:
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
            raise RuntimeError("rolled back")
        with other.write() as session:
            later = now + timedelta(hours=1)
            queue.enqueue(session, "provision", run_at=later, now=now, max_attempts=1)
        assert not wakeup.wait(1.0), "nothing due now was committed"
        with other.write() as session:
            queue.enqueue(session, "provision", run_at=now, now=now, max_attempts=1)
        assert wakeup.wait(5), "the commit notified the listener"
    finally:
        stop.set()
        listener.join(10)
        other.dispose()
    assert not listener.is_alive()


def test_the_feeds_listening_thread_ends_when_its_database_is_disposed() -> None:
    """A hub's LISTEN thread must not outlive its database (an app stopped, a test's database
    dropped): it would reconnect and log failures for the life of the process."""
    import time

    from iod.events.service import hub_of

    postgres_url()
    db = _prepare_postgres()

    def listeners() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "iod-listen-iod_events"]

    before = set(listeners())
    hub_of(db)
    started = [t for t in listeners() if t not in before]
    assert len(started) == 1
    db.dispose()
    deadline = time.monotonic() + 10
    while started[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not started[0].is_alive()
