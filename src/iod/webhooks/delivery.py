"""Delivering events to webhook endpoints: the fan-out in the event's own transaction, and
the task that makes one attempt per job.

- `fan_out` is an events subscriber: in the transaction that writes the events, for each
  (event, enabled endpoint of its customer whose filters match) it adds a delivery row (its
  id is the `webhook-id`, the body is fixed then) and a job on the `webhooks` queue. A
  transaction that rolls back leaves neither.
- The task `webhook_deliver`: `prepare` (claim transaction) reloads the delivery and its
  endpoint and signs the body with the secrets in force now; `act` (no transaction open)
  resolves, checks and POSTs (`sender.py`); `record` stores the attempt and either finishes
  the delivery or enqueues the next attempt on the retry schedule (with jitter, or after
  `Retry-After`), disabling the endpoint on 410 or after failing for
  IOD_WEBHOOK_DISABLE_AFTER_SECONDS (event `webhook_endpoint.disabled`).
A worker killed mid-attempt leaves the job leased; once the lease runs out another worker
takes it and sends the same delivery again, with the same `webhook-id` (at least once).
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from iod import events
from iod.events import WrittenEvent
from iod.events.service import encode_cursor
from iod.infra.clock import rfc3339
from iod.infra.config import Settings
from iod.infra.ids import new_id
from iod.infra.secure import key_encryption_key
from iod.jobs import queue
from iod.jobs.registry import JobRef, TaskContext
from iod.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
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


def fan_out(session: Session, written: list[WrittenEvent]) -> None:
    customers = sorted({e.customer_id for e in written})
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
            _enqueue(session, delivery, event.at, event.at)


def _enqueue(session: Session, delivery: WebhookDelivery, run_at: datetime, now: datetime) -> None:
    queue.enqueue(
        session,
        TASK,
        run_at=run_at,
        now=now,
        max_attempts=JOB_ATTEMPTS,
        args={"deliveryId": delivery.id, "generation": delivery.generation},
        queue=QUEUE,
    )


def schedule_now(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """One more attempt now (a manual retry): older jobs of the delivery do nothing."""
    delivery.generation += 1
    delivery.status = PENDING
    delivery.next_attempt_at = now
    delivery.updated_at = now
    session.flush()
    _enqueue(session, delivery, now, now)


# --- the task --------------------------------------------------------------------------


class OutcomeLost(Exception):
    """`record` found no outcome of the job's `act` in this process."""


@dataclass(frozen=True)
class Attempt:
    job_id: int
    delivery_id: str
    url: str
    body: bytes
    headers: dict[str, str]


_kek_cache: dict[int, tuple[Settings, bytes | None]] = {}


def _kek(settings: Settings) -> bytes | None:
    cached = _kek_cache.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _kek_cache[id(settings)] = (settings, key_encryption_key(settings))
    return cached[1]


def preload(session: Session, jobs: list[JobRef], preparing: bool) -> list[object]:
    ids = [str(job.args.get("deliveryId", "")) for job in jobs]
    return repository.deliveries_with_endpoints(session, ids, lock=not preparing)


def _current(session: Session, job: JobRef) -> WebhookDelivery | None:
    delivery = session.get(WebhookDelivery, str(job.args.get("deliveryId", "")))
    if delivery is None or delivery.status != PENDING:
        return None
    if delivery.generation != job.args.get("generation"):
        return None  # superseded by a manual retry
    return delivery


def prepare(session: Session, job: JobRef, ctx: TaskContext) -> Attempt | None:
    delivery = _current(session, job)
    if delivery is None:
        return None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    now = ctx.clock.now()
    if endpoint is None or not endpoint.enabled:
        _give_up(delivery, now, "the webhook endpoint is disabled")
        return None
    secrets = service.signing_secrets(endpoint, now, _kek(ctx.settings))
    body = delivery.body.encode()
    headers = signing.headers(secrets, delivery.id, int(now.timestamp()), body)
    attempt = Attempt(job.id, delivery.id, endpoint.url, body, headers)
    _batch_of(session)[job.id] = attempt
    return attempt


# Outcomes by (job id, delivery id): job ids alone repeat across databases (tests).
_results: dict[tuple[int, str], tuple[float, sender.Outcome]] = {}
_results_lock = threading.Lock()


