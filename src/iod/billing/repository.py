"""Queries of the money feature: prices, quotes, usage, statements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, exists, func, select
from sqlalchemy.orm import Session

from iod.models import (
    BandwidthChange,
    Connection,
    MeteredHour,
    Price,
    Quote,
    Statement,
    StatusTransition,
    UsageHour,
    UsageLine,
)

USAGE_HOURS = cast(Table, UsageHour.__table__)
USAGE_LINES = cast(Table, UsageLine.__table__)
METERED_HOURS = cast(Table, MeteredHour.__table__)
STATEMENTS = cast(Table, Statement.__table__)


# --- prices ------------------------------------------------------------------------------


def all_prices(session: Session) -> Sequence[Price]:
    """Every version, by location, tier and effective time (the book is small)."""
    query = select(Price).order_by(Price.location_id, Price.tier_mbps, Price.effective_from)
    return session.scalars(query).all()


def prices_of(session: Session, location_ids: Sequence[str]) -> Sequence[Price]:
    query = (
        select(Price)
        .where(Price.location_id.in_(location_ids))
        .order_by(Price.location_id, Price.tier_mbps, Price.effective_from)
    )
    return session.scalars(query).all()


def price_version(
    session: Session, location_id: str, tier_mbps: int, effective_from: datetime
) -> Price | None:
    query = select(Price).where(
        Price.location_id == location_id,
        Price.tier_mbps == tier_mbps,
        Price.effective_from == effective_from,
    )
    return session.scalars(query).first()


def price_at(session: Session, location_id: str, tier_mbps: int, at: datetime) -> Price | None:
    query = (
        select(Price)
        .where(
            Price.location_id == location_id,
            Price.tier_mbps == tier_mbps,
            Price.effective_from <= at,
        )
        .order_by(Price.effective_from.desc())
        .limit(1)
    )
    return session.scalars(query).first()


# --- quotes ------------------------------------------------------------------------------


def quote_for_customer(
    session: Session, customer_id: str, quote_id: str, *, lock: bool = False
) -> Quote | None:
    query = select(Quote).where(Quote.id == quote_id, Quote.customer_id == customer_id)
    return session.scalars(query.with_for_update() if lock else query).first()


def quotes_used_by(session: Session, lo: str, hi: str) -> Sequence[Quote]:
    query = select(Quote).where(Quote.used_connection_id.between(lo, hi))
    return session.scalars(query).all()


# --- metering ----------------------------------------------------------------------------


def last_metered_hour(session: Session) -> datetime | None:
    return session.scalar(select(func.max(MeteredHour.hour)))


def first_connection_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(Connection.created_at)))


def unrated(session: Session, hour: datetime, end: datetime, limit: int) -> Sequence[Any]:
    """Connections that existed during [hour, end), were not terminated before it and have
    no usage row for it yet: (id, customer_id, location_id, bandwidth_mbps)."""
    terminated_before = exists().where(
        StatusTransition.connection_id == Connection.id,
        StatusTransition.to_status == "terminated",
        StatusTransition.at < hour,
    )
    rated = exists().where(UsageHour.connection_id == Connection.id, UsageHour.hour == hour)
    query = (
        select(
            Connection.id,
            Connection.customer_id,
            Connection.location_id,
            Connection.bandwidth_mbps,
        )
        .where(Connection.created_at < end, ~terminated_before, ~rated)
        .order_by(Connection.id)
        .limit(limit)
    )
    return session.execute(query).all()


# A batch's facts are read by the range of its connection ids (a batch is consecutive ids
# of the unrated ones): one index range scan instead of thousands of bound parameters; rows
# of connections outside the batch are ignored by the caller.


def transitions_of(session: Session, lo: str, hi: str, end: datetime) -> Sequence[Any]:
    query = (
        select(StatusTransition.connection_id, StatusTransition.at, StatusTransition.to_status)
        .where(StatusTransition.connection_id.between(lo, hi), StatusTransition.at < end)
        .order_by(StatusTransition.connection_id, StatusTransition.id)
    )
    return session.execute(query).all()


def applied_changes_of(session: Session, lo: str, hi: str) -> Sequence[Any]:
    """Applied changes with the bandwidth they came from (the first one's `from_mbps` is
    the ordered tier) before `end`."""
    query = (
        select(
            BandwidthChange.connection_id,
            BandwidthChange.applied_at,
            BandwidthChange.from_mbps,
            BandwidthChange.to_mbps,
            BandwidthChange.id,
        )
        .where(
            BandwidthChange.connection_id.between(lo, hi),
            BandwidthChange.status == "applied",
        )
        .order_by(BandwidthChange.connection_id, BandwidthChange.applied_at, BandwidthChange.id)
    )
    return session.execute(query).all()


def hour_totals_by_customer(session: Session, hour: datetime) -> Sequence[Any]:
    """(customer_id, currency, amount, connections, seconds) of the lines of an hour."""
    query = (
        select(
            UsageLine.customer_id,
            UsageLine.currency,
            func.sum(UsageLine.amount_minor).label("amount"),
            func.count(func.distinct(UsageLine.connection_id)).label("connections"),
        )
        .where(UsageLine.hour == hour)
        .group_by(UsageLine.customer_id, UsageLine.currency)
        .order_by(UsageLine.customer_id, UsageLine.currency)
    )
    return session.execute(query).all()


# --- usage and statements ----------------------------------------------------------------


def usage_lines(
    session: Session,
    customer_id: str,
    start: datetime,
    end: datetime,
    connection_id: str | None = None,
) -> Sequence[Any]:
    conditions = [
        UsageLine.customer_id == customer_id,
        UsageLine.hour >= start,
        UsageLine.hour < end,
    ]
    if connection_id is not None:
        conditions.append(UsageLine.connection_id == connection_id)
    # Plain rows with the columns' names (not ORM objects): a month of a big customer is
    # millions of them.
    query = (
        select(*(c for c in USAGE_LINES.c if c.name != "id"))
        .where(and_(*conditions))
        .order_by(UsageLine.connection_id, UsageLine.start_at)
    )
    return session.execute(query).all()


def statement_by_month(session: Session, customer_id: str, month: str) -> Statement | None:
    query = select(Statement).where(Statement.customer_id == customer_id, Statement.month == month)
    return session.scalars(query).first()


def statement_for_customer(
    session: Session, customer_id: str, statement_id: str
) -> Statement | None:
    query = select(Statement).where(
        Statement.id == statement_id, Statement.customer_id == customer_id
    )
    return session.scalars(query).first()


def statements_of(session: Session, customer_id: str) -> Sequence[Statement]:
    query = (
        select(Statement)
        .where(Statement.customer_id == customer_id)
        .order_by(Statement.month.desc())
    )
    return session.scalars(query).all()


def open_statements_before(session: Session, month: str, limit: int) -> Sequence[Statement]:
    query = (
        select(Statement)
        .where(Statement.status == "open", Statement.month < month)
        .order_by(Statement.month, Statement.id)
        .limit(limit)
        .with_for_update()
    )
    return session.scalars(query).all()
