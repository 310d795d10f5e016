"""The worker: claims due jobs, runs their registered task, retries failures, and enqueues
the periods of periodic tasks as they come due.

It runs inside `iod serve` (a thread) or alone as `iod worker`; on PostgreSQL any number of
them share the queue, and a LISTEN on `iod_jobs` wakes every idle one when a job is due now.
It knows tasks only by name (`iod.jobs.registry`): features register theirs.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.infra.clock import Clock
from iod.infra.config import Settings
from iod.infra.db import Database, is_unavailable
from iod.jobs import queue
from iod.jobs.periodic import Scheduler
from iod.jobs.registry import PERIODIC, TASKS, Deferred, JobGone, JobRef, Task, TaskContext
from iod.models import Connection, Job
from iod.network.base import NetworkDriver

Prepared = tuple[JobRef, Task[Any] | None, object | None, Exception | None]
Acted = tuple[JobRef, Task[Any], object | None]

log = structlog.get_logger("iod.worker")


class _LeaseLost(Exception):
    """This worker's lease on a job ran out before it could record the result."""


@dataclass(frozen=True)
class WorkerPolicy:
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    backoff_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    batch_size: int = 64
    outage_backoff_cap_seconds: float = 5.0
    # After a batch that was not full, wait this long before the next (IOD_WORKER_GATHER_SECONDS).
    gather_seconds: float = 0.0
    # While a batch is carried out, record what is done once this much time has gone by since
    # the batch was claimed or last recorded: a batch of fast operations is recorded once,
    # one of slow operations (a provisioning that takes seconds) job by job, so each result
    # shows as soon as it is done, not when the whole batch is.
    record_every_seconds: float = 1.0


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
        settings: Settings | None = None,
        queues: Collection[str] | None = None,
        periodic: bool = True,
    ) -> None:
        self.db = db
        self.driver = driver
        self.clock = clock
        self.policy = policy
        self.settings = settings or Settings()
        self.context = TaskContext(clock, self.settings, driver, db)
        self.queues = frozenset(queues) if queues is not None else None
        self.scheduler = Scheduler(db, clock, self.settings.job_max_attempts)
        self.periodic = periodic
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.wakeup = wakeup or threading.Event()
        self.stopping = threading.Event()  # set: finish the job in hand, release the rest
        self._rng = random.Random()  # noqa: S311 - backoff jitter
        # Jobs the network carried out whose results could not be recorded because the
        # database went away: recorded first once it is back (before their leases run out,
        # nobody else takes them; after, another worker reruns them and the driver, which
        # knows the operation id, does nothing twice).
        self._held: list[Acted] = []

    def run_once(self) -> int:
        """Runs a batch of due jobs; returns how many there were (0: none was due).

        Three steps, so no transaction stays open while the network works:
        1. one transaction claims the batch and runs each task's `prepare` (in a savepoint,
           so one job's failure keeps the others and the claim);
        2. the driver carries out each job's operation, named by the job id;
        3. one transaction records every result and finishes the jobs (again a savepoint
           each). Failures are retried or recorded one by one, afterwards. When carrying
           them out takes longer than `record_every_seconds`, what is done so far is
           recorded before the next job is carried out.
        """
        if self._held:
            held, self._held = self._held, []
            try:
                late = self._record(held)
            except Exception:
                self._held = held
                raise
            for ref, task, error in late:
                self._failed(ref, task, error, self._log(ref))
        if not queue.anything_due(self.db, self.clock.now(), self.queues):
            return 0  # no claim (a write transaction) to find nothing
        try:
            prepared = self._claim_and_prepare(careful=False)
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the careful way would fail the same
            prepared = self._claim_and_prepare(careful=True)
        if not prepared:
            return 0

        failures: list[tuple[JobRef, Task[Any] | None, Exception]] = []
        acted: list[Acted] = []
        released: list[int] = []
        deferred: list[tuple[int, float]] = []
        # Half the lease for the batch: what is not carried out by then (or when asked to
        # stop) goes back to the queue, so a slow network never outlives a lease.
        deadline = time.monotonic() + self.policy.lease_seconds / 2
        recorded_at = time.monotonic()
        chunks = True  # recording as it goes; after a failed record, all at the end
        for ref, task, spec, failure in prepared:
            if failure is not None or task is None:
                failures.append((ref, task, failure or JobGone("no task")))
                continue
            if (
                chunks
                and acted
                and time.monotonic() - recorded_at >= self.policy.record_every_seconds
            ):
                try:
                    failures += self._record(acted)
                    acted = []
                except Exception as exc:
                    # The batch goes on as without chunks: what was carried out is recorded
                    # (or held, the database being unavailable) with the rest at its end.
                    if not is_unavailable(exc):
                        log.exception("worker.record_failed", jobs=len(acted))
                    chunks = False
                recorded_at = time.monotonic()
            acts = spec is not None and task.act is not None
            # A job whose work is all in `prepare` (a `@task`, a periodic task) has committed
            # its effects with the claim: it is finished, never handed back to run again.
            if acts and (time.monotonic() > deadline or self.stopping.is_set()):
                released.append(ref.id)
                continue
            try:
                if acts and task.act is not None:
                    task.act(self.context, spec, f"job-{ref.id}")
                acted.append((ref, task, spec))
            except Deferred as wait:  # not an attempt: run again later (an edge agent's ack)
                deferred.append((ref.id, wait.seconds))
            except Exception as exc:  # retried or recorded below, never lost
                failures.append((ref, task, exc))

        if acted:
            try:
                failures += self._record(acted)
            except Exception as exc:
                if is_unavailable(exc):
                    self._held = acted
                raise
        if released or deferred:
            with self.db.write() as session:
                if released:
                    queue.release(session, released, self.worker_id)
                if deferred:
                    queue.defer(session, deferred, self.worker_id, self.clock.now())
        for ref, task, error in failures:
            self._failed(ref, task, error, self._log(ref))
        return len(prepared)

    def _claim_and_prepare(self, *, careful: bool) -> list[Prepared]:
        """One transaction: claim a batch, load its rows in a query per kind, prepare each.

        The fast way prepares without savepoints; if anything fails the transaction (claim
        included) is rolled back and the careful way claims again with a savepoint per job,
        so one bad job keeps the claim of the others and its own failure is recorded."""
        prepared: list[Prepared] = []
        with self.db.write() as session:
            jobs = queue.claim_batch(
                session,
                self.clock.now(),
                self.policy.lease_seconds,
                self.worker_id,
                self.policy.batch_size,
                self.queues,
            )
            refs = [
                JobRef(
                    j.id,
                    j.kind,
                    j.connection_id,
                    j.change_id,
                    j.attempts,
                    j.max_attempts,
                    dict(j.args or {}),
                    j.lock_key,
                )
                for j in jobs
            ]
            loaded = self._preload(session, refs, preparing=True)  # noqa: F841 - kept alive
            for ref in refs:
                task = TASKS.get(ref.kind)
                if not careful:
                    if task is None:
                        raise JobGone(f"unknown job kind {ref.kind!r}")
                    prepared.append((ref, task, task.prepare(session, ref, self.context), None))
                    continue
                try:
                    with session.begin_nested():
                        if task is None:
                            raise JobGone(f"unknown job kind {ref.kind!r}")
                        prepared.append((ref, task, task.prepare(session, ref, self.context), None))
                except Exception as exc:  # handled once the claim is committed
                    prepared.append((ref, task, None, exc))
        return prepared

    @staticmethod
    def _preload(session: Session, refs: list[JobRef], *, preparing: bool) -> list[object]:
        """Loads (and locks, as each task needs for `prepare` or for `record`) the batch's
        rows, a query per kind; keep the result while working on them.

        Recording locks the connections of the batch's jobs first, all of them in id order,
        in one statement: each kind's recording locks its own jobs' connections in id order
        (it moves what they commit at their locations), but a batch of several kinds took
        them kind after kind, so out of id order: against a schedule planner's batch or a
        request locking the same connections in id order, a deadlock
        (tests/integration/test_schedules_capacity_stress.py)."""
        if not preparing:
            ids = sorted({ref.connection_id for ref in refs if ref.connection_id})
            if ids:
                session.execute(
                    select(Connection.id)
                    .where(Connection.id.in_(ids))
                    .order_by(Connection.id)
                    .with_for_update()
                ).all()
        by_kind: dict[str, list[JobRef]] = {}
        for ref in refs:
            by_kind.setdefault(ref.kind, []).append(ref)
        rows: list[object] = []
        for kind, group in by_kind.items():
            task = TASKS.get(kind)
            if task is not None:
                rows += task.preload(session, group, preparing)
        return rows

    def _record(self, acted: list[Acted]) -> list[tuple[JobRef, Task[Any] | None, Exception]]:
        """Records the batch in one transaction; if anything in it fails, records job by job
        (a savepoint each) so one bad job cannot hold back the others."""
        try:
            with self.db.write() as session:
                loaded = self._preload(session, [r for r, _, _ in acted], preparing=False)
                for ref, task, spec in acted:
                    if spec is not None:
                        task.record(session, ref, self.context)
                session.flush()
                ids = [ref.id for ref, _, _ in acted]
                if queue.finish_many(session, ids, self.worker_id, self.clock.now()) != set(ids):
                    raise _LeaseLost
            for ref, _task, _spec in acted:
                self._done(ref)
            return []
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the caller holds the results until the database is back
            # Otherwise sorted out one by one below.
        failures: list[tuple[JobRef, Task[Any] | None, Exception]] = []
        with self.db.write() as session:
            loaded = self._preload(session, [r for r, _, _ in acted], preparing=False)  # noqa: F841
            for ref, task, spec in acted:
                try:
                    with session.begin_nested():
                        if spec is not None:
                            task.record(session, ref, self.context)
                        if not queue.finish(session, ref.id, self.worker_id, self.clock.now()):
                            raise _LeaseLost
                    self._done(ref)
                except _LeaseLost:
                    # Another worker took the job after the lease ran out: it records.
                    self._log(ref).warning("job.lease_lost")
                except Exception as exc:
                    if is_unavailable(exc):
                        raise
                    failures.append((ref, task, exc))
        return failures

    def run_until_idle(self, limit: int = 1000) -> int:
        """Runs jobs until none is due; for tests and one-shot use."""
        count = 0
        while count < limit and (ran := self.run_once()):
            count += ran
        return count

    @staticmethod
    def _log(ref: JobRef) -> structlog.BoundLogger:
        return log.bind(job_id=ref.id, kind=ref.kind, lock_key=ref.lock_key)  # type: ignore[no-any-return]

    @classmethod
    def _done(cls, ref: JobRef) -> None:
        """`job.done` at info, except for a periodic task's run (every 10 s for the traffic
        sampler): at debug, so a console is not a scroll of housekeeping. Failures of those
        are logged as any job's."""
        if ref.kind in PERIODIC:
            cls._log(ref).debug("job.done", attempts=ref.attempts)
        else:
            cls._log(ref).info("job.done", attempts=ref.attempts)

    def _failed(
        self, ref: JobRef, task: Task[Any] | None, exc: Exception, bound: structlog.BoundLogger
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
            if final and task is not None and task.abandon is not None:
                task.abandon(session, ref, self.context, reason)
        if final:
            bound.error("job.failed", attempts=ref.attempts, error=reason)
        else:
            bound.warning("job.retry", attempts=ref.attempts, error=reason)

    def run_forever(self, stop: threading.Event) -> None:
        """Works until `stop` is set. While the database is unavailable it pauses: one
        warning, then retries after poll_seconds, doubling up to outage_backoff_cap_seconds,
        and one message when the database is back. Jobs in hand keep their leases."""
        self.stopping = stop
        log.info("worker.started", worker_id=self.worker_id, driver=self.driver.name)
        listener = None
        if not self.db.is_sqlite:
            from iod.jobs.listener import Listener

            listener = Listener(self.db.engine.url, "iod_jobs", self.wakeup, stop)
            listener.start()
        outage_since: float | None = None
        pause = self.policy.poll_seconds
        while not stop.is_set():
            try:
                if self.periodic:
                    self._schedule()
                ran = self.run_once()
                if outage_since is not None:
                    log.warning(
                        "worker.database_back",
                        worker_id=self.worker_id,
                        paused_seconds=round(time.monotonic() - outage_since, 2),
                    )
                    outage_since = None
                if ran:
                    if ran < self.policy.batch_size and self.policy.gather_seconds > 0:
                        # Busy, with jobs arriving one by one: each batch is a claim and a
                        # record transaction, so let the next one gather a few (issue 14).
                        stop.wait(self.policy.gather_seconds)
                    continue
                timeout = self._idle_timeout()
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("worker.loop_error")
                    timeout = self.policy.poll_seconds
                elif outage_since is None:
                    outage_since = time.monotonic()
                    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    log.warning(
                        "worker.database_unavailable",
                        worker_id=self.worker_id,
                        held=len(self._held),
                        error=reason[:200],
                    )
                    timeout = pause = self.policy.poll_seconds
                else:
                    pause = min(pause * 2, self.policy.outage_backoff_cap_seconds)
                    timeout = pause
            self.wakeup.wait(timeout)
            self.wakeup.clear()
        if listener is not None:
            listener.join(timeout=5)
        log.info("worker.stopped", worker_id=self.worker_id, held=len(self._held))

    def _schedule(self) -> None:
        """Enqueues the periodic tasks' due periods. An outage is the loop's to handle; any
        other failure of the scheduler is logged and must not keep the jobs from running."""
        try:
            self.scheduler.run_if_due()
        except Exception as exc:
            if is_unavailable(exc):
                raise
            log.exception("worker.scheduler_error")

    def _idle_timeout(self) -> float:
        with self.db.read() as session:
            due = queue.next_due(session)
        tick = self.scheduler.next_tick if self.periodic else None
        if tick is not None and (due is None or tick < due):
            due = tick
        if due is None:
            return self.policy.poll_seconds
        seconds = (due - self.clock.now()).total_seconds()
        return min(max(seconds, 0.01), self.policy.poll_seconds)
