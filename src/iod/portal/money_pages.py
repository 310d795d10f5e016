"""The portal's money pages: usage (a chart of cost per day and the month's lines) and the
monthly statements (the list, one statement, its CSV). Every role may read them; they read
through the billing services the API's `/usage` and `/statements` use, scoped to the user's
customer (another customer's statement is a 404). docs/portal.md, docs/money.md.

The prices on the order and change forms are portal/quotes.py (used by endpoints.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iod.billing import repository as billing_repository
from iod.billing import statements as statement_docs
from iod.domain import money
from iod.domain.bandwidth import format_bandwidth
from iod.domain.rating import HOUR
from iod.infra.errors import ValidationFailed, shown
from iod.portal import cost_chart, views
from iod.portal.endpoints import (
    SECURITY_HEADERS,
    PortalRoute,
    _read,
    _services,
    current_user,
    render,
)
from iod.portal.service import CurrentUser

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)
MONTH = re.compile(r"(20\d\d|21\d\d)-(0[1-9]|1[0-2])")


def _month(text: str, now: datetime) -> str:
    if not text:
        return statement_docs.month_of(now)
    if not MONTH.fullmatch(text):
        raise ValidationFailed.field("/month", f"{shown(text, 20)} is not a month such as 2026-11")
    return text


def _shift(month: str, by: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _time(value: str | datetime | None, zone: str) -> str:
    """An RFC 3339 text or a datetime, in the user's zone."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return views.local(moment, zone)


def usage_view(session: Session, customer_id: str, month: str) -> dict[str, Any]:
    """A month of the customer's rated usage as the page shows it: per currency a chart of
    the cost per UTC day, the month's lines (per connection, tier, status and rate) and the
    totals. The chart is summed in the database (`usage_per_hour`: a row per hour, not every
    hourly line), the lines are the statement's maintained intervals joined; integer minor
    units, nothing rounded."""
    start, end = statement_docs.month_bounds(month)
    per_day: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for row in billing_repository.usage_per_hour(session, customer_id, start, end):
        per_day[row.currency][row.hour.astimezone(UTC).date()] += int(row.amount_minor)
    fmt = money.format_minor
    charts = [
        {
            "currency": currency,
            "svg": cost_chart.cost_per_day_svg(
                start.date(), (end - start).days, days, currency, f"costs-{currency.lower()}"
            ),
            "days": [
                {"day": day.isoformat(), "amount": fmt(amount, currency)}
                for day, amount in sorted(days.items())
            ],
        }
        for currency, days in sorted(per_day.items())
    ]
    # The lines from the statement's intervals (maintained as hours are rated: one row per
    # connection and stretch), joined per connection, tier, status and rate.
    grouped: dict[tuple[str, int, str, int, str], list[int]] = {}
    for row in billing_repository.statement_intervals(session, customer_id, month):
        key = (row.connection_id, row.tier_mbps, row.status, row.hourly_minor, row.currency)
        entry = grouped.setdefault(key, [0, 0])
        entry[0] += int(row.seconds)
        entry[1] += int(row.amount_minor)
    lines = [
        {
            "connectionId": connection_id,
            "bandwidth": format_bandwidth(tier),
            "status": status,
            "hourlyRate": fmt(rate, currency),
            "currency": currency,
            "hours": cost_chart.hours(seconds),
            "amount": fmt(amount, currency),
        }
        for (connection_id, tier, status, rate, currency), (seconds, amount) in sorted(
            grouped.items()
        )
    ]
    totals = [
        {"currency": currency, "amount": fmt(sum(days.values()), currency)}
        for currency, days in sorted(per_day.items())
    ]
    last = billing_repository.last_metered_hour(session)
    return {
        "charts": charts,
        "lines": lines,
        "totals": totals,
        "rated_until": last + HOUR if last is not None else None,
    }


@router.get("/usage", response_class=HTMLResponse)
async def usage_page(request: Request, month: str = "") -> Response:
    user = await current_user(request)
    chosen = _month(month, _services(request).clock.now())
    data = await _read(request, lambda s: usage_view(s, user.customer_id, chosen))
    return render(
        request,
        "usage.html",
        user,
        month=chosen,
        previous=_shift(chosen, -1),
        following=_shift(chosen, 1),
        **data,
        rated_until_text=_time(data["rated_until"], user.time_zone),
    )


@router.get("/statements", response_class=HTMLResponse)
async def statements_page(request: Request) -> Response:
    user = await current_user(request)
    rows = await _read(
        request,
        lambda s: [
            {
                "id": x.id,
                "month": x.month,
                "status": x.status,
                "closed": _time(x.closed_at, user.time_zone),
            }
            for x in billing_repository.statements_of(s, user.customer_id)
        ],
    )
    return render(request, "statements.html", user, statements=rows)


async def _statement(request: Request, user: CurrentUser, statement_id: str) -> dict[str, Any]:
    """The statement's document, as the API's `GET /statements/{id}` answers it."""

    def read(session: Session) -> dict[str, Any]:
        found = statement_docs.get_for_customer(session, user.customer_id, statement_id)
        return statement_docs.view(session, found)

    return await _read(request, read)


@router.get("/statements/{statement_id}", response_class=HTMLResponse)
async def statement_page(request: Request, statement_id: str) -> Response:
    user = await current_user(request)
    doc = await _statement(request, user, statement_id)
    zone = user.time_zone
    lines = [
        {
            **line,
            "from": _time(line["from"], zone),
            "to": _time(line["to"], zone),
            "hours": cost_chart.hours(line["seconds"]),
        }
        for line in doc["lines"]
    ]
    return render(
        request,
        "statement.html",
        user,
        s=doc,
        lines=lines,
        period=(_time(doc["periodStart"], zone), _time(doc["periodEnd"], zone)),
        rated_until=_time(doc.get("ratedUntil"), zone),
        closed=_time(doc.get("closedAt"), zone),
    )


@router.get("/statements/{statement_id}/csv")
async def statement_csv(request: Request, statement_id: str) -> Response:
    """The same CSV as the API's `GET /statements/{id}` with `Accept: text/csv`."""
    user = await current_user(request)
    doc = await _statement(request, user, statement_id)
    return Response(
        statement_docs.to_csv(doc),
        media_type="text/csv; charset=utf-8",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="statement-{doc["month"]}.csv"',
        },
    )
