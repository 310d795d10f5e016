"""Queries of the events feed, always scoped to one customer."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from iod.models import Event, EventStream


def last_position(session: Session, customer_id: str) -> int:
    """The customer's last committed position (0: none yet). Every event up to it is
    committed once this is visible: the counter moves in the events' own transaction."""
    value = session.scalar(
        select(EventStream.position).where(EventStream.customer_id == customer_id)
    )
    return int(value or 0)


def oldest_kept(session: Session, customer_id: str) -> int | None:
    """The customer's oldest position not yet pruned, or None when none is kept."""
    value = session.scalar(select(func.min(Event.position)).where(Event.customer_id == customer_id))
    return None if value is None else int(value)


def page(
    session: Session,
    customer_id: str,
    *,
    after: int,
    upto: int,
    types: Sequence[str],
    subject_id: str | None,
    limit: int,
) -> list[Event]:
    """The customer's events with `after < position <= upto` matching the filters, in
    position order: `types` are name prefixes (any of them), `subject_id` the connection."""
    statement = select(Event).where(
        Event.customer_id == customer_id, Event.position > after, Event.position <= upto
    )
    if types:
        statement = statement.where(
            or_(*(Event.name.startswith(prefix, autoescape=True) for prefix in types))
        )
    if subject_id is not None:
        statement = statement.where(Event.subject_id == subject_id)
    return list(session.scalars(statement.order_by(Event.position).limit(limit)).all())
