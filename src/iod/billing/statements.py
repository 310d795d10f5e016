"""Statements: one per customer and calendar month (UTC), built from the rated lines.

Open while the month runs (read live from the usage lines); closed once every hour of the
month is rated: its document is then written once, with the `statement.closed` event, and
never changed again (later price versions or quotes cannot reach it). Lines are the
connection's stretches of one tier, status and rate (consecutive hourly lines joined). The
monthly cap applies per connection and tier: when what a tier cost a connection in the
month exceeds the cap of the rate it was billed at (the last line's), an adjustment line
brings it down to the cap.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from iod import events
from iod.billing import repository
from iod.domain import money
from iod.domain.bandwidth import format_bandwidth
from iod.domain.rating import HOUR
from iod.infra.clock import rfc3339
from iod.infra.db import insert_new
from iod.infra.errors import NotFound, shown
from iod.infra.ids import looks_like_id, new_id
from iod.models import Statement

OPEN = "open"
CLOSED = "closed"
CLOSE_PER_RUN = 1000


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def ensure(session: Session, customer_id: str, month: str, now: datetime) -> None:
    """The customer's statement of the month exists (open) from its first rated line."""
    insert_new(
        session,
        repository.STATEMENTS,
        {
            "id": new_id("stm"),
            "customer_id": customer_id,
            "month": month,
            "status": OPEN,
            "created_at": now,
            "closed_at": None,
            "document": None,
        },
    )


def ensure_all(session: Session, customer_ids: Sequence[str], month: str, now: datetime) -> None:
    """`ensure` for many customers in one statement (INSERT … ON CONFLICT DO NOTHING)."""
    if not customer_ids:
        return
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    rows = [
        {"id": new_id("stm"), "customer_id": c, "month": month, "status": OPEN,
         "created_at": now, "closed_at": None, "document": None}
        for c in customer_ids
    ]  # fmt: skip
    for at in range(0, len(rows), 1000):  # within every database's bound parameters
        chunk = rows[at : at + 1000]
        session.execute(insert(repository.STATEMENTS).values(chunk).on_conflict_do_nothing())


def _source(line: Any) -> dict[str, Any]:
    kind, _, ident = line.source.partition(":")
    return {"rateSource": kind, "quoteId": ident if kind == "quote" else None}


def group_lines(lines: Sequence[Any]) -> list[dict[str, Any]]:
    """Consecutive lines of one connection with the same tier, status and rate, joined:
    each result has the minor-unit `amount_minor` beside the formatted fields."""
    out: list[dict[str, Any]] = []
    key_of_last: tuple[Any, ...] | None = None
    for line in lines:  # by connection, then start
        key = (line.connection_id, line.tier_mbps, line.status, line.hourly_minor,
               line.currency, line.source)  # fmt: skip
        if out and key == key_of_last and out[-1]["_end"] == line.start_at:
            last = out[-1]
            last["_end"] = line.end_at
            last["seconds"] += line.seconds
            last["amount_minor"] += line.amount_minor
            last["_cap"] = line.monthly_cap_minor
            continue
        key_of_last = key
        out.append(
            {
                "connectionId": line.connection_id,
                "bandwidth": format_bandwidth(line.tier_mbps),
                "status": line.status,
                "_start": line.start_at,
                "_end": line.end_at,
                "seconds": line.seconds,
                "currency": line.currency,
                "hourly_minor": line.hourly_minor,
                "amount_minor": line.amount_minor,
                "_cap": line.monthly_cap_minor,
                "_tier": line.tier_mbps,
                **_source(line),
            }
        )
    return out


