"""Queries of the money feature: prices, quotes, usage, statements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, exists, func, select, text
from sqlalchemy.orm import Session

from iod.infra.db import UTCDateTime
from iod.models import (
    BandwidthChange,
    Connection,
    MeteredHour,
    Price,
    Quote,
    Statement,
    StatementInterval,
    StatusTransition,
    UsageHour,
    UsageLine,
)

USAGE_HOURS = cast(Table, UsageHour.__table__)
USAGE_LINES = cast(Table, UsageLine.__table__)
METERED_HOURS = cast(Table, MeteredHour.__table__)
STATEMENTS = cast(Table, Statement.__table__)
INTERVALS = cast(Table, StatementInterval.__table__)


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


def unrated(
    session: Session, hour: datetime, end: datetime, limit: int, after: str = ""
) -> Sequence[Any]:
    """Connections that existed during [hour, end), were not terminated before it and have
    no usage row for it yet: (id, customer_id, location_id, bandwidth_mbps), by id from
    `after` (exclusive)."""
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
        .where(Connection.id > after, Connection.created_at < end, ~terminated_before, ~rated)
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


def _window(customer_id: str, start: datetime, end: datetime) -> Any:
    return and_(UsageLine.customer_id == customer_id, UsageLine.hour >= start, UsageLine.hour < end)


def usage_per_hour(
    session: Session, customer_id: str, start: datetime, end: datetime
) -> Sequence[Any]:
    """(hour, currency, amount_minor): the customer's lines summed per hour, in the
    database (at most one row per hour and currency, however many connections)."""
    total = func.sum(UsageLine.amount_minor).label("amount_minor")
    query = (
        select(UsageLine.hour, UsageLine.currency, total)
        .where(_window(customer_id, start, end))
        .group_by(UsageLine.hour, UsageLine.currency)
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


# The steady path (PostgreSQL): connections with no fact in the hour, active all of it at
# one tier, no quote, one price version the whole hour: one line of 3,600 s at the rate,
# claimed and written in one statement per batch (the exact-once claim is the same
# INSERT … ON CONFLICT DO NOTHING on usage_hours). Everything else goes through Python.
STEADY_SQL = text(
    """
WITH steady AS (
    SELECT c.id, c.customer_id, c.bandwidth_mbps, p.id AS price_id, p.currency,
           p.hourly_minor, p.monthly_cap_minor
    FROM connections c
    JOIN prices p ON p.location_id = c.location_id AND p.tier_mbps = c.bandwidth_mbps
                 AND p.effective_from <= :hour
    WHERE c.status = 'active' AND c.created_at < :hour AND c.id > :after
      AND NOT EXISTS (SELECT 1 FROM prices q WHERE q.location_id = p.location_id
                      AND q.tier_mbps = p.tier_mbps AND q.effective_from > p.effective_from
                      AND q.effective_from < :end)
      AND NOT EXISTS (SELECT 1 FROM status_transitions t
                      WHERE t.connection_id = c.id AND t.at >= :hour)
      AND NOT EXISTS (SELECT 1 FROM bandwidth_changes b WHERE b.connection_id = c.id
                      AND b.status = 'applied' AND b.applied_at >= :hour)
      AND NOT EXISTS (SELECT 1 FROM quotes u WHERE u.used_connection_id = c.id)
      AND NOT EXISTS (SELECT 1 FROM usage_hours h
                      WHERE h.connection_id = c.id AND h.hour = :hour)
    ORDER BY c.id
    LIMIT :limit
), claimed AS (
    INSERT INTO usage_hours (connection_id, hour, customer_id, amount_minor, rated_at)
    SELECT id, :hour, customer_id, hourly_minor, :now FROM steady
    ON CONFLICT DO NOTHING
    RETURNING connection_id
), lines AS (
    INSERT INTO usage_lines (connection_id, hour, customer_id, start_at, end_at, seconds,
                             tier_mbps, status, currency, hourly_minor, amount_minor,
                             monthly_cap_minor, source)
    SELECT s.id, :hour, s.customer_id, :hour, :end, 3600, s.bandwidth_mbps, 'active',
           s.currency, s.hourly_minor, s.hourly_minor, s.monthly_cap_minor,
           'price:' || s.price_id
    FROM steady s JOIN claimed c ON c.connection_id = s.id
), extended AS (
    UPDATE statement_intervals i
    SET end_at = :end, seconds = i.seconds + 3600, amount_minor = i.amount_minor + s.hourly_minor
    FROM steady s JOIN claimed c ON c.connection_id = s.id
    WHERE i.connection_id = s.id AND i.end_at = :hour AND i.month = :month
      AND i.tier_mbps = s.bandwidth_mbps AND i.status = 'active'
      AND i.hourly_minor = s.hourly_minor AND i.currency = s.currency
      AND i.source = 'price:' || s.price_id
    RETURNING i.connection_id
), started AS (
    INSERT INTO statement_intervals (customer_id, month, connection_id, tier_mbps, status,
                                     currency, hourly_minor, monthly_cap_minor, source,
                                     start_at, end_at, seconds, amount_minor)
    SELECT s.customer_id, :month, s.id, s.bandwidth_mbps, 'active', s.currency,
           s.hourly_minor, s.monthly_cap_minor, 'price:' || s.price_id, :hour, :end, 3600,
           s.hourly_minor
    FROM steady s JOIN claimed c ON c.connection_id = s.id
    WHERE s.id NOT IN (SELECT connection_id FROM extended)
)
SELECT count(*) AS found, max(id) AS last, (SELECT count(*) FROM claimed) AS rated
FROM steady
"""
)


def rate_steady(
    session: Session,
    hour: datetime,
    end: datetime,
    now: datetime,
    after: str,
    limit: int,
    month: str,
) -> tuple[int, str | None, int]:
    """(connections found, the last id, how many this call rated) of one steady batch; its
    lines extend the connections' statement intervals (or start them)."""
    row = session.execute(
        STEADY_SQL,
        {"hour": hour, "end": end, "now": now, "after": after, "limit": limit, "month": month},
    ).one()
    return int(row.found), row.last, int(row.rated)


