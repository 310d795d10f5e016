"""Queries of webhook endpoints, deliveries and attempts, always scoped to one customer
(except the worker's, which go by id)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, and_, bindparam, delete, func, select
from sqlalchemy.orm import Session

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
