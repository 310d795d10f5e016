"""The price book, the customer catalog and quotes. Services flush; the edge commits."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from iod import events
from iod.auth.tokens import Principal
from iod.billing import repository
from iod.domain import money
from iod.domain.bandwidth import BandwidthError, format_bandwidth, parse_bandwidth
from iod.domain.capacity import fits
from iod.domain.status import ConnectionStatus, accepts_changes
from iod.domain.tiers import is_offered
from iod.infra.clock import Clock, rfc3339
from iod.infra.errors import Conflict, FieldError, InvalidState, NotFound, ValidationFailed, shown
from iod.infra.ids import looks_like_id, new_id
from iod.locations import repository as locations
from iod.models import Connection, Location, Price, Quote

# --- the price book ----------------------------------------------------------------------


class PriceIn(BaseModel):
    """One price version as imported (JSON object or CSV row)."""

    model_config = ConfigDict(extra="forbid")

    locationId: str = Field(min_length=1, max_length=64)
    bandwidth: str
    currency: str
    hourlyRate: str
    monthlyCap: str | None = None
    effectiveFrom: AwareDatetime | None = None


CSV_COLUMNS = ("locationId", "bandwidth", "currency", "hourlyRate", "monthlyCap", "effectiveFrom")


def read_price_file(name: str, text: str) -> list[Any]:
    """The rows of a price file: JSON (a list, or {"prices": [...]}) or CSV with a header
    of `CSV_COLUMNS` (monthlyCap and effectiveFrom may be empty). A byte-order mark (a
    spreadsheet's UTF-8 export) is not part of the first column's name."""
    text = text.removeprefix("\ufeff")
    if name.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        header = list(reader.fieldnames or ())
        unknown = set(header) - set(CSV_COLUMNS)
        if unknown or not header:
            raise ValidationFailed(
                f"a price CSV has the header {','.join(CSV_COLUMNS)}; unknown columns: "
                f"{', '.join(sorted(unknown)) or 'no header'}"
            )
        twice = sorted({column for column in header if header.count(column) > 1})
        if twice:
            raise ValidationFailed(f"a price CSV names each column once: {', '.join(twice)}")
        rows = []
        for index, row in enumerate(reader):
            if None in row:  # DictReader's key for the fields beyond the header's
                raise ValidationFailed(
                    f"row {index + 1} of the price CSV has more fields than its header",
                    errors=[FieldError(f"/{index}", "more fields than the header")],
                )
            rows.append({k: v for k, v in row.items() if v not in (None, "")})
        if not rows:
            raise ValidationFailed("the price CSV has a header and no rows")
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{name} is neither CSV (by its name) nor JSON: {exc}") from exc
    if isinstance(data, dict) and "prices" in data:
        data = data["prices"]
    if not isinstance(data, list):
        raise ValidationFailed('a price file is a JSON list of prices (or {"prices": [...]})')
    return data


def parse_prices(
    session: Session, rows: list[Any], now: datetime
) -> list[tuple[Location, int, PriceIn, int, int | None, datetime]]:
    """Validated rows: (location, tier, row, hourly minor, cap minor, effective from). Every
    error is collected with a pointer `/<row>/<field>`; none is stored if any."""
    parsed = []
    errors: list[FieldError] = []
    for index, item in enumerate(rows):
        try:
            row = PriceIn.model_validate(item)
        except ValidationError as exc:
            for problem in exc.errors():
                where = "/".join(str(part) for part in problem["loc"])
                errors.append(FieldError(f"/{index}/{where}".rstrip("/"), problem["msg"]))
            continue
        location = locations.get(session, row.locationId)
        if location is None:
            errors.append(
                FieldError(f"/{index}/locationId", f"unknown location {row.locationId!r}")
            )
            continue
        try:
            tier = parse_bandwidth(row.bandwidth)
        except BandwidthError as exc:
            errors.append(FieldError(f"/{index}/bandwidth", str(exc)))
            continue
        if not is_offered(tier, location.tiers_mbps):
            errors.append(
                FieldError(
                    f"/{index}/bandwidth",
                    f"{format_bandwidth(tier)} is not offered at {location.id}",
                )
            )
            continue
        try:
            currency = money.check_currency(row.currency)
        except money.MoneyError as exc:
            errors.append(FieldError(f"/{index}/currency", str(exc)))
            continue
        amounts: list[int | None] = []
        for field in ("hourlyRate", "monthlyCap"):
            value = getattr(row, field)
            try:
                amounts.append(None if value is None else money.to_minor(value, currency))
            except money.MoneyError as exc:
                errors.append(FieldError(f"/{index}/{field}", str(exc)))
        if len(amounts) < 2:
            continue
        hourly, cap = amounts
        assert hourly is not None
        if hourly <= 0:
            errors.append(FieldError(f"/{index}/hourlyRate", "must be more than zero"))
            continue
        if cap is not None and cap < hourly:
            errors.append(FieldError(f"/{index}/monthlyCap", "must be at least one hour's rate"))
            continue
        try:
            effective = (row.effectiveFrom or now).astimezone(UTC).replace(microsecond=0)
        except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
            errors.append(FieldError(f"/{index}/effectiveFrom", "is out of the years 1 to 9999"))
            continue
        parsed.append((location, tier, row, hourly, cap, effective))
    if errors:
        raise ValidationFailed("the price file has invalid entries", errors=errors)
    return parsed


def import_prices(session: Session, clock: Clock, rows: list[Any]) -> tuple[int, int]:
    """Adds price versions; returns (added, unchanged). A version that exists with the same
    values is left alone; one with other values is refused: a version is never rewritten
    (rated usage keeps the rate it was rated at anyway)."""
    now = clock.now()
    added = unchanged = 0
    seen: set[tuple[str, int, datetime]] = set()
    for index, (location, tier, row, hourly, cap, effective) in enumerate(
        parse_prices(session, rows, now)
    ):
        key = (location.id, tier, effective)
        if key in seen:
            raise ValidationFailed.field(f"/{index}", "the file has this version twice")
        seen.add(key)
        known = repository.price_version(session, location.id, tier, effective)
        if known is not None:
            if (known.currency, known.hourly_minor, known.monthly_cap_minor) == (
                row.currency,
                hourly,
                cap,
            ):
                unchanged += 1
                continue
            raise ValidationFailed.field(
                f"/{index}/effectiveFrom",
                f"a different price of {format_bandwidth(tier)} at {location.id} is in the book "
                f"from {rfc3339(effective)}; versions are never rewritten: add a later one",
            )
        session.add(
            Price(
                id=new_id("prc"),
                location_id=location.id,
                tier_mbps=tier,
                currency=row.currency,
                hourly_minor=hourly,
                monthly_cap_minor=cap,
                effective_from=effective,
                created_at=now,
            )
        )
        added += 1
    session.flush()
    return added, unchanged


def describe_price(price: Price) -> dict[str, Any]:
    return {
        "id": price.id,
        "locationId": price.location_id,
        "bandwidth": format_bandwidth(price.tier_mbps),
        "currency": price.currency,
        "hourlyRate": money.format_minor(price.hourly_minor, price.currency),
        "monthlyCap": (
            None
            if price.monthly_cap_minor is None
            else money.format_minor(price.monthly_cap_minor, price.currency)
        ),
        "effectiveFrom": rfc3339(price.effective_from),
    }


def in_force(prices: Sequence[Price], at: datetime) -> dict[tuple[str, int], Price]:
    """The version in force at `at` per (location, tier), from versions in effective order."""
    current: dict[tuple[str, int], Price] = {}
    for price in prices:
        if price.effective_from <= at:
            current[(price.location_id, price.tier_mbps)] = price
    return current


# --- the customer catalog ----------------------------------------------------------------


def price_fields(price: Price | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "hourlyRate": money.format_minor(price.hourly_minor, price.currency),
        "currency": price.currency,
        "monthlyCap": (
            None
            if price.monthly_cap_minor is None
            else money.format_minor(price.monthly_cap_minor, price.currency)
        ),
        "effectiveFrom": price.effective_from,
    }


def catalog_entry(location: Location, prices: dict[tuple[str, int], Price]) -> dict[str, Any]:
    """A location as a customer sees it: tiers, whether each fits the capacity left (the
    one capacity rule, `domain.capacity.fits`), and its price now."""
    return {
        "id": location.id,
        "name": location.name,
        "address": location.address,
        "tiers": [
            {
                "bandwidth": format_bandwidth(tier),
                "orderable": fits(location.capacity_mbps, location.committed_mbps, tier),
                "price": price_fields(prices.get((location.id, tier))),
            }
            for tier in location.tiers_mbps
        ],
        "availableCapacity": _bandwidth_or_zero(location.capacity_mbps - location.committed_mbps),
    }


def _bandwidth_or_zero(mbps: int) -> str:
    return format_bandwidth(mbps) if mbps > 0 else "0 Mbps"


def catalog(session: Session, clock: Clock) -> list[dict[str, Any]]:
    rows = locations.list_all(session)
    prices = in_force(repository.all_prices(session), clock.now())
    return [catalog_entry(location, prices) for location in rows]


def catalog_location(session: Session, clock: Clock, location_id: str) -> dict[str, Any]:
    location = locations.get(session, location_id) if len(location_id) <= 64 else None
    if location is None:
        raise NotFound(f"no location {shown(location_id)}")
    prices = in_force(repository.prices_of(session, [location.id]), clock.now())
    return catalog_entry(location, prices)


# --- quotes ------------------------------------------------------------------------------


# Both are `/problems/conflict` (a valid request not possible now), `detail` says why.
NotPriced = Conflict
QuoteUnusable = Conflict


def create_quote(
    session: Session,
    clock: Clock,
    principal: Principal,
    *,
    location_id: str | None,
    connection_id: str | None,
    bandwidth: str,
    effective: datetime | None,
    revert_at: datetime | None,
    ttl_seconds: int,
    max_schedule_days: int,
) -> Quote:
    """`max_schedule_days`: how far ahead a change's times may be (`IOD_MAX_SCHEDULE_DAYS`),
    checked as `PUT …/bandwidth` checks them."""
    now = clock.now()
    if (location_id is None) == (connection_id is None):
        raise ValidationFailed(
            "a quote is for a new connection (locationId) or a change (connectionId): give one",
            errors=[
                FieldError("/locationId", "give locationId or connectionId, not both or neither")
            ],
        )
    connection: Connection | None = None
    if connection_id is not None:
        from iod.connections import repository as connections

        connection = (
            connections.get_for_customer(session, principal.customer_id, connection_id)
            if looks_like_id(connection_id)
            else None
        )
        if connection is None:
            raise NotFound(f"no connection {shown(connection_id)}")
        status = ConnectionStatus(connection.target_status or connection.status)
        if not accepts_changes(status):
            raise InvalidState(f"connection {connection.id} is {status.value}; it cannot change")
        location_id = connection.location_id
    elif effective is not None or revert_at is not None:
        field = "/effectiveDate" if effective is not None else "/revertAt"
        raise ValidationFailed.field(field, "only a change (connectionId) has one")
    from iod.connections.service import change_time  # it imports this module

    at = change_time(now, effective, revert_at, max_schedule_days)  # as the change's PUT
    assert location_id is not None
    location = locations.get(session, location_id)
    if location is None:
        raise ValidationFailed.field("/locationId", f"unknown location {location_id!r}")
    mbps = parse_bandwidth(bandwidth)
    if not is_offered(mbps, location.tiers_mbps):
        offered = ", ".join(format_bandwidth(t) for t in location.tiers_mbps)
        raise ValidationFailed.field(
            "/bandwidth",
            f"{format_bandwidth(mbps)} is not offered at {location.id}; offered: {offered}",
        )
    price = repository.price_at(session, location.id, mbps, at)
    if price is None:
        raise NotPriced(f"{format_bandwidth(mbps)} at {location.id} has no price at {rfc3339(at)}")
    quote = Quote(
        id=new_id("quo"),
        customer_id=principal.customer_id,
        location_id=location.id,
        connection_id=connection.id if connection is not None else None,
        tier_mbps=mbps,
        currency=price.currency,
        hourly_minor=price.hourly_minor,
        monthly_cap_minor=price.monthly_cap_minor,
        price_id=price.id,
        effective_at=effective,
        revert_at=revert_at,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    session.add(quote)
    events.record(
        session,
        "quote.created",
        customer_id=principal.customer_id,
        subject_id=quote.id,
        at=now,
        quoteId=quote.id,
        locationId=location.id,
        connectionId=quote.connection_id,
        bandwidth=format_bandwidth(mbps),
        hourlyRate=money.format_minor(quote.hourly_minor, quote.currency),
        currency=quote.currency,
        expiresAt=rfc3339(quote.expires_at),
    )
    session.flush()
    return quote


def estimate(quote: Quote, hours: int) -> int:
    return money.capped(quote.hourly_minor * hours, quote.monthly_cap_minor)


def present_quote(quote: Quote) -> dict[str, Any]:
    fmt = money.format_minor
    return {
        "id": quote.id,
        "locationId": quote.location_id,
        "connectionId": quote.connection_id,
        "bandwidth": format_bandwidth(quote.tier_mbps),
        "currency": quote.currency,
        "hourlyRate": fmt(quote.hourly_minor, quote.currency),
        "estimatedDailyCost": fmt(estimate(quote, money.ESTIMATE_DAY_HOURS), quote.currency),
        "estimatedMonthlyCost": fmt(estimate(quote, money.ESTIMATE_MONTH_HOURS), quote.currency),
        "monthlyCap": (
            None
            if quote.monthly_cap_minor is None
            else fmt(quote.monthly_cap_minor, quote.currency)
        ),
        "effectiveDate": quote.effective_at,
        "revertAt": quote.revert_at,
        "createdAt": quote.created_at,
        "expiresAt": quote.expires_at,
        "usedAt": quote.used_at,
    }


def get_quote(session: Session, principal: Principal, quote_id: str) -> Quote:
    quote = (
        repository.quote_for_customer(session, principal.customer_id, quote_id)
        if looks_like_id(quote_id)
        else None
    )
    if quote is None:
        raise NotFound(f"no quote {shown(quote_id)}")
    return quote


def redeem(
    session: Session,
    now: datetime,
    principal: Principal,
    quote_id: str,
    *,
    location_id: str,
    mbps: int,
    connection_id: str,
    change_id: str | None,
    for_change_of: str | None = None,
    effective: datetime | None = None,
    revert_at: datetime | None = None,
) -> Quote:
    """Marks a quote used by an order (`change_id` None) or a change, in the transaction
    that stores it; any mismatch raises, so the order or change is not stored either.
    Another customer's quote is 404 like an unknown one. Matching: same location and tier,
    same connection for a change quote (and no connection for an order quote), same
    effectiveDate and revertAt as quoted."""
    quote = (
        repository.quote_for_customer(session, principal.customer_id, quote_id, lock=True)
        if looks_like_id(quote_id)
        else None
    )
    if quote is None:
        raise ValidationFailed.field("/quoteId", f"no quote {quote_id!r} for this customer")
    if quote.used_at is not None:
        raise QuoteUnusable(f"quote {quote.id} was already used (at {rfc3339(quote.used_at)})")
    if quote.expires_at <= now:
        raise QuoteUnusable(f"quote {quote.id} expired at {rfc3339(quote.expires_at)}; ask again")
    mismatch = []
    if quote.location_id != location_id:
        mismatch.append(f"location {quote.location_id}, not {location_id}")
    if quote.tier_mbps != mbps:
        mismatch.append(
            f"bandwidth {format_bandwidth(quote.tier_mbps)}, not {format_bandwidth(mbps)}"
        )
    if quote.connection_id != for_change_of:
        mismatch.append(
            f"connection {quote.connection_id}" if quote.connection_id else "a new connection"
        )
    if for_change_of is not None and (quote.effective_at, quote.revert_at) != (
        effective,
        revert_at,
    ):
        mismatch.append("another effectiveDate or revertAt")
    if mismatch:
        raise ValidationFailed.field("/quoteId", f"quote {quote.id} was for {'; '.join(mismatch)}")
    quote.used_at = now
    quote.used_connection_id = connection_id
    quote.used_change_id = change_id
    return quote