def from_groups(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """`group_lines`' result from the database's grouping (`repository.statement_groups`)."""
    return [
        {
            "connectionId": row.connection_id,
            "bandwidth": format_bandwidth(row.tier_mbps),
            "status": row.status,
            "_start": row.start_at,
            "_end": row.end_at,
            "seconds": int(row.seconds),
            "currency": row.currency,
            "hourly_minor": row.hourly_minor,
            "amount_minor": int(row.amount_minor),
            "_cap": row.monthly_cap_minor,
            "_tier": row.tier_mbps,
            **_source(row),
        }
        for row in rows
    ]


def cap_adjustments(grouped: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per connection, tier and currency: the part above the monthly cap, taken off."""
    totals: dict[tuple[str, int, str], list[int | None]] = {}
    for line in grouped:
        key = (line["connectionId"], line["_tier"], line["currency"])
        entry = totals.setdefault(key, [0, None])
        entry[0] = int(entry[0] or 0) + line["amount_minor"]
        entry[1] = line["_cap"]  # the last line's cap: the rate billed last
    out = []
    for (connection_id, tier, currency), (total, cap) in totals.items():
        assert total is not None
        if cap is not None and total > cap:
            out.append(
                {
                    "connectionId": connection_id,
                    "bandwidth": format_bandwidth(tier),
                    "currency": currency,
                    "monthlyCap": money.format_minor(cap, currency),
                    "amount_minor": cap - total,
                }
            )
    return out


def document(
    statement: Statement, grouped: Sequence[dict[str, Any]], as_of: datetime | None
) -> dict[str, Any]:
    """`grouped`: the month's lines joined into intervals (`group_lines`, `from_groups`)."""
    start, end = month_bounds(statement.month)
    adjustments = cap_adjustments(grouped)
    usage: dict[str, int] = defaultdict(int)
    capped: dict[str, int] = defaultdict(int)
    for line in grouped:
        usage[line["currency"]] += line["amount_minor"]
    for adj in adjustments:
        capped[adj["currency"]] += adj["amount_minor"]
    fmt = money.format_minor
    return {
        "id": statement.id,
        "month": statement.month,
        "status": statement.status,
        "periodStart": rfc3339(start),
        "periodEnd": rfc3339(end),
        "ratedUntil": rfc3339(as_of) if as_of is not None else None,
        "closedAt": rfc3339(statement.closed_at) if statement.closed_at else None,
        "lines": [
            {
                "connectionId": g["connectionId"],
                "bandwidth": g["bandwidth"],
                "status": g["status"],
                "from": rfc3339(g["_start"]),
                "to": rfc3339(g["_end"]),
                "seconds": g["seconds"],
                "hourlyRate": fmt(g["hourly_minor"], g["currency"]),
                "currency": g["currency"],
                "amount": fmt(g["amount_minor"], g["currency"]),
                "rateSource": g["rateSource"],
                "quoteId": g["quoteId"],
            }
            for g in grouped
        ],
        "capAdjustments": [
            {k: v for k, v in adj.items() if k != "amount_minor"}
            | {"amount": fmt(adj["amount_minor"], adj["currency"])}
            for adj in adjustments
        ],
        "totals": [
            {
                "currency": currency,
                "usage": fmt(usage[currency], currency),
                "capAdjustment": fmt(capped[currency], currency),
                "amount": fmt(usage[currency] + capped[currency], currency),
            }
            for currency in sorted(usage)
        ],
    }


def maintained(session: Session, statement: Statement) -> list[dict[str, Any]]:
    """The month's intervals as the rating maintained them (`metering.extend_intervals`);
    `recomputed` builds the same from the hourly lines (the reference, for checks)."""
    return from_groups(
        repository.statement_intervals(session, statement.customer_id, statement.month)
    )


def recomputed(session: Session, customer_id: str, month: str) -> list[dict[str, Any]]:
    start, end = month_bounds(month)
    return from_groups(repository.statement_groups(session, customer_id, start, end))


def view(session: Session, statement: Statement) -> dict[str, Any]:
    if statement.status == CLOSED and statement.document is not None:
        return statement.document
    last = repository.last_metered_hour(session)
    return document(statement, maintained(session, statement), last + HOUR if last else None)


def close_due(session: Session, now: datetime) -> int:
    """Closes the open statements of months whose every hour is rated."""
    last = repository.last_metered_hour(session)
    if last is None:
        return 0
    first_unrated_month = month_of(last + HOUR)
    closing = repository.open_statements_before(session, first_unrated_month, CLOSE_PER_RUN)
    for statement in closing:
        statement.status = CLOSED
        statement.closed_at = now
        _, end = month_bounds(statement.month)
        statement.document = document(statement, maintained(session, statement), end)
        events.record(
            session,
            "statement.closed",
            customer_id=statement.customer_id,
            subject_id=statement.id,
            at=now,
            statementId=statement.id,
            month=statement.month,
            totals=statement.document["totals"],
        )
    session.flush()
    return len(closing)


def get_for_customer(session: Session, customer_id: str, statement_id: str) -> Statement:
    statement = (
        repository.statement_for_customer(session, customer_id, statement_id)
        if looks_like_id(statement_id)
        else None
    )
    if statement is None:
        raise NotFound(f"no statement {shown(statement_id)}")
    return statement


CSV_HEADER = ("connectionId", "bandwidth", "status", "from", "to", "seconds", "hourlyRate",
              "currency", "amount", "rateSource", "quoteId")  # fmt: skip


def to_csv(doc: dict[str, Any]) -> str:
    """The lines, then the cap adjustments and the totals as rows of their own."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for line in doc["lines"]:
        writer.writerow(
            [line.get(name) if line.get(name) is not None else "" for name in CSV_HEADER]
        )
    for adj in doc["capAdjustments"]:
        writer.writerow([adj["connectionId"], adj["bandwidth"], "monthly_cap", "", "", "", "",
                         adj["currency"], adj["amount"], "cap", ""])  # fmt: skip
    for total in doc["totals"]:
        writer.writerow(["TOTAL", "", "", doc["periodStart"], doc["periodEnd"], "", "",
                         total["currency"], total["amount"], "", ""])  # fmt: skip
    return out.getvalue()
