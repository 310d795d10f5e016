"""The worker: claims due jobs, runs their task against the network driver, retries failures.

It runs inside `iod serve` (a thread) or alone as `iod worker`; on PostgreSQL any number of
them share the queue.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from dataclasses import dataclass

import structlog

from iod.clock import Clock
from iod.connections.tasks import TASKS, JobGone, JobRef, Task
from iod.db import Database
from iod.jobs import queue
from iod.models import Job
from iod.network.base import NetworkDriver

log = structlog.get_logger("iod.worker")


@dataclass(frozen=True)
class WorkerPolicy:
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    backoff_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0


class Worker:
    def __init__(
        self,
        db: Database,
        driver: NetworkDriver,
        clock: Clock,
        policy: WorkerPolicy,
        *,
        worker_id: str | None = None,
        wakeup: threading.Event | None = None,
    ) -> None:
        self.db = db
        self.driver = driver
        self.clock = clock
        self.policy = policy
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.wakeup = wakeup or threading.Event()
        self._rng = random.Random()  # noqa: S311 - backoff jitter

    def run_once(self) -> bool:
        """Runs at most one due job; returns whether there was one."""
        with self.db.write() as session:
            job = queue.claim(session, self.clock.now(), self.policy.lease_seconds, self.worker_id)
            if job is None:
                return False
            ref = JobRef(
                job.id, job.kind, job.connection_id, job.change_id, job.attempts, job.max_attempts
            )
        self._execute(ref)
        return True

    def run_until_idle(self, limit: int = 1000) -> int:
        """Runs jobs until none is due; for tests and one-shot use."""
        count = 0
        while count < limit and self.run_once():
            count += 1
        return count

    def _execute(self, ref: JobRef) -> None:
        bound = log.bind(job_id=ref.id, kind=ref.kind, connection_id=ref.connection_id)
        task = TASKS.get(ref.kind)
        try:
            if task is None:
                raise JobGone(f"unknown job kind {ref.kind!r}")
            with self.db.write() as session:
                spec = task.prepare(session, ref)
            if spec is not None:
                # The job id names the operation: a rerun after a crash is the same operation.
                task.act(self.driver, spec, f"job-{ref.id}")
            with self.db.write() as session:
                if spec is not None:
                    task.record(session, ref, self.clock)
                if not queue.finish(session, ref.id, self.worker_id, self.clock.now()):
                    # The lease ran out and another worker took the job: let it record.
                    session.rollback()
                    bound.warning("job.lease_lost")
                    return
            bound.info("job.done", attempts=ref.attempts)
        except Exception as exc:  # any failure is retried or recorded, never lost
            self._failed(ref, task, exc, bound)

    def _failed(
        self, ref: JobRef, task: Task | None, exc: Exception, bound: structlog.BoundLogger
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        with self.db.write() as session:
            job = session.get(Job, ref.id)
            if job is None or job.locked_by != self.worker_id:
                return
            if isinstance(exc, JobGone):
                job.max_attempts = job.attempts
            final = queue.retry_or_fail(
                session,
                job,
                reason,
                self.clock.now(),
                base=self.policy.backoff_seconds,
                cap=self.policy.backoff_cap_seconds,
                rng=self._rng,
            )
            if final and task is not None:
                task.abandon(session, ref, self.clock, reason)
        if final:
            bound.error("job.failed", attempts=ref.attempts, error=reason)
        else:
            bound.warning("job.retry", attempts=ref.attempts, error=reason)

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker.started", worker_id=self.worker_id, driver=self.driver.name)
        while not stop.is_set():
            try:
                if self.run_once():
                    continue
                timeout = self._idle_timeout()
            except Exception:  # the database may be briefly unreachable: keep going
                log.exception("worker.loop_error")
                timeout = self.policy.poll_seconds
            self.wakeup.wait(timeout)
            self.wakeup.clear()
        log.info("worker.stopped", worker_id=self.worker_id)

    def _idle_timeout(self) -> float:
        with self.db.read() as session:
            due = queue.next_due(session)
        if due is None:
            return self.policy.poll_seconds
        seconds = (due - self.clock.now()).total_seconds()
        return min(max(seconds, 0.01), self.policy.poll_seconds)
