"""`Database.in_writer` (issue 14): the fast writes leave the event loop for one writer thread
per process on SQLite, in the order they came, and for the threadpool on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc, text

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


def test_the_fast_writes_run_on_the_writer_thread(
    api: TestClient, headers: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the served app: the create and the PUT's transactions run on the writer thread
    on SQLite and in the threadpool on PostgreSQL."""
    threads: list[str] = []
    real = idempotency.run_without_key

    def spied(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(idempotency, "run_without_key", spied)
    base = "/internet-on-demand/connections"
    made = api.post(base, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert made.status_code == 201, made.text
    changed = api.put(
        f"{base}/{made.json()['id']}/bandwidth", json={"bandwidth": "200 Mbps"}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    assert len(threads) == 2
    on_writer = [name.startswith("iod-sqlite-writer") for name in threads]
    assert on_writer == [services.db.is_sqlite] * 2
