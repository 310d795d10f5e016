"""A feature adds a job of its own (registry, args, lock key, queue, final-failure hook)
without touching `jobs/` or the app factory. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.app import Services
from iod.jobs import queue, registry
from iod.jobs.registry import JobRef, Task, TaskContext
from iod.models import Job

# --- a test feature: greetings, in the shape a feature's tasks.py has -----------------

ACTED: list[tuple[str, str]] = []
RECORDED: list[str] = []
ABANDONED: list[tuple[int, str]] = []


def _prepare(session: Session, job: JobRef, ctx: TaskContext) -> str | None:
    return None if job.args.get("skip") else str(job.args["name"])


def _act(ctx: TaskContext, name: str, operation_id: str) -> None:
    if name == "refused":
        raise RuntimeError("the outside world said no")
    ACTED.append((name, operation_id))


def _record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    RECORDED.append(str(job.args["name"]))


def _abandon(session: Session, job: JobRef, ctx: TaskContext, reason: str) -> None:
    ABANDONED.append((job.attempts, reason))


@pytest.fixture
def greetings() -> Iterator[None]:
    registry.register(Task("test.greet", _prepare, _act, _record, _abandon, queue="greetings"))
    ACTED.clear()
    RECORDED.clear()
    ABANDONED.clear()
    yield
    registry.unregister("test.greet")


def _enqueue(services: Services, name: str, *, key: str | None = None, **extra: Any) -> int:
    now = services.clock.now()
    with services.db.write() as session:
        job = queue.enqueue(
            session, "test.greet", run_at=now, now=now, max_attempts=2,
            args={"name": name, **extra}, lock_key=key, queue="greetings",
        )  # fmt: skip
        session.flush()
        return job.id


def _states(services: Services) -> dict[int, tuple[str, int]]:
    with services.db.read() as session:
        return {j.id: (j.state, j.attempts) for j in session.scalars(select(Job))}


@pytest.mark.usefixtures("greetings")
def test_a_new_task_runs_with_its_arguments(services: Services) -> None:
    woken = services.wakeup
    woken.clear()
    first = _enqueue(services, "ada")
    assert woken.is_set(), "a job due now wakes the in-process worker at the commit"
    skipped = _enqueue(services, "bob", skip=True)
    assert services.worker().run_until_idle() == 2
    assert [("ada", f"job-{first}")] == ACTED, "the job id is the operation id"
    assert RECORDED == ["ada"]
    assert _states(services) == {first: ("done", 1), skipped: ("done", 1)}


@pytest.mark.usefixtures("greetings")
def test_the_final_failure_hook_runs_once_after_the_last_attempt(services: Services) -> None:
    job = _enqueue(services, "refused")
    worker = services.worker()
    worker.run_once()
    assert _states(services)[job] == ("queued", 1) and ABANDONED == []
    services.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    worker.run_once()
    assert _states(services)[job] == ("failed", 2)
    assert ABANDONED == [(2, "RuntimeError: the outside world said no")]


@pytest.mark.usefixtures("greetings")
def test_jobs_of_one_lock_key_run_in_order_one_at_a_time(services: Services) -> None:
    a1 = _enqueue(services, "a1", key="greeting:a")
    a2 = _enqueue(services, "a2", key="greeting:a")
    b1 = _enqueue(services, "b1", key="greeting:b")
    free = _enqueue(services, "free")
    now = services.clock.now()
    with services.db.write() as session:
        claimed = [j.id for j in queue.claim_batch(session, now, 30, "w1", 10)]
    assert sorted(claimed) == sorted([a1, b1, free]), "a2 waits behind a1"
    with services.db.write() as session:
        assert queue.claim_batch(session, now, 30, "w2", 10) == []
        queue.finish(session, a1, "w1", now)
    with services.db.write() as session:
        assert [j.id for j in queue.claim_batch(session, now, 30, "w2", 10)] == [a2]


@pytest.mark.usefixtures("greetings")
def test_a_worker_takes_only_its_queues(services: Services) -> None:
    job = _enqueue(services, "ada")
    other = services.worker()
    other.queues = frozenset({"default"})
    assert other.run_until_idle() == 0
    assert _states(services)[job] == ("queued", 0)
    services.settings.worker_queues = "other, greetings"
    mine = services.worker()
    assert mine.queues == {"other", "greetings"}
    assert mine.run_until_idle() == 1


def test_an_unknown_task_fails_loudly(services: Services) -> None:
    now = services.clock.now()
    with services.db.write() as session:
        job = queue.enqueue(session, "test.nobody", run_at=now, now=now, max_attempts=5)
        session.flush()
        job_id = job.id
    services.worker().run_until_idle()
    with services.db.read() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.state == "failed"
        assert "unknown job kind" in (row.last_error or "")


def test_a_job_is_queued_on_its_tasks_queue_by_default(services: Services) -> None:
    registry.register(Task("test.queued", _prepare, queue="reports"))
    try:
        now = services.clock.now()
        with services.db.write() as session:
            job = queue.enqueue(session, "test.queued", run_at=now, now=now, max_attempts=1)
            unknown = queue.enqueue(session, "test.unknown", run_at=now, now=now, max_attempts=1)
            session.flush()
            assert (job.queue, unknown.queue) == ("reports", "default")
    finally:
        registry.unregister("test.queued")


def test_a_database_only_task_is_never_handed_back_once_its_work_committed(
    services: Services,
) -> None:
    """Its handler ran in the claim's transaction: a worker asked to stop finishes it
    instead of releasing it to run a second time."""
    ran: list[int] = []

    @registry.task("test.once")
    def once(session: Session, job: JobRef, ctx: TaskContext) -> None:
        ran.append(job.id)

    try:
        now = services.clock.now()
        with services.db.write() as session:
            job = queue.enqueue(session, "test.once", run_at=now, now=now, max_attempts=3)
            session.flush()
            job_id = job.id
        worker = services.worker()
        worker.stopping.set()  # as if SIGTERM arrived while the batch was prepared
        worker.run_once()
        worker.stopping.clear()
        worker.run_until_idle()
        assert ran == [job_id]
        assert _states(services)[job_id] == ("done", 1)
    finally:
        registry.unregister("test.once")


def test_a_failing_scheduler_does_not_stop_the_jobs(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    worker = services.worker()
    worker.periodic = True

    def broken() -> None:
        raise ValueError("a periodic task's name is too long for its column")

    monkeypatch.setattr(worker.scheduler, "run_if_due", broken)
    ran: list[int] = []

    @registry.task("test.still_runs")
    def still(session: Session, job: JobRef, ctx: TaskContext) -> None:
        ran.append(job.id)
        stop.set()

    stop = threading.Event()
    try:
        now = services.clock.now()
        with services.db.write() as session:
            queue.enqueue(session, "test.still_runs", run_at=now, now=now, max_attempts=1)
        thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert len(ran) == 1
    finally:
        stop.set()
        registry.unregister("test.still_runs")
