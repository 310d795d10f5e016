"""Hourly metering: every connection hour rated exactly once from the worker's facts.

An hour H is rated once it has ended and `IOD_METERING_SETTLE_SECONDS` more have passed (a
fact recorded at 09:59:59 may commit a moment later). Hours are taken in order from the one
after the last complete hour (`metered_hours`), so days of downtime are caught up hour by
hour. For each hour the connections still unrated are read in batches; each batch's
`usage_hours` rows are inserted with ON CONFLICT DO NOTHING … RETURNING and only the
connections whose row was inserted get their lines: a second worker rating the same batch
(PostgreSQL waits on the first's uncommitted rows, then skips them) or a rerun after a crash
(the transaction rolled back: nothing was written) never rates an hour twice. When no
connection is left, the hour is complete: its row in `metered_hours` (inserted once) and
the `usage.rated` event of each customer billed in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from iod import events
from iod.billing import repository, statements
from iod.domain import money
from iod.domain.rating import HOUR, Facts, Rate, floor_hour, rate_hour
from iod.infra.clock import rfc3339
from iod.infra.db import insert_new
from iod.models import Price, Quote

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dialect_insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
    return dialect_insert


def price_rates(prices: Sequence[Price]) -> dict[tuple[str, int], list[Rate]]:
    book: dict[tuple[str, int], list[Rate]] = defaultdict(list)
    for p in prices:  # in effective order
        book[(p.location_id, p.tier_mbps)].append(
            Rate(p.effective_from, p.hourly_minor, p.currency, p.monthly_cap_minor, f"price:{p.id}")
        )
    return dict(book)


def quote_rate(quote: Quote) -> Rate:
    return Rate(
        EPOCH, quote.hourly_minor, quote.currency, quote.monthly_cap_minor, f"quote:{quote.id}"
    )


def load_facts(session: Session, rows: Sequence[Any], end: datetime) -> list[tuple[Any, Facts]]:
    """The facts of a batch of connections, in three queries."""
    lo, hi = rows[0].id, rows[-1].id  # `rows` are ordered by id
    transitions: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for t in repository.transitions_of(session, lo, hi, end):
        transitions[t.connection_id].append((t.at, t.to_status))
    changes: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    ordered: dict[str, int] = {}
    for c in repository.applied_changes_of(session, lo, hi):
        if c.applied_at is None:
            continue
        if c.connection_id not in ordered and c.from_mbps is not None:
            ordered[c.connection_id] = c.from_mbps
        changes[c.connection_id].append((c.applied_at, c.to_mbps, c.id))
    quotes: dict[str, dict[str | None, Rate]] = defaultdict(dict)
    for q in repository.quotes_used_by(session, lo, hi):
        assert q.used_connection_id is not None
        quotes[q.used_connection_id][q.used_change_id] = quote_rate(q)
    return [
        (
            row,
            Facts(
                row.id,
                row.location_id,
                ordered.get(row.id, row.bandwidth_mbps),
                transitions[row.id],
                changes[row.id],
                quotes[row.id],
            ),
        )
        for row in rows
    ]


def rate_batch(
    session: Session,
    hour: datetime,
    rows: Sequence[Any],
    book: dict[tuple[str, int], list[Rate]],
    fraction: Decimal,
    now: datetime,
) -> int:
    """Rates `hour` for these connections (those another worker has not rated first);
    returns how many this call rated."""
    end = hour + HOUR
    rated = []
    for row, facts in load_facts(session, rows, end):
        lines = rate_hour(facts, hour, book, fraction)
        rated.append((row, lines))
    if not rated:
        return 0
    dialect_insert = _dialect_insert(session)
    claim = (
        dialect_insert(repository.USAGE_HOURS)
        .on_conflict_do_nothing()
        .returning(repository.USAGE_HOURS.c.connection_id)
    )
    inserted = set(
        session.scalars(
            claim,
            [
                {
                    "connection_id": row.id,
                    "hour": hour,
                    "customer_id": row.customer_id,
                    "amount_minor": sum(line.amount_minor for line in lines),
                    "rated_at": now,
                }
                for row, lines in rated
            ],
        ).all()
    )
    values = [
        {
            "connection_id": row.id,
            "hour": hour,
            "customer_id": row.customer_id,
            "start_at": line.start,
            "end_at": line.end,
            "seconds": line.seconds,
            "tier_mbps": line.mbps,
            "status": line.status,
            "currency": line.rate.currency,
            "hourly_minor": line.rate.hourly_minor,
            "amount_minor": line.amount_minor,
            "monthly_cap_minor": line.rate.monthly_cap_minor,
            "source": line.rate.source,
        }
        for row, lines in rated
        if row.id in inserted
        for line in lines
    ]
    if values:
        session.execute(insert(repository.USAGE_LINES), values)
        extend_intervals(session, hour, values)
    return len(inserted)


_INTERVAL_KEY = ("tier_mbps", "status", "hourly_minor", "currency", "source")


def extend_intervals(session: Session, hour: datetime, lines: list[dict[str, Any]]) -> None:
    """The statement intervals after these lines (in connection and time order): a line
    that continues its connection's interval (same tier, status, rate and source, starting
    where it ends, in the same month) extends it; any other starts one."""
    month = statements.month_of(hour)
    ids = [line["connection_id"] for line in lines]
    current: dict[str, dict[str, Any]] = {}
    for row in repository.intervals_ending(session, min(ids), max(ids), hour, month):
        current[row.connection_id] = {
            "id": row.id, "end_at": row.end_at, "seconds": row.seconds,
            "amount_minor": row.amount_minor, **{k: getattr(row, k) for k in _INTERVAL_KEY},
        }  # fmt: skip
    changed: dict[int, dict[str, Any]] = {}
    started: list[dict[str, Any]] = []
    for line in lines:
        interval = current.get(line["connection_id"])
        if (
            interval is not None
            and interval["end_at"] == line["start_at"]
            and all(interval[k] == line[k] for k in _INTERVAL_KEY)
        ):
            interval["end_at"] = line["end_at"]
            interval["seconds"] += line["seconds"]
            interval["amount_minor"] += line["amount_minor"]
            if interval.get("id") is not None:
                changed[interval["id"]] = interval
            continue
        interval = {
            "customer_id": line["customer_id"], "month": month,
            "connection_id": line["connection_id"], "monthly_cap_minor": line["monthly_cap_minor"],
            "start_at": line["start_at"], "end_at": line["end_at"], "seconds": line["seconds"],
            "amount_minor": line["amount_minor"], **{k: line[k] for k in _INTERVAL_KEY},
        }  # fmt: skip
        started.append(interval)
        current[line["connection_id"]] = interval
    if changed:
        table = repository.INTERVALS
        session.execute(
            update(table)
            .where(table.c.id == bindparam("interval_id"))
            .values(
                end_at=bindparam("new_end"),
                seconds=bindparam("new_seconds"),
                amount_minor=bindparam("new_amount"),
            ),
            [
                {"interval_id": i, "new_end": v["end_at"], "new_seconds": v["seconds"],
                 "new_amount": v["amount_minor"]}
                for i, v in changed.items()
            ],
        )  # fmt: skip
    if started:
        session.execute(insert(repository.INTERVALS), started)


def complete_hour(session: Session, hour: datetime, now: datetime) -> bool:
    """Marks the hour rated for everyone (once) with each billed customer's event."""
    if not insert_new(session, repository.METERED_HOURS, {"hour": hour, "completed_at": now}):
        return False
    per_customer: dict[str, list[Any]] = defaultdict(list)
    for row in repository.hour_totals_by_customer(session, hour):
        per_customer[row.customer_id].append(row)
    statements.ensure_all(session, sorted(per_customer), statements.month_of(hour), now)
    for customer_id, rows in per_customer.items():
        events.record(
            session,
            "usage.rated",
            customer_id=customer_id,
            subject_id=customer_id,
            at=now,
            hour=rfc3339(hour),
            totals=[
                {"currency": r.currency, "amount": money.format_minor(int(r.amount), r.currency)}
                for r in rows
            ],
            connections=max(int(r.connections) for r in rows),
        )
    return True


