"""`Database.in_writer` (issue 14): the fast writes leave the event loop for one writer thread
per process on SQLite, in the order they came, and for the threadpool on PostgreSQL; with
`on_loop`, on SQLite, they run on the event loop itself while the writer is free."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc, text

import iod.infra.db as db_module
from iod.app import Services
from iod.infra import idempotency
from iod.infra.db import Database, is_unavailable

LOC = "PL0001247634"

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def _insert(database: Database, n: int) -> str:
    with database.write() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS writer_probe (n INTEGER)"))
        session.execute(text("INSERT INTO writer_probe (n) VALUES (:n)"), {"n": n})
    return threading.current_thread().name


def test_writes_run_on_one_thread_in_the_order_they_came(sqlite_database: Database) -> None:
    async def main() -> list[str]:
        return list(
            await asyncio.gather(
                *(sqlite_database.in_writer(_insert, sqlite_database, n) for n in range(50))
            )
        )

    names = asyncio.run(main())
    assert len(set(names)) == 1 and names[0].startswith("iod-sqlite-writer")
    assert names[0] != threading.current_thread().name
    with sqlite_database.read() as session:
        order = session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all()
    assert order == list(range(50))


def test_postgres_writes_go_to_the_threadpool(database: Database) -> None:
    async def main() -> str:
        return await database.in_writer(_insert, database, 1)

    name = asyncio.run(main())
    assert name.startswith("iod-sqlite-writer") == database.is_sqlite


def test_the_callers_context_goes_with_the_work(sqlite_database: Database) -> None:
    """The request's log context (structlog's contextvars) is the work's too."""

    async def main() -> str:
        _SEEN.set("request-1")
        return await sqlite_database.in_writer(_SEEN.get)

    assert asyncio.run(main()) == "request-1"


def test_an_error_of_the_work_is_the_callers(sqlite_database: Database) -> None:
    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        asyncio.run(sqlite_database.in_writer(fail))
    assert asyncio.run(sqlite_database.in_writer(lambda: 7)) == 7  # the thread goes on


def test_a_write_queued_beyond_the_busy_timeout_is_unavailable(sqlite_database: Database) -> None:
    sqlite_database._turn_timeout = 0.2
    release = threading.Event()
    ran: list[str] = []

    async def main() -> BaseException | None:
        first = asyncio.ensure_future(sqlite_database.in_writer(release.wait, 30))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(sqlite_database.in_writer(ran.append, "second"))
        await asyncio.sleep(0.5)  # the second waits in the queue beyond the timeout
        release.set()
        assert await first
        try:
            await second
        except exc.TimeoutError as error:
            return error
        return None

    error = asyncio.run(main())
    assert error is not None and is_unavailable(error)
    assert ran == []


def test_a_caller_cancelled_before_its_turn_never_runs_its_work(
    sqlite_database: Database,
) -> None:
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(sqlite_database.in_writer(release.wait, 30))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(sqlite_database.in_writer(ran.append, "second"))
        await asyncio.sleep(0.05)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        await first
        await sqlite_database.in_writer(ran.append, "third")

    asyncio.run(main())
    assert ran == ["third"]


def test_a_caller_cancelled_during_its_work_waits_for_its_end(sqlite_database: Database) -> None:
    started = threading.Event()
    ended: list[float] = []

    def work() -> None:
        started.set()
        time.sleep(0.3)
        ended.append(time.monotonic())

    async def main() -> float:
        task = asyncio.ensure_future(sqlite_database.in_writer(work))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    returned = asyncio.run(main())
    assert ended and ended[0] <= returned


def test_dispose_ends_the_thread_and_a_later_write_starts_another(
    sqlite_database: Database,
) -> None:
    first = asyncio.run(sqlite_database.in_writer(threading.get_ident))
    sqlite_database.dispose()
    assert not any(t.ident == first for t in threading.enumerate())
    second = asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 1))
    assert second.startswith("iod-sqlite-writer")


def test_a_caller_cancelled_twice_or_whose_work_fails_still_waits_for_its_end(
    sqlite_database: Database,
) -> None:
    started = threading.Event()
    ended: list[float] = []

    def work(fail: bool) -> None:
        started.set()
        time.sleep(0.3)
        ended.append(time.monotonic())
        if fail:
            raise ValueError("failed after the cancel")

    async def main(fail: bool) -> float:
        started.clear()
        task = asyncio.ensure_future(sqlite_database.in_writer(work, fail))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()  # again, while it waits for the work's end
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    for fail in (False, True):
        ended.clear()
        returned = asyncio.run(main(fail))
        assert ended and ended[0] <= returned


def test_a_busy_timeout_of_zero_lets_a_write_alone_go_ahead(sqlite_database: Database) -> None:
    sqlite_database._turn_timeout = 0.0
    assert asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 1))


