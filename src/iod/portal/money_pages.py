"""The portal's money pages: usage (a chart of cost per day and the month's lines) and the
monthly statements (the list, one statement, its CSV). Every role may read them; they read
through the billing services the API's `/usage` and `/statements` use, scoped to the user's
customer (another customer's statement is a 404). docs/portal.md, docs/money.md.

The prices on the order and change forms are portal/quotes.py (used by endpoints.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iod.billing import repository as billing_repository
from iod.billing import statements as statement_docs
from iod.billing import usage as usage_service
from iod.domain import money
from iod.infra.errors import ValidationFailed
from iod.portal import cost_chart, views
from iod.portal.endpoints import SECURITY_HEADERS, PortalRoute, _read, current_user, render
from iod.portal.service import CurrentUser

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)
MONTH = re.compile(r"(20\d\d|21\d\d)-(0[1-9]|1[0-2])")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _month(text: str, now: datetime) -> str:
    if not text:
        return statement_docs.month_of(now)
    if not MONTH.fullmatch(text):
        raise ValidationFailed.field("/month", f"{text[:20]!r} is not a month such as 2026-11")
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


def usage_view(data: dict[str, Any], month: str) -> dict[str, Any]:
    """The usage answer by day (`granularity=day`) as the page shows it: per currency a
    chart of the cost per day, the month's lines (per connection, tier, status and rate:
    the days summed, nothing rounded again) and the total."""
    start, end = statement_docs.month_bounds(month)
    days = (end - start).days
    per_day: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    grouped: dict[tuple[str, str, str, str, str], list[int]] = {}
    for line in data["lines"]:
        currency = line["currency"]
        amount = cost_chart.minor(line["amount"], currency)
        per_day[currency][line["periodStart"].astimezone(UTC).date()] += amount
        key = (line["connectionId"], line["bandwidth"], line["status"], line["hourlyRate"],
               currency)  # fmt: skip
        entry = grouped.setdefault(key, [0, 0])
        entry[0] += line["seconds"]
        entry[1] += amount
    charts = [
        {
            "currency": currency,
            "svg": cost_chart.cost_per_day_svg(
                start.date(), days, per_day[currency], currency, f"costs-{currency.lower()}"
            ),
            "days": [
                {"day": day.isoformat(), "amount": money.format_minor(amount, currency)}
                for day, amount in sorted(per_day[currency].items())
            ],
        }
        for currency in sorted(per_day)
    ]
    lines = [
        {
            "connectionId": key[0],
            "bandwidth": key[1],
            "status": key[2],
            "hourlyRate": key[3],
            "currency": key[4],
            "hours": cost_chart.hours(seconds),
            "amount": money.format_minor(amount, key[4]),
        }
        for key, (seconds, amount) in sorted(grouped.items())
    ]
    return {"charts": charts, "lines": lines, "totals": data["totals"]}


@router.get("/usage", response_class=HTMLResponse)
async def usage_page(request: Request, month: str = "") -> Response:
    user = await current_user(request)
    services = _services(request)
    chosen = _month(month, services.clock.now())
    start, end = statement_docs.month_bounds(chosen)

    def read(session: Session) -> dict[str, Any]:
        return usage_service.usage(session, user.principal, start, end, None, "day")

    data = await _read(request, read)
    return render(
        request,
        "usage.html",
        user,
        month=chosen,
        previous=_shift(chosen, -1),
        following=_shift(chosen, 1),
        rated_until=_time(data["ratedUntil"], user.time_zone),
        **usage_view(data, chosen),
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
