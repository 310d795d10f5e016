"""Queries of webhook endpoints, deliveries and attempts, always scoped to one customer
(except the worker's, which go by id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    String,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from iod.infra.db import TransactionSelect
from iod.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def get_endpoint(
    session: Session, customer_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.customer_id == customer_id
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def count_endpoints(session: Session, customer_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.customer_id == customer_id)
        )
        or 0
    )


def list_endpoints(
    session: Session, customer_id: str, *, after: str | None, limit: int
) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.customer_id == customer_id)
    if after is not None:
        query = query.where(WebhookEndpoint.id > after)
    return list(session.scalars(query.order_by(WebhookEndpoint.id).limit(limit)).all())


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)


_endpoints = WebhookEndpoint.__table__
assert isinstance(_endpoints, Table)
# Run on every transaction that writes events (the subscriber): built once.
ENABLED_OF_CUSTOMERS = select(
    _endpoints.c.id, _endpoints.c.customer_id, _endpoints.c.event_types
).where(
    and_(
        _endpoints.c.customer_id.in_(bindparam("customers", expanding=True)),
        _endpoints.c.enabled.is_(True),
    )
)


def enabled_of_customer(session: Session, customer_id: str) -> list[Any]:
    """`ENABLED_OF_CUSTOMERS` for one customer (what a request's transaction writes events
    for), compiled once and run on the transaction's connection (`TransactionSelect`)."""
    return _ENABLED_OF_CUSTOMER.rows(session, customer=customer_id)


def enabled_of_customer_later(
    session: Session, customer_id: str, then: Callable[[list[Any]], None]
) -> None:
    """`then(enabled_of_customer(...))`, the read sent with the transaction's next round
    trip (`TransactionSelect.later`)."""
    _ENABLED_OF_CUSTOMER.later(session, then, customer=customer_id)


_ENABLED_OF_CUSTOMER = TransactionSelect(
    select(_endpoints.c.id, _endpoints.c.customer_id, _endpoints.c.event_types).where(
        _endpoints.c.customer_id == bindparam("customer", type_=String),
        _endpoints.c.enabled.is_(True),
    )
)