def test_the_fast_writes_run_on_the_event_loop_while_the_writer_is_free(
    api: TestClient, headers: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the served app: the create and the PUT's transactions run on the event loop's
    own thread on SQLite (nothing else writes), in the threadpool on PostgreSQL."""
    threads: list[str] = []
    real = idempotency.run_without_key

    def spied(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(idempotency, "run_without_key", spied)
    loop_thread = api.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
    base = "/internet-on-demand/connections"
    made = api.post(base, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert made.status_code == 201, made.text
    changed = api.put(
        f"{base}/{made.json()['id']}/bandwidth", json={"bandwidth": "200 Mbps"}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    if services.db.is_sqlite:
        assert threads == [loop_thread] * 2
    else:
        assert len(threads) == 2 and loop_thread not in threads


@contextlib.asynccontextmanager
async def _ticking() -> AsyncIterator[list[int]]:
    """Counts turns of 10 ms of the event loop meanwhile: whether the loop was held."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks[0] += 1

    ticker = asyncio.ensure_future(tick())
    try:
        yield ticks
    finally:
        ticker.cancel()


def _holding_the_lock(database: Database, seconds: float) -> threading.Thread:
    """Another process's writer, as SQLite sees it: a connection of its own that holds the
    write lock for `seconds` (started and holding when this returns)."""
    path = database.engine.url.database
    assert path
    held = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    return thread


def test_a_write_on_the_loop_leaves_the_lock_another_process_holds_to_the_thread(
    sqlite_database: Database,
) -> None:
    """SQLite's lock held by another connection: the write does not wait on the event loop
    (the loop goes on, here a ticker), it goes to the writer thread, which waits for the
    lock and writes it, once."""
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))  # the table
    calls: list[int] = []

    def insert(n: int) -> str:
        calls.append(n)
        return _insert(sqlite_database, n)

    async def main() -> tuple[str, int]:
        async with _ticking() as ticks:
            holder = _holding_the_lock(sqlite_database, 0.4)
            name = await sqlite_database.in_writer(insert, 1, on_loop=True)
            holder.join()
        return name, ticks[0]

    name, ticks = asyncio.run(main())
    assert name.startswith("iod-sqlite-writer")
    assert ticks >= 10  # the loop ran while the thread waited for the lock
    assert calls == [1, 1]  # begun on the loop, refused at its BEGIN, written by the thread
    with sqlite_database.read() as session:
        assert session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all() == [0, 1]
    # The loop's attempt left the busy timeout as it was.
    with sqlite_database.engine.connect() as conn:
        busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert busy == round(sqlite_database._turn_timeout * 1000)


def test_a_write_on_the_loop_waits_behind_the_writer_thread(sqlite_database: Database) -> None:
    """While the writer thread writes (it holds the process's turn), a write on the loop
    goes to the thread's queue, after it: one writer at a time."""
    release = threading.Event()

    def slow(n: int) -> str:
        with sqlite_database.write() as session:
            session.execute(text("CREATE TABLE IF NOT EXISTS writer_probe (n INTEGER)"))
            session.execute(text("INSERT INTO writer_probe (n) VALUES (:n)"), {"n": n})
            release.wait(5)
        return threading.current_thread().name

    async def main() -> list[str]:
        first = asyncio.ensure_future(sqlite_database.in_writer(slow, 1))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(
            sqlite_database.in_writer(_insert, sqlite_database, 2, on_loop=True)
        )
        await asyncio.sleep(0.05)
        release.set()
        return [await first, await second]

    names = asyncio.run(main())
    assert all(name.startswith("iod-sqlite-writer") for name in names)
    with sqlite_database.read() as session:
        assert session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all() == [1, 2]


def test_a_failure_after_the_begin_on_the_loop_is_the_callers(sqlite_database: Database) -> None:
    """Only a refusal at its BEGIN sends a write on to the thread: a "database is locked"
    after it (here raised by the work itself) is the caller's error, the work run once."""
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        with sqlite_database.write() as session:
            session.execute(text("SELECT 1"))
            raise exc.OperationalError("SELECT 1", {}, _busy_error())

    with pytest.raises(exc.OperationalError):
        asyncio.run(sqlite_database.in_writer(work, on_loop=True))
    assert calls == [1]


def _busy_error() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    return error


def test_the_writes_on_the_loop_leave_it_turns_of_their_own(sqlite_database: Database) -> None:
    """One write on the loop a turn of the loop, the others waiting in the order they came:
    other tasks (here one that yields at each turn) run between them."""
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))
    seen: list[str] = []

    def write(n: int) -> str:
        seen.append("w")
        return _insert(sqlite_database, n)

    async def main() -> list[str]:
        done = False

        async def other() -> None:
            while not done:
                seen.append("t")
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        names = await asyncio.gather(
            *(sqlite_database.in_writer(write, n, on_loop=True) for n in range(8))
        )
        done = True
        await ticker
        return list(names)

    names = asyncio.run(main())
    assert set(names) == {threading.current_thread().name}  # all on the loop
    writes = "".join(seen).strip("t")
    assert writes.count("w") == 8 and "ww" not in writes, writes
    with sqlite_database.read() as session:
        rows = session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all()
    assert rows == [0, *range(8)]


