"""Wire models of the money feature. Amounts are decimal strings in the currency's units
("0.46"), never JSON numbers (floats)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from iod.connections.schemas import (
    _RFC3339,
    BANDWIDTH_DESCRIPTION,
    StrictBody,
    _canonical_bandwidth,
    _no_null,
    invalid_datetime,
)

AMOUNT: dict[str, Any] = {"pattern": r"^-?\d+(\.\d+)?$", "examples": ["0.46"]}

_AMOUNT = AMOUNT
MONEY_DESCRIPTION = "A decimal amount as a string in the currency's units, e.g. `331.20`."


def _datetime(value: Any) -> Any:
    value = _no_null(value)
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time such as 2030-01-01T09:00:00Z")
    if _RFC3339.fullmatch(value).group("offset") is None:  # type: ignore[union-attr]
        raise ValueError("must include a UTC offset, e.g. Z or +02:00")
    try:
        return datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(invalid_datetime(exc)) from exc


def rfc3339_param(value: Any) -> Any:
    """A query parameter's date-time: RFC 3339 with an offset only (no Unix numbers)."""
    return None if value is None else _datetime(value)


def _id_text(value: Any) -> Any:
    value = _no_null(value)
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ValueError("must be an id (a string of at most 64 characters)")
    return value


class Price(BaseModel):
    hourlyRate: str = Field(description=MONEY_DESCRIPTION, json_schema_extra=_AMOUNT)
    currency: str = Field(description="ISO 4217 code", examples=["USD"])
    monthlyCap: str | SkipJsonSchema[None] = Field(
        default=None,
        description="The most this tier costs a connection in a calendar month, if capped.",
        json_schema_extra=_AMOUNT,
    )
    effectiveFrom: datetime = Field(description="Since when this price is in force.")


class TierOffer(BaseModel):
    bandwidth: str
    orderable: bool = Field(description="Whether the location's free capacity fits it now.")
    price: Price | SkipJsonSchema[None] = Field(
        default=None, description="The price in force now; absent: not priced (not quotable)."
    )


class CatalogLocation(BaseModel):
    """A location a customer may order at."""

    id: str
    name: str
    address: str
    availableCapacity: str = Field(description="Port capacity not yet committed.")
    tiers: list[TierOffer]


class CatalogLocationList(BaseModel):
    locations: list[CatalogLocation]


class QuoteRequest(StrictBody):
    """A price for a new connection (`locationId`) or a change (`connectionId`)."""

    model_config = ConfigDict(extra="forbid", title="QuoteRequest")

    bandwidth: str = Field(description=BANDWIDTH_DESCRIPTION, examples=["100 Mbps"], strict=True)
    locationId: str | SkipJsonSchema[None] = Field(
        default=None,
        description="For a new connection: the location (give this or connectionId).",
        json_schema_extra={"maxLength": 64},
        examples=["PL0001247634"],
    )
    connectionId: str | SkipJsonSchema[None] = Field(
        default=None,
        description="For a change: the connection (give this or locationId).",
        json_schema_extra={"maxLength": 64},
    )
    effectiveDate: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None,
        description="For a change: when it takes effect (the price in force then).",
        examples=["2030-01-01T09:00:00Z"],
    )
    revertAt: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None, description="For a boost: when it reverts.", examples=["2030-01-01T17:00:00Z"]
    )

    _bandwidth = field_validator("bandwidth", mode="before")(_canonical_bandwidth)
    _ids = field_validator("locationId", "connectionId", mode="before")(_id_text)
    _times = field_validator("effectiveDate", "revertAt", mode="before")(_datetime)


class QuoteOut(BaseModel):
    model_config = ConfigDict(title="Quote")

    id: str
    locationId: str
    connectionId: str | SkipJsonSchema[None] = None
    bandwidth: str
    currency: str
    hourlyRate: str = Field(json_schema_extra=_AMOUNT)
    estimatedDailyCost: str = Field(
        description="24 hours at the rate (capped).", json_schema_extra=_AMOUNT
    )
    estimatedMonthlyCost: str = Field(
        description="720 hours (30 days) at the rate, at most the monthly cap.",
        json_schema_extra=_AMOUNT,
    )
    monthlyCap: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_AMOUNT)
    effectiveDate: datetime | SkipJsonSchema[None] = None
    revertAt: datetime | SkipJsonSchema[None] = None
    createdAt: datetime
    expiresAt: datetime = Field(description="Pass `quoteId` before then (15 minutes).")
    usedAt: datetime | SkipJsonSchema[None] = None


class Total(BaseModel):
    currency: str
    amount: str = Field(json_schema_extra=_AMOUNT)


class UsageLineOut(BaseModel):
    model_config = ConfigDict(title="UsageLine")

    connectionId: str
    periodStart: datetime = Field(description="The hour, day or month (UTC) of the line.")
    bandwidth: str = Field(description="The tier in force on the network.")
    status: Literal["active", "suspended"]
    seconds: int
    hourlyRate: str = Field(json_schema_extra=_AMOUNT)
    currency: str
    amount: str = Field(json_schema_extra=_AMOUNT)


class UsageOut(BaseModel):
    model_config = ConfigDict(title="Usage")

    start: datetime = Field(alias="from", description="The window's start (inclusive).")
    end: datetime = Field(alias="to", description="The window's end (exclusive).")
    granularity: Literal["hour", "day", "month"]
    ratedUntil: datetime | SkipJsonSchema[None] = Field(
        default=None, description="Every connection is rated up to this time."
    )
    lines: list[UsageLineOut]
    totals: list[Total] = Field(description="Per currency, before monthly caps.")


class StatementLine(BaseModel):
    connectionId: str
    bandwidth: str
    status: Literal["active", "suspended"]
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    seconds: int
    hourlyRate: str = Field(json_schema_extra=_AMOUNT)
    currency: str
    amount: str = Field(json_schema_extra=_AMOUNT)
    rateSource: Literal["price", "quote"]
    quoteId: str | SkipJsonSchema[None] = None


class CapAdjustment(BaseModel):
    connectionId: str
    bandwidth: str
    currency: str
    monthlyCap: str = Field(json_schema_extra=_AMOUNT)
    amount: str = Field(description="Negative: what the cap takes off.", json_schema_extra=_AMOUNT)


class StatementTotal(BaseModel):
    currency: str
    usage: str = Field(json_schema_extra=_AMOUNT)
    capAdjustment: str = Field(json_schema_extra=_AMOUNT)
    amount: str = Field(json_schema_extra=_AMOUNT)


class StatementSummary(BaseModel):
    id: str
    month: str = Field(examples=["2026-11"])
    status: Literal["open", "closed"]
    closedAt: datetime | SkipJsonSchema[None] = None


class StatementList(BaseModel):
    statements: list[StatementSummary]


class StatementOut(BaseModel):
    model_config = ConfigDict(title="Statement")

    id: str
    month: str
    status: Literal["open", "closed"]
    periodStart: datetime
    periodEnd: datetime
    ratedUntil: datetime | SkipJsonSchema[None] = None
    closedAt: datetime | SkipJsonSchema[None] = None
    lines: list[StatementLine]
    capAdjustments: list[CapAdjustment]
    totals: list[StatementTotal]