def get_delivery(
    session: Session, customer_id: str, endpoint_id: str, delivery_id: str, *, lock: bool = False
) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.endpoint_id == endpoint_id,
        WebhookDelivery.customer_id == customer_id,
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def list_deliveries(
    session: Session,
    endpoint_id: str,
    *,
    before: str | None,
    status: str | None,
    limit: int,
) -> list[WebhookDelivery]:
    """Newest first (ids sort by creation time)."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)).all())


def attempts_of(
    session: Session, delivery_ids: Sequence[str], *, per_delivery: int
) -> dict[str, list[WebhookAttempt]]:
    """The last `per_delivery` attempts of each delivery, oldest first."""
    found: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    rows = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(list(delivery_ids)))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.id)
    ).all()
    for row in rows:
        found[row.delivery_id].append(row)
    return {key: value[-per_delivery:] for key, value in found.items()}


def deliveries_with_endpoints(
    session: Session, delivery_ids: Sequence[str], *, lock: bool
) -> list[object]:
    """The worker's batch: deliveries and their endpoints, one query each (kept in the
    session's identity map while the caller holds the list). Locking (to record), the
    endpoints first, in id order, then the deliveries: the order a deletion takes them in."""
    if not delivery_ids:
        return []
    ids = sorted(set(delivery_ids))
    endpoint_ids = sorted(
        set(
            session.scalars(
                select(WebhookDelivery.endpoint_id).where(WebhookDelivery.id.in_(ids))
            ).all()
        )
    )
    endpoints: list[object] = []
    if endpoint_ids:
        equery = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id.in_(endpoint_ids))
            .order_by(WebhookEndpoint.id)
        )
        endpoints = list(session.scalars(equery.with_for_update() if lock else equery).all())
    query = select(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id)
    deliveries = list(session.scalars(query.with_for_update() if lock else query).all())
    return [*endpoints, *deliveries]


def prune_deliveries(session: Session, before: datetime, batch: int) -> int:
    """Deletes up to `batch` finished deliveries (not pending) last changed before `before`,
    with their attempts; returns how many."""
    ids = list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.updated_at < before, WebhookDelivery.status != "pending")
            .limit(batch)
        ).all()
    )
    if ids:
        session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)


# --- the worker's batch: Core statements, built once ---------------------------------------

_deliveries = WebhookDelivery.__table__
_attempts = WebhookAttempt.__table__
assert isinstance(_deliveries, Table) and isinstance(_attempts, Table)
_ids: BindParameter[list[str]] = bindparam("ids", expanding=True)

# To prepare (the claim's transaction): a delivery and its endpoint in one row, unlocked
# (`record` decides under locks). The endpoint's columns are NULL when it is gone.
BATCH_TO_SEND = (
    select(
        _deliveries.c.id,
        _deliveries.c.status,
        _deliveries.c.generation,
        _deliveries.c.body,
        _deliveries.c.endpoint_id,
        _endpoints.c.url,
        _endpoints.c.enabled,
        _endpoints.c.secret,
        _endpoints.c.previous_secret,
        _endpoints.c.previous_secret_until,
    )
    .select_from(_deliveries.outerjoin(_endpoints, _endpoints.c.id == _deliveries.c.endpoint_id))
    .where(_deliveries.c.id.in_(_ids))
)

# To record: the endpoints first, in id order, FOR KEY SHARE (PostgreSQL): a deletion
# (FOR UPDATE) waits for the batch and the batch for it, as before, but two workers
# recording deliveries of one endpoint do not wait for each other, and updating the
# endpoint's failing_since (FOR NO KEY UPDATE) does not conflict with a KEY SHARE.
ENDPOINTS_TO_RECORD = (
    select(
        _endpoints.c.id,
        _endpoints.c.customer_id,
        _endpoints.c.url,
        _endpoints.c.enabled,
        _endpoints.c.failing_since,
    )
    .where(
        _endpoints.c.id.in_(
            select(_deliveries.c.endpoint_id).where(_deliveries.c.id.in_(_ids)).scalar_subquery()
        )
    )
    .order_by(_endpoints.c.id)
    .with_for_update(read=True, key_share=True)
)
# Then the deliveries, in id order, FOR UPDATE: one recording at a time per delivery.
DELIVERIES_TO_RECORD = (
    select(
        _deliveries.c.id,
        _deliveries.c.endpoint_id,
        _deliveries.c.status,
        _deliveries.c.generation,
        _deliveries.c.attempts,
        _deliveries.c.last_error,
    )
    .where(_deliveries.c.id.in_(_ids))
    .order_by(_deliveries.c.id)
    .with_for_update()
)
INSERT_ATTEMPTS = _attempts.insert()


def _update_deliveries(*columns: str) -> Update:
    """UPDATE one delivery by `b_id`, each column from its `b_<column>` parameter: run with
    a list of parameter sets (executemany: one round trip for the batch on psycopg, in
    pipeline mode)."""
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == bindparam("b_id"))
        .values({column: bindparam(f"b_{column}") for column in columns})
    )


_RECORDED = ("attempts", "status", "last_status_code", "last_error", "generation", "updated_at")
UPDATE_DELIVERIES = _update_deliveries(*_RECORDED, "next_attempt_at")
UPDATE_DELIVERIES_KEEPING_SCHEDULE = _update_deliveries(*_RECORDED)
# PostgreSQL: the batch's deliveries in one statement (arrays, unnest), not one UPDATE each;
# `keeps` marks a superseded job's attempt, which leaves next_attempt_at as it is.
UPDATE_DELIVERIES_ARRAYS = text(
    """
    UPDATE webhook_deliveries AS d
    SET attempts = v.attempts, status = v.status, last_status_code = v.code,
        last_error = v.error, generation = v.generation, updated_at = :at,
        next_attempt_at = CASE WHEN v.keep THEN d.next_attempt_at ELSE v.next END
    FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
                CAST(:codes AS integer[]), CAST(:errors AS text[]),
                CAST(:generations AS integer[]), CAST(:nexts AS timestamptz[]),
                CAST(:keeps AS boolean[]))
         AS v(id, attempts, status, code, error, generation, next, keep)
    WHERE d.id = v.id
    """
)
# The endpoint's changes are conditional: another worker may change it meanwhile (KEY
# SHARE does not keep it from updating failing_since or disabling it), so each says only
# what this batch saw happen, and a disabling that returns no row was someone else's.
FAILING_SINCE = (
    _endpoints.update()
    .where(_endpoints.c.id == bindparam("b_id"), _endpoints.c.failing_since.is_(None))
    .values(failing_since=bindparam("b_at"))
)
NOT_FAILING = (
    _endpoints.update()
    .where(_endpoints.c.id == bindparam("b_id"), _endpoints.c.failing_since.is_not(None))
    .values(failing_since=None)
)
DISABLE = (
    _endpoints.update()
    .where(_endpoints.c.id == bindparam("b_id"), _endpoints.c.enabled.is_(True))
    .values(enabled=False, disabled_reason=bindparam("b_reason"), updated_at=bindparam("b_at"))
    .returning(_endpoints.c.id)
)
GIVE_UP = (
    _deliveries.update()
    .where(_deliveries.c.id == bindparam("b_id"))
    .values(
        status="failed",
        next_attempt_at=None,
        last_error=bindparam("b_last_error"),
        updated_at=bindparam("b_updated_at"),
    )
)