def test_a_write_cancelled_while_it_waits_for_a_turn_is_passed_over(
    sqlite_database: Database,
) -> None:
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))

    async def main() -> None:
        tasks = [
            asyncio.ensure_future(sqlite_database.in_writer(_insert, sqlite_database, n,
                                                            on_loop=True))
            for n in (1, 2, 3)
        ]  # fmt: skip
        await asyncio.sleep(0)  # the first has its turn, the others wait for theirs
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)

    asyncio.run(main())
    with sqlite_database.read() as session:
        rows = session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all()
    assert rows == [0, 1, 3]


def test_a_write_on_the_loop_does_not_wait_for_the_shared_pool(sqlite_database: Database) -> None:
    """Every connection of the pool the threads share held by threads: the write on the loop
    takes its connection from the loop's own pool and goes ahead, on the loop."""
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))
    pool = sqlite_database.engine.pool
    held = []
    while pool.checkedin() > 0 or pool.overflow() < pool._max_overflow:  # type: ignore[attr-defined]
        held.append(sqlite_database.engine.raw_connection())
    try:
        started = time.monotonic()
        name = asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 1, on_loop=True))
        took = time.monotonic() - started
    finally:
        for connection in held:
            connection.close()
    assert name == threading.current_thread().name and took < 5  # the pool's timeout: 30 s
    with sqlite_database.read() as session:
        assert session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all() == [0, 1]


def test_writes_on_two_loops_at_once_each_have_their_turns(sqlite_database: Database) -> None:
    """Each event loop has its turns of its own (tests run several loops on one Database)."""
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))
    done: list[int] = []

    def loop_of_writes(first: int) -> None:
        async def main() -> None:
            await asyncio.gather(
                *(sqlite_database.in_writer(_insert, sqlite_database, first + n, on_loop=True)
                  for n in range(20))
            )  # fmt: skip

        asyncio.run(asyncio.wait_for(main(), 20))
        done.append(first)

    threads = [threading.Thread(target=loop_of_writes, args=(k * 100,)) for k in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(done) == [100, 200]
    with sqlite_database.read() as session:
        rows = session.scalars(text("SELECT n FROM writer_probe")).all()
    assert sorted(rows) == [0, *range(100, 120), *range(200, 220)]


def test_a_second_begin_of_a_work_on_the_loop_does_not_wait_either(
    sqlite_database: Database,
) -> None:
    """A work on the loop that writes twice (a refusal stored for its Idempotency-Key): if
    another process took SQLite's lock in between, its second BEGIN is "database is locked"
    at once, a 503, rather than a wait on the loop; the first write stays, nothing is run
    again."""
    asyncio.run(sqlite_database.in_writer(_insert, sqlite_database, 0, on_loop=True))
    calls: list[int] = []
    holders: list[threading.Thread] = []

    def twice() -> None:
        calls.append(1)
        _insert(sqlite_database, 1)
        holders.append(_holding_the_lock(sqlite_database, 1.0))
        _insert(sqlite_database, 2)

    started = time.monotonic()
    with pytest.raises(exc.OperationalError) as raised:
        asyncio.run(sqlite_database.in_writer(twice, on_loop=True))
    took = time.monotonic() - started
    holders[0].join()
    assert is_unavailable(raised.value) and calls == [1] and took < 0.9
    with sqlite_database.read() as session:
        assert session.scalars(text("SELECT n FROM writer_probe ORDER BY rowid")).all() == [0, 1]


@pytest.mark.parametrize(
    ("code", "busy"), [(5, True), (261, True), (517, True), (6, False), (2067, False)]
)
def test_busy_is_sqlites_busy_with_its_extended_codes(code: int, busy: bool) -> None:
    """SQLITE_BUSY, SQLITE_BUSY_RECOVERY, SQLITE_BUSY_SNAPSHOT; not SQLITE_LOCKED, nor a
    UNIQUE violation (the module gives the extended code)."""
    error = sqlite3.OperationalError("x")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    assert db_module._is_busy(exc.OperationalError("BEGIN", {}, error)) is busy


def test_a_closed_loop_is_not_kept(sqlite_database: Database) -> None:
    """The turns of a loop are kept by the loop, weakly: a loop that ended goes."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await sqlite_database.in_writer(_insert, sqlite_database, 1, on_loop=True)

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None
    assert len(sqlite_database._loop_turns) == 0
