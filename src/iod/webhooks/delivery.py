"""Delivering events to webhook endpoints: the fan-out in the event's own transaction, and
the task that makes one attempt per job.

- `fan_out` is an events subscriber: in the transaction that writes the events, for each
  (event, enabled endpoint of its customer whose filters match) it adds a delivery row (its
  id is the `webhook-id`, the body is fixed then) and a job on the `webhooks` queue. A
  transaction that rolls back leaves neither.
- The task `webhook_deliver`: `prepare` (claim transaction) reloads the delivery and its
  endpoint and opens the secrets in force now; `act` (no transaction open) signs,
  resolves, checks and POSTs (`sender.py`); `record` stores the attempt and either finishes
  the delivery or enqueues the next attempt on the retry schedule (with jitter, or after
  `Retry-After`), disabling the endpoint on 410 or after failing for
  IOD_WEBHOOK_DISABLE_AFTER_SECONDS (event `webhook_endpoint.disabled`).
A worker killed mid-attempt leaves the job leased; once the lease runs out another worker
takes it and sends the same delivery again, with the same `webhook-id` (at least once). An
attempt not answered when its batch settles is recorded by its sending thread (`_Flight`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from iod import events
from iod.events import WrittenEvent
from iod.events.service import encode_cursor
from iod.infra.clock import rfc3339
from iod.infra.config import Settings
from iod.infra.ids import new_id
from iod.infra.secure import key_encryption_key
from iod.jobs import queue
from iod.jobs.registry import Deferred, JobRef, TaskContext
from iod.models import WebhookDelivery
from iod.webhooks import repository, safety, sender, service, signing

log = structlog.get_logger("iod.webhooks")

TASK = "webhook_deliver"
QUEUE = "webhooks"
JOB_ATTEMPTS = 3  # for failures of the service itself; the receiver's have their schedule
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
_rng = random.Random()  # noqa: S311 - jitter


def body_of(event: WrittenEvent) -> str:
    """The webhook body: Standard Webhooks' `type`, `timestamp` and `data`, where `data` is
    the event exactly as the feed shows it (docs/api.md, "Webhooks")."""
    document: dict[str, Any] = {
        "id": encode_cursor(event.position),
        "type": event.name,
        "occurredAt": rfc3339(event.at),
    }
    connection_id = event.payload.get("connectionId")
    if isinstance(connection_id, str):
        document["connectionId"] = connection_id
    document["data"] = event.payload
    return json.dumps(
        {"type": event.name, "timestamp": rfc3339(event.at), "data": document},
        separators=(",", ":"),
    )


_AHEAD = "iod_webhooks_ahead"


def read_ahead(session: Session, customers: list[str]) -> None:
    """`fan_out`'s read for a transaction of one customer's events (a request's), queued
    before the events are written: it goes with their round trip (`events.subscribe`)."""
    if len(customers) != 1:
        return
    customer = customers[0]

    def keep(rows: list[Any]) -> None:
        session.info[_AHEAD] = (customer, rows)

    repository.enabled_of_customer_later(session, customer, keep)


def fan_out(session: Session, written: list[WrittenEvent]) -> None:
    customers = sorted({e.customer_id for e in written})
    ahead = session.info.pop(_AHEAD, None)
    rows: Sequence[Any]
    if ahead is not None and [ahead[0]] == customers:  # read with the events (read_ahead)
        rows = ahead[1]
    elif len(customers) == 1:  # a request's transaction: one read compiled once (issue 14)
        rows = repository.enabled_of_customer(session, customers[0])
    else:
        rows = (
            session.connection()
            .execute(repository.ENABLED_OF_CUSTOMERS, {"customers": customers})
            .all()
        )
    if not rows:
        return
    by_customer: dict[str, list[tuple[str, list[str]]]] = {}
    for endpoint_id, customer_id, event_types in rows:
        by_customer.setdefault(customer_id, []).append((endpoint_id, list(event_types or [])))
    for event in written:
        targets = [
            endpoint_id
            for endpoint_id, types in sorted(by_customer.get(event.customer_id, []))
            if service.matches(types, event.name)
        ]
        if not targets:
            continue
        body = body_of(event)
        for endpoint_id in targets:
            delivery = WebhookDelivery(
                id=new_id("msg"),
                endpoint_id=endpoint_id,
                customer_id=event.customer_id,
                event_position=event.position,
                event_type=event.name,
                body=body,
                status=PENDING,
                attempts=0,
                generation=0,
                next_attempt_at=event.at,
                created_at=event.at,
                updated_at=event.at,
            )
            session.add(delivery)
            _enqueue(session, delivery.id, delivery.generation, event.at, event.at)


def _enqueue(
    session: Session, delivery_id: str, generation: int, run_at: datetime, now: datetime
) -> None:
    queue.enqueue(
        session,
        TASK,
        run_at=run_at,
        now=now,
        max_attempts=JOB_ATTEMPTS,
        args={"deliveryId": delivery_id, "generation": generation},
        queue=QUEUE,
    )


def schedule_now(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """One more attempt now (a manual retry): older jobs of the delivery do nothing."""
    delivery.generation += 1
    delivery.status = PENDING
    delivery.next_attempt_at = now
    delivery.updated_at = now
    session.flush()
    _enqueue(session, delivery.id, delivery.generation, now, now)


# --- the task --------------------------------------------------------------------------
#
# A worker runs a batch of jobs (IOD_WORKER_BATCH_SIZE) in three steps; this task does each
# step for the whole batch with a few Core statements rather than ORM objects per job:
# - `preload` (claim transaction): one query reads every delivery of the batch with its
#   endpoint; `prepare` then signs from those rows (the endpoint's keys opened once);
# - `act`: the first job's act sends the whole batch at once and waits for it to settle
#   (below); an attempt still unanswered then is detached and recorded on its own;
# - `preload` (record transaction): the batch's endpoints (FOR KEY SHARE) and deliveries
#   (FOR UPDATE) locked and read in two queries; the first `record` writes the whole batch:
#   one INSERT of the attempts, one UPDATE of the deliveries (PostgreSQL: FROM unnest of
#   arrays; SQLite: executemany), the rare endpoint changes and next attempts. The worker
#   finishes the jobs in the same transaction, so an attempt is recorded exactly when its job
#   is done. When the worker records job by job
#   (a savepoint each, after the batch's transaction failed) each `record` reads its own
#   rows again and writes its own job only.


class OutcomeLost(Exception):
    """`record` found no outcome of the job's `act` in this process."""


@dataclass(frozen=True)
class Attempt:
    job_id: int
    delivery_id: str
    endpoint_id: str
    generation: int
    url: str
    body: bytes
    keys: tuple[bytes, ...]  # signed when sent: the timestamp is the attempt's own


@dataclass
class _Endpoint:
    """An endpoint as the record transaction locked it, changed as the batch goes."""

    id: str
    customer_id: str
    url: str
    enabled: bool
    failing_since: datetime | None


@dataclass
class _Delivery:
    """A delivery as the record transaction locked it, changed as the batch goes."""

    id: str
    endpoint_id: str
    status: str
    generation: int
    attempts: int
    last_error: str | None


@dataclass
class _Stash:
    """What `preload` read for the transaction it ran in (`tag`), for `prepare`/`record`."""

    tag: int
    to_send: dict[str, Any] = field(default_factory=dict)  # delivery id -> row
    jobs: list[JobRef] = field(default_factory=list)
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    deliveries: dict[str, _Delivery] = field(default_factory=dict)
    recorded: bool = False


_kek_cache: dict[int, tuple[Settings, bytes | None]] = {}


def _kek(settings: Settings) -> bytes | None:
    cached = _kek_cache.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _kek_cache[id(settings)] = (settings, key_encryption_key(settings))
    return cached[1]


def _tag(session: Session) -> int:
    return id(session.get_transaction() or session)


def _stash(session: Session) -> _Stash | None:
    stash: _Stash | None = getattr(_local, "stash", None)
    return stash if stash is not None and stash.tag == _tag(session) else None


def _delivery_id(job: JobRef) -> str:
    return str(job.args.get("deliveryId", ""))


def preload(session: Session, jobs: list[JobRef], preparing: bool) -> list[object]:
    ids = sorted({_delivery_id(job) for job in jobs})
    conn = session.connection()  # begins the transaction the tag names
    stash = _local.stash = _Stash(_tag(session), jobs=list(jobs))
    if not ids:
        return []
    if preparing:
        stash.to_send = {
            row.id: row for row in conn.execute(repository.BATCH_TO_SEND, {"ids": ids})
        }
    else:
        stash.endpoints, stash.deliveries = _lock(session, ids)
    return []


def _lock(session: Session, ids: list[str]) -> tuple[dict[str, _Endpoint], dict[str, _Delivery]]:
    """The deliveries `ids` and their endpoints, locked to record (the endpoints first: the
    order a deletion takes them in)."""
    conn = session.connection()
    endpoints = {
        row.id: _Endpoint(row.id, row.customer_id, row.url, row.enabled, row.failing_since)
        for row in conn.execute(repository.ENDPOINTS_TO_RECORD, {"ids": ids})
    }
    deliveries = {
        row.id: _Delivery(
            row.id, row.endpoint_id, row.status, row.generation, row.attempts, row.last_error
        )
        for row in conn.execute(repository.DELIVERIES_TO_RECORD, {"ids": ids})
    }
    return endpoints, deliveries


def _current(session: Session, job: JobRef) -> WebhookDelivery | None:
    delivery = session.get(WebhookDelivery, _delivery_id(job))
    if delivery is None or delivery.status != PENDING:
        return None
    if delivery.generation != job.args.get("generation"):
        return None  # superseded by a manual retry
    return delivery


def prepare(session: Session, job: JobRef, ctx: TaskContext) -> Attempt | None:
    delivery_id = _delivery_id(job)
    with _lock_flights:  # a new claim of the job: an outcome of an earlier run is stale,
        flight = _flights.get((job.id, delivery_id))
        if flight is not None and _settled(flight):  # unless its own thread is to record it
            del _flights[(job.id, delivery_id)]
    stash = _stash(session)
    row = stash.to_send.get(delivery_id) if stash is not None else None
    if row is None:  # not preloaded (a direct call): its own query
        found = session.connection().execute(repository.BATCH_TO_SEND, {"ids": [delivery_id]})
        row = found.first()
    if row is None or row.status != PENDING or row.generation != job.args.get("generation"):
        return None  # done, gone, or superseded by a manual retry
    now = ctx.clock.now()
    if row.url is None or not row.enabled:
        session.connection().execute(
            repository.GIVE_UP,
            {"b_id": delivery_id, "b_last_error": "the webhook endpoint is disabled",
             "b_updated_at": now},
        )  # fmt: skip
        return None
    keys = service.signing_keys(row.endpoint_id, row.secret, row.previous_secret,
                                row.previous_secret_until, now, _kek(ctx.settings))  # fmt: skip
    attempt = Attempt(job.id, delivery_id, row.endpoint_id, row.generation, row.url,
                      row.body.encode(), tuple(keys))  # fmt: skip
    _batch_of(session)[job.id] = attempt
    return attempt


@dataclass
class _Flight:
    """One attempt from its sending to its recording. The worker's batch transaction records
    it when it was known by the time the batch settled; otherwise it is `detached`: its job
    is deferred and the sending thread records it itself, the moment the answer comes."""

    attempt: Attempt
    ctx: TaskContext
    outcome: sender.Outcome | None = None
    at: datetime | None = None  # when the outcome was known: the attempt's `at`
    known_since: float = 0.0  # monotonic, to forget it after a lease
    detached: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    recorded: threading.Event = field(default_factory=threading.Event)  # when detached
    record_failed: bool = False  # detached, and its transaction failed: send it again


def _settled(flight: _Flight) -> bool:
    """Nothing more will happen to it in this process (the worker may still record it)."""
    if flight.outcome is None:
        return False
    return not flight.detached or flight.recorded.is_set() or flight.record_failed


# In flight or answered, by (job id, delivery id): job ids alone repeat across databases
# (tests). `record` reads an entry (again, when a batch is recorded job by job), so entries
# go only a lease after their answer: by then an unrecorded job is another worker's to run.
_flights: dict[tuple[int, str], _Flight] = {}
_lock_flights = threading.Lock()


# The worker acts on a batch's jobs one after another; a receiver's answer takes
# milliseconds to seconds, so the first `act` of a batch sends every attempt the batch
# prepared at once (on the sending threads) and waits for them to settle: at most
# SETTLE_SECONDS. What has answered by then is recorded by the worker with the batch (one
# transaction); what has not is detached (`_Flight`) and its job deferred, so a slow receiver
# holds back neither the batch's other deliveries nor the worker's next batches. The
# attempts wait in the preparing thread's `_local.batch`, tagged with the claim's session: a
# new claim forgets what an earlier one left (its jobs were released or failed).
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
SENDING_THREADS = 64
# An endpoint's attempts in flight at once in a process; the next ones wait in its lane,
# so a slow endpoint takes at most this many of the sending threads. A lane holds no more
# than its endpoint's threads can send before a deferred job comes back (`_room`): one more
# attempt is not sent but deferred (ENDPOINT_BUSY_SECONDS), so no attempt waits in a lane
# until another process sends it too, and a stopping process waits for a bounded lane.
PER_ENDPOINT = 16
ENDPOINT_BUSY_SECONDS = 2.0
SETTLE_SECONDS = 1.0
_lanes: dict[str, deque[_Flight]] = {}  # endpoint id -> attempts waiting for a thread
_sending: dict[str, int] = {}  # endpoint id -> its threads sending
_busy: dict[str, int] = {}  # endpoint id -> its attempts sending or waiting in its lane


def _deferral(ctx: TaskContext) -> float:
    """How long a detached attempt's job is deferred: a lease, at least twice the timeout."""
    limit = ctx.settings.webhook_timeout_seconds
    return max(ctx.settings.job_lease_seconds, 2 * limit + 1)


def _room(ctx: TaskContext) -> int:
    """An endpoint's attempts in flight and waiting, at most: what its threads send, each
    attempt taking the timeout at worst, before a deferred job comes back."""
    return PER_ENDPOINT * max(1, int(_deferral(ctx) // ctx.settings.webhook_timeout_seconds) - 1)


def _batch_of(session: Session) -> dict[int, Attempt]:
    tag = id(session.get_transaction() or session)
    if getattr(_local, "tag", None) != tag:
        _local.tag, _local.batch = tag, {}
    batch: dict[int, Attempt] = _local.batch
    return batch


def _sending_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SENDING_THREADS, thread_name_prefix="iod-webhooks")
        return _pool


def _send(ctx: TaskContext, attempt: Attempt) -> sender.Outcome:
    settings = ctx.settings
    try:
        timestamp = int(ctx.clock.now().timestamp())
        headers = signing.headers_with_keys(
            list(attempt.keys), attempt.delivery_id, timestamp, attempt.body
        )
        outcome = sender.send(
            attempt.url,
            attempt.body,
            headers,
            allowed=safety.parse_networks(settings.webhook_allow_networks),
            allow_http=settings.webhook_allow_http,
            timeout=settings.webhook_timeout_seconds,
        )
    except Exception as exc:  # a failed attempt like any other, never the batch's end
        log.exception("webhook.send_failed", delivery_id=attempt.delivery_id)
        error = sender.storable(f"{type(exc).__name__}: {exc}"[:1000])
        outcome = sender.Outcome(None, None, error, 0)
    log.info(
        "webhook.attempt",
        delivery_id=attempt.delivery_id,
        status_code=outcome.status_code,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
    return outcome


def _submit(flight: _Flight) -> None:
    """Sends the attempt on a sending thread, after its endpoint's earlier ones when
    PER_ENDPOINT of them are in flight (`_send_batch` counted it in `_busy` already)."""
    endpoint_id = flight.attempt.endpoint_id
    with _lock_flights:
        if _sending.get(endpoint_id, 0) >= PER_ENDPOINT:
            _lanes.setdefault(endpoint_id, deque()).append(flight)
            return
        _sending[endpoint_id] = _sending.get(endpoint_id, 0) + 1
    _sending_pool().submit(_lane, flight)


def _lane(flight: _Flight | None) -> None:
    """A sending thread: this attempt, then the ones waiting for its endpoint."""
    while flight is not None:
        endpoint_id = flight.attempt.endpoint_id
        try:
            _settle(flight, _send(flight.ctx, flight.attempt))
        except Exception:  # never leave the lane stuck
            log.exception("webhook.lane_failed", delivery_id=flight.attempt.delivery_id)
        with _lock_flights:
            _busy[endpoint_id] -= 1
            if not _busy[endpoint_id]:
                del _busy[endpoint_id]
            waiting = _lanes.get(endpoint_id)
            flight = waiting.popleft() if waiting else None
            if waiting is not None and not waiting:
                del _lanes[endpoint_id]
            if flight is None:  # this thread leaves the endpoint
                _sending[endpoint_id] -= 1
                if not _sending[endpoint_id]:
                    del _sending[endpoint_id]


def _settle(flight: _Flight, outcome: sender.Outcome) -> None:
    """The answer is known: kept for the batch's `record`, or, when the batch was recorded
    without it, recorded now in a transaction of its own."""
    at = flight.ctx.clock.now()
    with _lock_flights:
        flight.outcome, flight.at, flight.known_since = outcome, at, time.monotonic()
        detached = flight.detached
        flight.done.set()
    if detached:
        _record_detached(flight)


def _record_detached(flight: _Flight) -> None:
    """Records a detached attempt in a transaction of its own: the attempt, the delivery's
    new state (a next attempt gets a new generation) and its job finished. A failure here
    (or a crash before) leaves the deferred job to send the delivery again, the same
    webhook-id (at least once)."""
    attempt, ctx, outcome = flight.attempt, flight.ctx, flight.outcome
    assert outcome is not None and flight.at is not None
    job = JobRef(attempt.job_id, TASK, None, None, 0, JOB_ATTEMPTS,
                 {"deliveryId": attempt.delivery_id, "generation": attempt.generation})  # fmt: skip
    try:
        if ctx.db is None:
            raise RuntimeError("no database in the task's context")
        with ctx.db.write() as session:
            endpoints, deliveries = _lock(session, [attempt.delivery_id])
            _record_batch(session, [(job, outcome, flight.at)], endpoints, deliveries, ctx)
            # Its job is done here: whether the worker has deferred it yet or not, it will
            # not run again (the worker's `defer` of it then matches nothing).
            queue.finish_outside(session, attempt.job_id, ctx.clock.now())
    except Exception:
        log.exception("webhook.record_failed", delivery_id=attempt.delivery_id)
        flight.record_failed = True
        return
    flight.recorded.set()


def act(ctx: TaskContext, attempt: Attempt, operation_id: str) -> None:
    key = (attempt.job_id, attempt.delivery_id)
    with _lock_flights:
        flight = _flights.get(key)
    if flight is None:
        flight = _send_batch(ctx, attempt)
    if flight is None:  # its endpoint's lane is full here: not sent
        raise Deferred(ENDPOINT_BUSY_SECONDS, "the endpoint's earlier attempts are in flight")
    with _lock_flights:
        if flight.outcome is not None and not flight.detached:
            return  # recorded with its batch (`record`)
        flight.detached = True
        recorded = flight.recorded.is_set()
    if recorded:  # by its sending thread, which finished the job: the `defer` matches nothing
        raise Deferred(0, "recorded by its sending thread")
    # Not answered yet: the job comes back after a lease, unless the answer is recorded
    # before (`_record_detached` finishes the job); in this process it finds the same flight.
    raise Deferred(_deferral(ctx), "waiting for the receiver")


def _send_batch(ctx: TaskContext, attempt: Attempt) -> _Flight | None:
    """Sends the attempt and the others its batch prepared, and waits for them to answer,
    SETTLE_SECONDS at most; returns the attempt's flight, None when it was not sent (its
    endpoint's lane is full: `_room`; the batch's other attempts not sent are deferred by
    their own `act`)."""
    batch: dict[int, Attempt] = getattr(_local, "batch", {})
    _local.batch = {}
    now = time.monotonic()
    started: list[_Flight] = []
    room = _room(ctx)
    with _lock_flights:
        keep = ctx.settings.job_lease_seconds
        for key in [k for k, f in _flights.items() if _settled(f) and now - f.known_since > keep]:
            del _flights[key]
        for a in [attempt, *(a for a in batch.values() if a.job_id != attempt.job_id)]:
            if (a.job_id, a.delivery_id) in _flights:  # still in flight here
                continue
            if _busy.get(a.endpoint_id, 0) >= room:
                continue  # its own `act` defers it
            _busy[a.endpoint_id] = _busy.get(a.endpoint_id, 0) + 1
            _flights[(a.job_id, a.delivery_id)] = flight = _Flight(a, ctx)
            started.append(flight)
        mine = _flights.get((attempt.job_id, attempt.delivery_id))
    for flight in started:
        _submit(flight)
    deadline = now + min(SETTLE_SECONDS, ctx.settings.webhook_timeout_seconds)
    for flight in started:
        flight.done.wait(max(0.0, deadline - time.monotonic()))
    return mine


def _give_up(delivery: WebhookDelivery, now: datetime, reason: str) -> None:
    delivery.status = FAILED
    delivery.next_attempt_at = None
    delivery.last_error = reason[:1024]
    delivery.updated_at = now


def record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    key = (job.id, _delivery_id(job))
    with _lock_flights:
        flight = _flights.get(key)
    if flight is None or flight.outcome is None or flight.at is None:
        # Not sent by this process (or forgotten): the job runs again, the same webhook-id.
        raise OutcomeLost(f"the outcome of job {job.id}'s attempt is not in this process")
    if flight.detached:
        return  # recorded by its sending thread (`act` saw it done)
    stash = _stash(session)
    if session.in_nested_transaction() or stash is None:
        # Job by job (the worker's careful way): this job's rows, read again under locks.
        endpoints, deliveries = _lock(session, [key[1]])
        _record_batch(session, [(job, flight.outcome, flight.at)], endpoints, deliveries, ctx)
        return
    if stash.recorded:
        return  # written with its batch
    stash.recorded = True
    batch = []
    with _lock_flights:
        for j in stash.jobs:
            f = _flights.get((j.id, _delivery_id(j)))
            if f is not None and f.outcome is not None and f.at is not None and not f.detached:
                batch.append((j, f.outcome, f.at))
    _record_batch(session, batch, stash.endpoints, stash.deliveries, ctx)


def _record_batch(
    session: Session,
    batch: list[tuple[JobRef, sender.Outcome, datetime]],
    endpoints: dict[str, _Endpoint],
    deliveries: dict[str, _Delivery],
    ctx: TaskContext,
) -> None:
    """Writes the attempts of `batch` (rows locked by `_lock`): one INSERT, one executemany
    UPDATE, and what failures change (the endpoint, the next attempt)."""
    now = ctx.clock.now()
    settings = ctx.settings
    attempts: list[dict[str, Any]] = []
    changed: dict[str, dict[str, Any]] = {}
    scheduled: dict[str, datetime | None] = {}  # next_attempt_at, set by a current job
    failing: set[str] = set()
    recovered: set[str] = set()
    # Disables decided in the loop, written after it: every endpoint UPDATE of the batch
    # runs in endpoint-id order, so two workers' batches cannot lock two endpoints in
    # opposite orders (the endpoints are only FOR KEY SHARE locked up to then).
    disables: dict[str, tuple[_Endpoint, str]] = {}
    for job, outcome, at in batch:
        delivery = deliveries.get(_delivery_id(job))
        if delivery is None:
            continue  # its endpoint was deleted meanwhile
        endpoint = endpoints.get(delivery.endpoint_id)
        current = delivery.status == PENDING and delivery.generation == job.args.get("generation")
        error = None if outcome.error is None else outcome.error[:1024]
        delivery.attempts += 1
        delivery.last_error = error
        attempts.append({
            "delivery_id": delivery.id, "number": delivery.attempts, "at": at,
            "duration_ms": outcome.duration_ms, "status_code": outcome.status_code,
            "response_body": outcome.body, "error": error,
        })  # fmt: skip
        if outcome.ok:
            if current:
                delivery.status = SUCCEEDED
                scheduled[delivery.id] = None
            if endpoint is not None and endpoint.failing_since is not None:
                endpoint.failing_since = None
                recovered.add(endpoint.id)
                failing.discard(endpoint.id)
        elif current:
            scheduled[delivery.id] = _after_failure(
                session, delivery, endpoint, outcome, now, settings, failing, disables
            )
        changed[delivery.id] = {
            "b_id": delivery.id, "b_attempts": delivery.attempts, "b_status": delivery.status,
            "b_last_status_code": outcome.status_code, "b_last_error": delivery.last_error,
            "b_generation": delivery.generation, "b_updated_at": now,
        }  # fmt: skip
    conn = session.connection()
    if attempts:
        conn.execute(repository.INSERT_ATTEMPTS, attempts)
    if changed:
        _update_deliveries(conn, changed, scheduled, now)
    for endpoint_id in sorted(recovered | failing | disables.keys()):
        if endpoint_id in recovered:
            conn.execute(repository.NOT_FAILING, {"b_id": endpoint_id})
        if endpoint_id in failing:
            conn.execute(repository.FAILING_SINCE, {"b_id": endpoint_id, "b_at": now})
        if endpoint_id in disables:
            _write_disable(session, *disables[endpoint_id], now)


def _update_deliveries(
    conn: Connection,
    changed: dict[str, dict[str, Any]],
    scheduled: dict[str, datetime | None],
    now: datetime,
) -> None:
    """The deliveries' new state; a superseded job's attempt (not in `scheduled`) leaves
    the delivery's schedule (next_attempt_at) as it is."""
    if conn.dialect.name == "postgresql":
        rows = list(changed.values())
        conn.execute(repository.UPDATE_DELIVERIES_ARRAYS, {
            "ids": [r["b_id"] for r in rows], "attempts": [r["b_attempts"] for r in rows],
            "statuses": [r["b_status"] for r in rows],
            "codes": [r["b_last_status_code"] for r in rows],
            "errors": [r["b_last_error"] for r in rows],
            "generations": [r["b_generation"] for r in rows],
            "nexts": [scheduled.get(r["b_id"]) for r in rows],
            "keeps": [r["b_id"] not in scheduled for r in rows], "at": now,
        })  # fmt: skip
        return
    rescheduled = [row | {"b_next_attempt_at": scheduled[key]}
                   for key, row in changed.items() if key in scheduled]  # fmt: skip
    if rescheduled:
        conn.execute(repository.UPDATE_DELIVERIES, rescheduled)
    kept = [row for key, row in changed.items() if key not in scheduled]
    if kept:
        conn.execute(repository.UPDATE_DELIVERIES_KEEPING_SCHEDULE, kept)


def _after_failure(
    session: Session,
    delivery: _Delivery,
    endpoint: _Endpoint | None,
    outcome: sender.Outcome,
    now: datetime,
    settings: Settings,
    failing: set[str],
    disables: dict[str, tuple[_Endpoint, str]],
) -> datetime | None:
    """A failed attempt of the delivery's current job: the endpoint's state, then the
    delivery's next attempt (its time, with its job enqueued) or its end (None)."""
    if endpoint is None:
        _fail(delivery, delivery.last_error or "failed")
        return None
    if outcome.status_code == 410:
        _disable(disables, endpoint, "the endpoint answered 410 Gone")
    elif endpoint.failing_since is None:
        endpoint.failing_since = now
        failing.add(endpoint.id)
    elif now - endpoint.failing_since >= timedelta(seconds=settings.webhook_disable_after_seconds):
        days = settings.webhook_disable_after_seconds / 86400
        _disable(disables, endpoint, f"every attempt failed for {days:g} days")
    if not endpoint.enabled:
        _fail(delivery, f"{delivery.last_error}; the endpoint is now disabled")
        return None
    delay = next_delay(delivery.attempts, settings.webhook_retry_delays, outcome.retry_after)
    if delay is None:
        _fail(delivery, f"{delivery.last_error} (gave up after {delivery.attempts} attempts)")
        return None
    run_at = now + timedelta(seconds=delay)
    # The next attempt's job is a new generation: the job of this one, run again (a worker
    # died before finishing it, or it was deferred while its answer was awaited), finds
    # nothing to do rather than sending before the schedule says.
    delivery.generation += 1
    _enqueue(session, delivery.id, delivery.generation, run_at, now)
    return run_at


def _fail(delivery: _Delivery, reason: str) -> None:
    delivery.status = FAILED
    delivery.last_error = reason[:1024]


def next_delay(
    attempts_made: int, delays: list[float], retry_after: float | None, rng: random.Random = _rng
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts, or None: no more.
    The schedule's entry with +-20% jitter; after a 429/503 with `Retry-After`, that
    (at most the schedule's longest step)."""
    if attempts_made >= len(delays):
        return None
    if retry_after is not None:
        return min(retry_after, max(delays))
    return delays[attempts_made] * rng.uniform(0.8, 1.2)


def _disable(disables: dict[str, tuple[_Endpoint, str]], endpoint: _Endpoint, reason: str) -> None:
    """Disables the endpoint for the rest of the batch; written by `_write_disable` after
    the batch's loop, with the other endpoint changes, in endpoint-id order."""
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    disables[endpoint.id] = (endpoint, reason)


def _write_disable(session: Session, endpoint: _Endpoint, reason: str, now: datetime) -> None:
    """Disables the endpoint and records `webhook_endpoint.disabled`, once: when another
    worker disabled it first, its event is the one."""
    done = session.connection().execute(
        repository.DISABLE, {"b_id": endpoint.id, "b_reason": reason[:255], "b_at": now}
    )
    if done.first() is None:
        return
    events.record(
        session,
        "webhook_endpoint.disabled",
        customer_id=endpoint.customer_id,
        subject_id=endpoint.id,
        at=now,
        webhookEndpointId=endpoint.id,
        url=endpoint.url,
        reason=reason,
    )
    log.warning("webhook.endpoint_disabled", endpoint_id=endpoint.id, reason=reason)


def abandon(session: Session, job: JobRef, ctx: TaskContext, reason: str) -> None:
    """The job itself failed for good (the service's fault, e.g. an unreadable secret)."""
    delivery = _current(session, job)
    if delivery is not None:
        _give_up(delivery, ctx.clock.now(), f"not delivered: {reason}")