# The worker acts on a batch's jobs one after another; a receiver's answer takes
# milliseconds to seconds, so the first `act` of a batch sends every attempt the batch
# prepared at once (on the sending threads) and the others find their outcome ready. The
# attempts wait in the preparing thread's `_local.batch`, tagged with the claim's session: a
# new claim forgets what an earlier one left (its jobs were released or failed).
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
SENDING_THREADS = 32


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
        outcome = sender.send(
            attempt.url,
            attempt.body,
            attempt.headers,
            allowed=safety.parse_networks(settings.webhook_allow_networks),
            allow_http=settings.webhook_allow_http,
            timeout=settings.webhook_timeout_seconds,
        )
    except Exception as exc:  # a failed attempt like any other, never the batch's end
        log.exception("webhook.send_failed", delivery_id=attempt.delivery_id)
        outcome = sender.Outcome(None, None, f"{type(exc).__name__}: {exc}"[:1000], 0)
    log.info(
        "webhook.attempt",
        delivery_id=attempt.delivery_id,
        status_code=outcome.status_code,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
    return outcome


def act(ctx: TaskContext, attempt: Attempt, operation_id: str) -> None:
    with _results_lock:
        if (attempt.job_id, attempt.delivery_id) in _results:
            return  # sent with its batch
    batch: dict[int, Attempt] = getattr(_local, "batch", {})
    others = [a for a in batch.values() if a.job_id != attempt.job_id]
    _local.batch = {}
    pool = _sending_pool()
    futures = [(a, pool.submit(_send, ctx, a)) for a in [attempt, *others]]
    # httpx's timeout is per phase: an answer trickling in could take longer in all. The
    # batch waits a bounded time; what has not answered by then is a failed attempt.
    limit = 2 * ctx.settings.webhook_timeout_seconds + 1
    wait([future for _, future in futures], timeout=limit)
    outcomes = [
        (
            (a.job_id, a.delivery_id),
            future.result()
            if future.done()
            else sender.Outcome(None, None, f"timeout: no complete answer in {limit:g} s", 0),
        )
        for a, future in futures
    ]
    now = time.monotonic()
    with _results_lock:
        # `record` reads them (again, when a batch is recorded job by job), so entries go
        # only after a lease: by then an unrecorded job is another worker's to run again.
        keep = ctx.settings.job_lease_seconds
        for key in [k for k, (at, _) in _results.items() if now - at > keep]:
            del _results[key]
        for key, outcome in outcomes:
            _results[key] = (now, outcome)


def _give_up(delivery: WebhookDelivery, now: datetime, reason: str) -> None:
    delivery.status = FAILED
    delivery.next_attempt_at = None
    delivery.last_error = reason[:1024]
    delivery.updated_at = now


def record(session: Session, job: JobRef, ctx: TaskContext) -> None:
    with _results_lock:
        found = _results.get((job.id, str(job.args.get("deliveryId", ""))))
    if found is None:
        # Not sent by this process (or forgotten): the job runs again, the same webhook-id.
        raise OutcomeLost(f"the outcome of job {job.id}'s attempt is not in this process")
    outcome = found[1]
    delivery = session.get(WebhookDelivery, str(job.args.get("deliveryId", "")))
    if delivery is None:
        return  # its endpoint was deleted meanwhile
    now = ctx.clock.now()
    delivery.attempts += 1
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            number=delivery.attempts,
            at=now,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            response_body=outcome.body,
            error=None if outcome.error is None else outcome.error[:1024],
        )
    )
    delivery.last_status_code = outcome.status_code
    delivery.last_error = None if outcome.error is None else outcome.error[:1024]
    delivery.updated_at = now
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    current = delivery.status == PENDING and delivery.generation == job.args.get("generation")
    if outcome.ok:
        if current:
            delivery.status = SUCCEEDED
            delivery.next_attempt_at = None
        if endpoint is not None and endpoint.failing_since is not None:
            endpoint.failing_since = None
        return
    if not current:
        return
    if endpoint is None:
        _give_up(delivery, now, delivery.last_error or "failed")
        return
    settings = ctx.settings
    if outcome.status_code == 410:
        disable(session, endpoint, now, "the endpoint answered 410 Gone")
    else:
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        elif now - endpoint.failing_since >= timedelta(
            seconds=settings.webhook_disable_after_seconds
        ):
            days = settings.webhook_disable_after_seconds / 86400
            disable(session, endpoint, now, f"every attempt failed for {days:g} days")
    if not endpoint.enabled:
        _give_up(delivery, now, f"{delivery.last_error}; the endpoint is now disabled")
        return
    delay = next_delay(delivery.attempts, settings.webhook_retry_delays, outcome.retry_after)
    if delay is None:
        _give_up(
            delivery, now, f"{delivery.last_error} (gave up after {delivery.attempts} attempts)"
        )
        return
    run_at = now + timedelta(seconds=delay)
    delivery.next_attempt_at = run_at
    _enqueue(session, delivery, run_at, now)


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


def disable(session: Session, endpoint: WebhookEndpoint, now: datetime, reason: str) -> None:
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
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
