"""Typed views and request helpers of the money operations: the catalog, quotes, usage and
statements (docs/money.md). Amounts are decimal strings on the wire, `Decimal` here."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field

from iod.client._common import API, aware
from iod.client.models import Model

LOCATIONS = f"{API}/locations"
QUOTES = f"{API}/quotes"
USAGE = f"{API}/usage"
STATEMENTS = f"{API}/statements"


class Price(Model):
    hourly_rate: Decimal
    currency: str
    monthly_cap: Decimal | None = None
    effective_from: datetime | None = None


class TierOffer(Model):
    bandwidth: str
    orderable: bool
    price: Price | None = None


class CatalogLocation(Model):
    """A location you may order at: its tiers, whether each fits now, their prices."""

    id: str
    name: str
    address: str
    available_capacity: str
    tiers: list[TierOffer] = Field(default_factory=list)


class Quote(Model):
    """A price for 15 minutes: pass `id` as `quote_id` when ordering or changing."""

    id: str
    location_id: str
    connection_id: str | None = None
    bandwidth: str
    currency: str
    hourly_rate: Decimal
    estimated_daily_cost: Decimal
    estimated_monthly_cost: Decimal
    monthly_cap: Decimal | None = None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class UsageLine(Model):
    connection_id: str
    period_start: datetime
    bandwidth: str
    status: str
    seconds: int
    hourly_rate: Decimal
    currency: str
    amount: Decimal


class Total(Model):
    currency: str
    amount: Decimal


class Usage(Model):
    granularity: str
    rated_until: datetime | None = None
    lines: list[UsageLine] = Field(default_factory=list)
    totals: list[Total] = Field(default_factory=list)


class StatementSummary(Model):
    id: str
    month: str
    status: str
    closed_at: datetime | None = None


class Statement(StatementSummary):
    """A month's statement: `lines`, `cap_adjustments` and `totals` as the API sends them."""

    lines: list[dict[str, Any]] = Field(default_factory=list)
    cap_adjustments: list[dict[str, Any]] = Field(default_factory=list)
    totals: list[dict[str, Any]] = Field(default_factory=list)


def quote_body(
    bandwidth: str,
    location_id: str | None,
    connection_id: str | None,
    effective_date: datetime | str | None,
    revert_at: datetime | str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"bandwidth": bandwidth}
    if location_id is not None:
        body["locationId"] = location_id
    if connection_id is not None:
        body["connectionId"] = connection_id
    if effective_date is not None:
        body["effectiveDate"] = aware(effective_date, "effective_date")
    if revert_at is not None:
        body["revertAt"] = aware(revert_at, "revert_at")
    return body


MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def usage_params(
    start: datetime | str | None,
    end: datetime | str | None,
    connection_id: str | None,
    granularity: str,
    month: str | None,
) -> dict[str, Any]:
    """`month` ("2026-11") is the calendar month in UTC, instead of `start`/`end`."""
    params: dict[str, Any] = {"granularity": granularity}
    if month is not None:
        if MONTH.fullmatch(month) is None:
            raise ValueError(f"month must be a year and month, e.g. 2026-11, not {month!r}")
        year, number = (int(part) for part in month.split("-", 1))
        params["from"] = f"{year:04d}-{number:02d}-01T00:00:00Z"
        following = (year + number // 12, number % 12 + 1)
        params["to"] = f"{following[0]:04d}-{following[1]:02d}-01T00:00:00Z"
    if start is not None:
        params["from"] = aware(start, "start")
    if end is not None:
        params["to"] = aware(end, "end")
    if connection_id is not None:
        params["connectionId"] = connection_id
    return params