def rate_due(
    session: Session,
    now: datetime,
    *,
    fraction: Decimal,
    settle_seconds: int,
    batch: int,
    budget: int,
) -> int:
    """Rates the hours due, oldest first, up to `budget` connection-hours; returns how many
    were rated. Closes the statements of months whose every hour is rated."""
    limit = floor_hour(now - timedelta(seconds=settle_seconds))  # hours before it have ended
    last = repository.last_metered_hour(session)
    if last is not None:
        hour = last + HOUR
    else:
        first = repository.first_connection_at(session)
        if first is None:
            return 0
        hour = floor_hour(first)
    book = price_rates(repository.all_prices(session))
    done = stalls = 0
    after = ""  # within an hour, each batch starts after the last one (no rescans)
    steady = session.get_bind().dialect.name == "postgresql"
    while hour < limit and done < budget:
        if steady:  # the connections with nothing to split, in SQL (PostgreSQL)
            found, last_id, rated = repository.rate_steady(
                session, hour, hour + HOUR, now, after, min(batch, budget - done),
                statements.month_of(hour),
            )  # fmt: skip
            done += rated
            if found:
                after = last_id or after
                continue
            steady, after = False, ""  # then the rest, through Python
        rows = repository.unrated(session, hour, hour + HOUR, min(batch, budget - done), after)
        if rows:
            rated = rate_batch(session, hour, rows, book, fraction, now)
            done += rated
            after = rows[-1].id
            if rated == 0:  # another worker took them all: read on (they are gone)
                stalls += 1
                if stalls > 3:
                    break
            continue
        if after:  # once more from the start: what another worker gave back (rolled back)
            after = ""
            continue
        complete_hour(session, hour, now)
        hour += HOUR
        steady = session.get_bind().dialect.name == "postgresql"
    statements.close_due(session, now)
    return done
