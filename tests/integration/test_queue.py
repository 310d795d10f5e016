"""The job queue on a real database: ordering per connection, leases, retries, backoff."""

from __future__ import annotations

import random
from datetime import timedelta

from iod.infra.clock import FrozenClock
from iod.infra.db import Database
from iod.jobs import queue
from iod.jobs.queue import JobState
from iod.models import Job


def _enqueue(db: Database, clock: FrozenClock, connection_id: str, delay: float = 0) -> int:
    with db.write() as session:
        job = queue.enqueue(
            session,
            "provision",
            connection_id=connection_id,
            lock_key=f"connection:{connection_id}",
            run_at=clock.now() + timedelta(seconds=delay),
            now=clock.now(),
            max_attempts=3,
        )
        session.flush()
        return job.id


def _claim(db: Database, clock: FrozenClock, worker: str = "w1") -> int | None:
    with db.write() as session:
        job = queue.claim(session, clock.now(), 30, worker)
        return job.id if job else None


def test_jobs_of_one_connection_run_one_at_a_time_in_order(database: Database) -> None:
    clock = FrozenClock()
    first = _enqueue(database, clock, "con_a")
    second = _enqueue(database, clock, "con_a")
    other = _enqueue(database, clock, "con_b")
    assert _claim(database, clock) == first
    # con_a's second job waits for the first; con_b's runs meanwhile.
    assert _claim(database, clock, "w2") == other
    assert _claim(database, clock, "w3") is None
    with database.write() as session:
        assert queue.finish(session, first, "w1", clock.now())
    assert _claim(database, clock, "w2") == second


def test_future_jobs_wait_and_do_not_block_earlier_ones(database: Database) -> None:
    clock = FrozenClock()
    later = _enqueue(database, clock, "con_a", delay=3600)
    now = _enqueue(database, clock, "con_a")
    assert _claim(database, clock) == now
    with database.write() as session:
        queue.finish(session, now, "w1", clock.now())
    assert _claim(database, clock) is None
    clock.advance(timedelta(hours=1))
    assert _claim(database, clock) == later


def test_an_expired_lease_is_taken_again(database: Database) -> None:
    clock = FrozenClock()
    job_id = _enqueue(database, clock, "con_a")
    assert _claim(database, clock, "dead-worker") == job_id
    assert _claim(database, clock, "w2") is None
    clock.advance(timedelta(seconds=31))
    assert _claim(database, clock, "w2") == job_id
    with database.write() as session:
        assert not queue.finish(session, job_id, "dead-worker", clock.now())
        assert queue.finish(session, job_id, "w2", clock.now())
    with database.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempts == 2 and job.state == JobState.DONE


def test_a_retry_keeps_its_place_before_later_jobs(database: Database) -> None:
    clock = FrozenClock()
    first = _enqueue(database, clock, "con_a")
    _enqueue(database, clock, "con_a")
    assert _claim(database, clock) == first
    with database.write() as session:
        job = session.get(Job, first)
        assert job is not None
        final = queue.retry_or_fail(
            session, job, "boom", clock.now(), base=10, cap=10, rng=random.Random(1)
        )
        assert not final
    # The retry is not due yet, and the second job still may not overtake it.
    assert _claim(database, clock) is None
    clock.advance(timedelta(seconds=11))
    assert _claim(database, clock) == first


def test_the_last_attempt_fails_for_good(database: Database) -> None:
    clock = FrozenClock()
    job_id = _enqueue(database, clock, "con_a")
    for attempt in range(3):
        assert _claim(database, clock) == job_id
        with database.write() as session:
            job = session.get(Job, job_id)
            assert job is not None
            final = queue.retry_or_fail(
                session, job, "boom", clock.now(), base=0, cap=0, rng=random.Random(1)
            )
        assert final is (attempt == 2)
    with database.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED and job.last_error == "boom"


def test_anything_due_says_whether_a_claim_could_find_a_job(database: Database) -> None:
    """The worker's read before a claim: a queued job due, or a lease run out; not a job
    queued for later, nor one running under its lease, nor a finished one."""
    clock = FrozenClock()
    assert not queue.anything_due(database, clock.now())  # an empty queue
    later = _enqueue(database, clock, "con_a", delay=60)
    assert not queue.anything_due(database, clock.now())
    clock.advance(timedelta(seconds=60))
    assert queue.anything_due(database, clock.now())  # exactly due
    assert _claim(database, clock) == later
    assert not queue.anything_due(database, clock.now())  # running, its lease holds
    clock.advance(timedelta(seconds=29))
    assert not queue.anything_due(database, clock.now())
    clock.advance(timedelta(seconds=1))
    assert queue.anything_due(database, clock.now())  # the 30 s lease ran out
    assert _claim(database, clock, "w2") == later
    with database.write() as session:
        assert queue.finish(session, later, "w2", clock.now())
    assert not queue.anything_due(database, clock.now() + timedelta(days=1))


def test_anything_due_reads_the_workers_queues_only(database: Database) -> None:
    """A worker of some queues is not woken by another queue's due job."""
    clock = FrozenClock()
    with database.write() as session:
        queue.enqueue(session, "test.any", run_at=clock.now(), now=clock.now(),
                      max_attempts=1, queue="webhooks")  # fmt: skip
    assert queue.anything_due(database, clock.now())
    assert queue.anything_due(database, clock.now(), ["webhooks"])
    assert queue.anything_due(database, clock.now(), ["webhooks", "default"])
    assert not queue.anything_due(database, clock.now(), ["default"])
