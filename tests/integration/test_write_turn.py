"""SQLite: a process's write transactions take turns before asking SQLite for its write lock
(`Database.write`, issue 14 item 2), instead of waiting in SQLite's sleeping busy handler."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, exc, text

from iod.infra.db import Database, is_unavailable, make_engine


def test_only_one_writer_of_a_process_at_a_time_asks_sqlite(sqlite_database: Database) -> None:
    inside = 0
    most = 0
    lock = threading.Lock()

    def enter(*_: Any) -> None:  # a connection taken from the pool, before any BEGIN
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)

    def leave(*_: Any) -> None:
        nonlocal inside
        with lock:
            inside -= 1

    pool = sqlite_database.engine.pool
    event.listen(pool, "checkout", enter)
    event.listen(pool, "checkin", leave)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            start.wait()
            for _ in range(5):
                with sqlite_database.write() as session:
                    session.execute(text("CREATE TABLE IF NOT EXISTS turn_probe (n INTEGER)"))
                    session.execute(text("INSERT INTO turn_probe (n) VALUES (1)"))
                    time.sleep(0.002)  # hold the write lock a moment, as real work does
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Without the turns, each waiting writer holds a pooled connection in SQLite's busy
    # handler (up to the pool's size at once).
    assert most == 1, f"{most} writers held a connection at once"
    with sqlite_database.read() as session:
        assert session.scalar(text("SELECT count(*) FROM turn_probe")) == 40


def test_no_turn_within_the_busy_timeout_is_unavailable(sqlite_database: Database) -> None:
    db = Database(make_engine(str(sqlite_database.engine.url), busy_timeout=0.2))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db.write() as session:
            session.execute(text("SELECT 1"))
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(exc.TimeoutError) as caught, db.write():
            pass
        # Its own busy timeout (0.2 s), generously for a loaded machine: not the default 10 s.
        assert 0.15 < time.monotonic() - started < 5
        assert is_unavailable(caught.value)  # answered 503 with Retry-After by the API
    finally:
        release.set()
        holder.join()
    with db.write() as session:  # the turn is given back
        assert session.execute(text("SELECT 1")).scalar() == 1
    db.dispose()


def _eventually(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_the_turn_goes_to_the_writers_in_the_order_they_came() -> None:
    """First come, first served (`_FairTurn`): a writer that arrives while others wait is
    not let in before them, however the threads are scheduled."""
    from iod.infra.db import _FairTurn

    turn = _FairTurn()
    assert turn.acquire(timeout=1)
    order: list[int] = []

    def waiter(n: int) -> None:
        assert turn.acquire(timeout=30)
        order.append(n)
        turn.release()

    threads = []
    for n in range(6):
        thread = threading.Thread(target=waiter, args=(n,))
        thread.start()
        threads.append(thread)
        _eventually(lambda n=n: len(turn._waiting) == n + 1)  # queued before the next comes
    turn.release()
    for thread in threads:
        thread.join(timeout=30)
    assert order == list(range(6))


def test_the_turn_is_reentrant_and_a_wait_runs_out() -> None:
    from iod.infra.db import _FairTurn

    turn = _FairTurn()
    assert turn.acquire(timeout=1) and turn.acquire(timeout=1)  # the same thread again
    turn.release()
    outcome: list[bool] = []
    other = threading.Thread(target=lambda: outcome.append(turn.acquire(timeout=0.05)))
    other.start()
    other.join(timeout=30)
    assert outcome == [False] and not turn._waiting  # still held once: it gave up, queued no more
    turn.release()
    later = threading.Thread(
        target=lambda: (outcome.append(turn.acquire(timeout=30)), turn.release())
    )
    later.start()
    later.join(timeout=30)
    assert outcome == [False, True]
