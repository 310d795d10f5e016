"""The task registry: a task name -> what the worker does for a job of that name.

Features declare their tasks in their own `tasks.py` (`register(...)`, `@task`, `@periodic`),
imported by `iod.features.load()`; the worker only looks names up here, so adding a job or a
periodic task touches the feature's package alone.

A task has up to four steps, so no transaction stays open while something outside the
database works (the network):
- `prepare(session, job, ctx)` in the claim's write transaction: returns what `act` needs,
  or None when nothing is left to do (the job is then done);
- `act(ctx, prepared, operation_id)` with no transaction open; the job id is the operation
  id, so a rerun after a crash is the same operation;
- `record(session, job, ctx)` in the write transaction that finishes the job;
- `abandon(session, job, ctx, reason)`, the final-failure hook, when the last attempt failed.
A task whose work is all in the database is a single `prepare` (`task` below); one that
runs transactions of its own (the schedule planner's, several at once) does them in `act`,
with `ctx.db`, after a `prepare` that returns what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from croniter import croniter
from sqlalchemy.orm import Session

from iod.infra.clock import Clock

if TYPE_CHECKING:
    from iod.infra.config import Settings
    from iod.infra.db import Database
    from iod.network.base import NetworkDriver

P = TypeVar("P")


class JobGone(Exception):
    """The row a job points at no longer exists: fail loudly, never guess."""


class Deferred(Exception):
    """Raised by `act` when what it started outside is not finished yet (an edge agent has
    not acknowledged the operation): the worker puts the job back to run again after
    `seconds` without counting an attempt, rather than waiting in its thread. The next run
    repeats `prepare` and `act` with the same operation id, which must notice the outcome."""

    def __init__(self, seconds: float, reason: str = "waiting") -> None:
        super().__init__(reason)
        self.seconds = seconds


@dataclass(frozen=True)
class JobRef:
    """A claimed job, as its task sees it (the row stays with the queue)."""

    id: int
    kind: str
    connection_id: str | None
    change_id: str | None
    attempts: int
    max_attempts: int
    args: dict[str, Any] = field(default_factory=dict)
    lock_key: str | None = None


@dataclass(frozen=True)
class TaskContext:
    """What a task may use besides its session: the clock, the settings, the driver, and
    the worker's database (for a transaction of the task's own outside the worker's)."""

    clock: Clock
    settings: Settings
    driver: NetworkDriver
    db: Database | None = None


def _no_preload(session: Session, jobs: list[JobRef], preparing: bool) -> list[object]:
    return []


def _nothing(session: Session, job: JobRef, ctx: TaskContext) -> None:
    return None


@dataclass(frozen=True)
class Task(Generic[P]):
    name: str
    prepare: Callable[[Session, JobRef, TaskContext], P | None]
    act: Callable[[TaskContext, P, str], None] | None = None
    record: Callable[[Session, JobRef, TaskContext], None] = _nothing
    abandon: Callable[[Session, JobRef, TaskContext, str], None] | None = None
    # Loads (and locks, as the task needs) the rows of a batch of its jobs in one query;
    # the worker keeps the result alive while it works on them.
    preload: Callable[[Session, list[JobRef], bool], list[object]] = _no_preload
    queue: str = "default"


TASKS: dict[str, Task[Any]] = {}


def register(task: Task[Any]) -> Task[Any]:
    """Adds a task; registering the same name twice is a mistake unless it is the same."""
    known = TASKS.get(task.name)
    if known is not None and known != task:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get(name: str) -> Task[Any] | None:
    return TASKS.get(name)


# Returns None (its work is done), or with `act` what `act` needs.
Handler = Callable[[Session, JobRef, TaskContext], object]
Act = Callable[[TaskContext, Any, str], None]


def task(
    name: str,
    *,
    queue: str = "default",
    on_failure: Callable[[Session, JobRef, TaskContext, str], None] | None = None,
    act: Act | None = None,
) -> Callable[[Handler], Handler]:
    """Registers a task whose work is all in the database: `handler(session, job, ctx)`
    runs in the claim's transaction, and once that commits the job is finished (never handed
    back). A crash between that commit and the job's `finish` runs it again: handlers are
    at least once and must be idempotent (a periodic one by `job.args["period"]`).

    `act`: run after that commit with what the handler returned (unless None), with no
    transaction open, before the job is finished (its failure is retried as usual)."""

    def decorate(handler: Handler) -> Handler:
        def prepare(session: Session, job: JobRef, ctx: TaskContext) -> object:
            return handler(session, job, ctx)

        register(Task(name, prepare, act=act, abandon=on_failure, queue=queue))
        return handler

    return decorate


# --- periodic tasks ----------------------------------------------------------------------

_EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_every(text: str) -> timedelta:
    """`"30s"`, `"5m"`, `"1h"`, `"1d"`."""
    match = _EVERY.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"every={text!r}: expected a positive number and s, m, h or d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Schedule:
    """When a periodic task is due: every fixed interval (periods aligned on the Unix epoch,
    so every process computes the same ones) or a cron expression (in UTC)."""

    every: timedelta | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a schedule has either every= or cron=")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"cron={self.cron!r} is not a valid cron expression")

    def latest(self, now: datetime) -> datetime:
        """The start of the period `now` is in: the latest tick at or before `now`."""
        if self.every is not None:
            step = self.every.total_seconds()
            ticks = (now - UTC_EPOCH).total_seconds() // step
            return UTC_EPOCH + timedelta(seconds=ticks * step)
        assert self.cron is not None
        it = croniter(self.cron, now + timedelta(microseconds=1))
        return it.get_prev(datetime)

    def after(self, tick: datetime) -> datetime:
        """The next tick after `tick`."""
        if self.every is not None:
            return tick + self.every
        assert self.cron is not None
        return croniter(self.cron, tick).get_next(datetime)

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron}"
        assert self.every is not None
        seconds = int(self.every.total_seconds())
        for unit in ("d", "h", "m"):
            if seconds % _UNITS[unit] == 0:
                return f"every {seconds // _UNITS[unit]}{unit}"
        return f"every {seconds}s"


@dataclass(frozen=True)
class Periodic:
    name: str  # also the name of the task its jobs run
    schedule: Schedule
    max_catch_up: int = 1000  # missed periods enqueued after downtime, at most


PERIODIC: dict[str, Periodic] = {}


def periodic(
    name: str,
    *,
    every: str | timedelta | None = None,
    cron: str | None = None,
    queue: str = "default",
    max_catch_up: int = 1000,
    act: Act | None = None,
) -> Callable[[Handler], Handler]:
    """Registers `handler` as a task run once per period across every process: each period
    is a row of `periodic_runs` (the first process to insert it enqueues the job), missed
    periods are each run once, in order, after downtime. The job's args carry the
    period's start (`args["period"]`, ISO 8601)."""
    interval = parse_every(every) if isinstance(every, str) else every
    schedule = Schedule(interval, cron)

    def decorate(handler: Handler) -> Handler:
        task(name, queue=queue, act=act)(handler)
        known = PERIODIC.get(name)
        entry = Periodic(name, schedule, max_catch_up)
        if known is not None and known != entry:
            raise ValueError(f"periodic task {name!r} is registered twice")
        PERIODIC[name] = entry
        return handler

    return decorate


def unregister(name: str) -> None:
    """Forgets a task (and its schedule): for tests that declare their own."""
    TASKS.pop(name, None)
    PERIODIC.pop(name, None)