# A statement's lines: consecutive usage lines of one connection with the same tier,
# status, rate and source are one interval ("islands": a new one starts where a line does
# not continue the previous one), summed in the database (PostgreSQL and SQLite window
# functions), so a month of a big customer is not carried into Python line by line.
STATEMENT_GROUPS_SQL = text(
    """
SELECT connection_id, tier_mbps, status, hourly_minor, currency, source,
       min(start_at) AS start_at, max(end_at) AS end_at, sum(seconds) AS seconds,
       sum(amount_minor) AS amount_minor, max(monthly_cap_minor) AS monthly_cap_minor
FROM (
    SELECT x.*, sum(brk) OVER (PARTITION BY connection_id ORDER BY start_at
                               ROWS UNBOUNDED PRECEDING) AS island
    FROM (
        SELECT l.*,
               CASE WHEN lag(end_at) OVER w = start_at AND lag(tier_mbps) OVER w = tier_mbps
                     AND lag(status) OVER w = status AND lag(source) OVER w = source
                     AND lag(hourly_minor) OVER w = hourly_minor
                    THEN 0 ELSE 1 END AS brk
        FROM usage_lines l
        WHERE customer_id = :customer AND hour >= :start AND hour < :end
        WINDOW w AS (PARTITION BY connection_id ORDER BY start_at)
    ) x
) y
GROUP BY connection_id, island, tier_mbps, status, hourly_minor, currency, source
ORDER BY connection_id, min(start_at)
"""
)


def statement_groups(
    session: Session, customer_id: str, start: datetime, end: datetime
) -> Sequence[Any]:
    # Typed parameters: bound as the column type stores them (SQLite compares text).
    statement = STATEMENT_GROUPS_SQL.bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    ).columns(start_at=UTCDateTime(), end_at=UTCDateTime())
    return session.execute(statement, {"customer": customer_id, "start": start, "end": end}).all()


def intervals_ending(session: Session, lo: str, hi: str, at: datetime, month: str) -> Sequence[Any]:
    """The statement intervals of a batch's connections that end where the hour starts."""
    query = select(StatementInterval).where(
        StatementInterval.connection_id.between(lo, hi),
        StatementInterval.end_at == at,
        StatementInterval.month == month,
    )
    return session.scalars(query).all()


def statement_intervals(session: Session, customer_id: str, month: str) -> Sequence[Any]:
    """A month's statement lines, as maintained by the rating (one row per interval)."""
    columns = [c for c in INTERVALS.c if c.name not in ("id", "customer_id", "month")]
    query = (
        select(*columns)
        .where(StatementInterval.customer_id == customer_id, StatementInterval.month == month)
        .order_by(StatementInterval.connection_id, StatementInterval.start_at)
    )
    return session.execute(query).all()
