"""Wire models. Names and fields follow the spec's components; additions are optional."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from iod.domain.addressing import PREFIX_LENGTHS
from iod.domain.bandwidth import format_bandwidth, parse_bandwidth
from iod.domain.text import CONTROL, description_text
from iod.infra.representation import refuse_duplicate_keys

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
BANDWIDTH_DESCRIPTION = (
    "A positive number and a unit, Mbps or Gbps, case-insensitive, with an optional space: "
    "`100 Mbps`, `1Gbps`, `1.5 Gbps`. It must be a tier offered at the connection's location. "
    "Responses always use the canonical form (`100 Mbps`, `1 Gbps`)."
)


def _canonical_bandwidth(value: Any) -> Any:
    if isinstance(value, str):
        return format_bandwidth(parse_bandwidth(value))
    return value


def _no_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must be a string when present; leave the field out instead of null")
    return value


def _quote_id_text(value: Any) -> Any:
    value = _no_null(value)
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ValueError("must be a quote id (a string of at most 64 characters)")
    return value


class StrictBody(BaseModel):
    """A write body: duplicate keys are refused here, unknown fields by `extra="forbid"`."""

    @model_validator(mode="before")
    @classmethod
    def _duplicates(cls, data: Any) -> Any:
        return refuse_duplicate_keys(data)


class ConnectionRequest(StrictBody):
    """Order a connection at a catalog location with one of its tiers."""

    # Unknown fields are refused (400 naming the closest known one, problems.py): a
    # misspelt optional field must never be silently dropped.
    model_config = ConfigDict(extra="forbid", title="ConnectionRequest")

    bandwidth: str = Field(
        description=BANDWIDTH_DESCRIPTION, examples=["100 Mbps", "1 Gbps"], strict=True
    )
    locationId: str = Field(
        description="The id of a catalog location (see `iod locations list`).",
        examples=["PL0001247634"],
        strict=True,
    )
    description: str | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra={"maxLength": 255},
        description="Free text for the customer's own reference, up to 255 characters.",
        examples=["Denver office primary uplink"],
    )

    ipv4PrefixLength: int | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: the size of the IPv4 block the connection gets from its location's "
            "pool: 30 (the default: a gateway and one customer address), 29 or 28."
        ),
        examples=[30],
        json_schema_extra={"enum": list(PREFIX_LENGTHS)},
    )

    quoteId: str | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: a quote (`POST /internet-on-demand/quotes`) for this location and "
            "bandwidth, not expired nor used: its hourly rate is charged for this tier on "
            "this connection until the next change (docs/money.md)."
        ),
        json_schema_extra={"maxLength": 64},
        examples=["quo_01jd5v7x3q9k2m4n6p8r0s2t4v"],
    )

    _quote_id = field_validator("quoteId", mode="before")(_quote_id_text)

    _bandwidth = field_validator("bandwidth", mode="before")(_canonical_bandwidth)

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> Any:
        # Checked here, before the Optional union, so errors point at the field itself.
        return description_text(_no_null(value))

    @field_validator("ipv4PrefixLength", mode="before")
    @classmethod
    def _prefix_length(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value not in PREFIX_LENGTHS:
            raise ValueError(f"must be one of {', '.join(map(str, PREFIX_LENGTHS))} (a number)")
        return value

    @field_validator("locationId")
    @classmethod
    def _location(cls, value: str) -> str:
        if not value or len(value) > 64 or CONTROL.search(value):
            raise ValueError("is not a known location id")
        return value


class BandwidthUpdate(StrictBody):
    """Change a connection's bandwidth now, or at `effectiveDate`."""

    model_config = ConfigDict(extra="forbid", title="BandwidthUpdate")

    bandwidth: str = Field(
        description=BANDWIDTH_DESCRIPTION, examples=["500 Mbps", "1 Gbps"], strict=True
    )
    effectiveDate: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "When the change takes effect, RFC 3339 with a UTC offset. Absent or not in the "
            "future: applied now. At most a year ahead."
        ),
        examples=["2030-01-01T09:00:00Z"],
    )

    revertAt: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: makes this change a boost. At `revertAt` (after the effective time) "
            "the connection goes back to the bandwidth it had before, as a change of its own."
        ),
        examples=["2030-01-01T17:00:00Z"],
    )

    quoteId: str | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: a quote (`POST /internet-on-demand/quotes`) for this connection, "
            "bandwidth, effectiveDate and revertAt, not expired nor used: its hourly rate is "
            "charged for this tier on this connection until the next change (docs/money.md)."
        ),
        json_schema_extra={"maxLength": 64},
        examples=["quo_01jd5v7x3q9k2m4n6p8r0s2t4v"],
    )

    _quote_id = field_validator("quoteId", mode="before")(_quote_id_text)

    _bandwidth = field_validator("bandwidth", mode="before")(_canonical_bandwidth)

    @field_validator("effectiveDate", "revertAt", mode="before")
    @classmethod
    def _effective(cls, value: Any) -> Any:
        # Parsed here, before the Optional union, so errors point at the field itself.
        value = _no_null(value)
        if not isinstance(value, str):
            raise ValueError("must be an RFC 3339 date-time string such as 2030-01-01T09:00:00Z")
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise ValueError("must be an RFC 3339 date-time such as 2030-01-01T09:00:00Z")
        if match.group("offset") is None:
            raise ValueError("must include a UTC offset, e.g. Z or +02:00")
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
            # Found by fuzzing: 0001-01-01T00:00:00+00:01 parses but is before year 1 in UTC.
            moment.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise ValueError(invalid_datetime(exc)) from exc
        return moment


def invalid_datetime(exc: ValueError | OverflowError) -> str:
    """What is wrong with a date-time that matched the RFC 3339 pattern but that Python could
    not read or move to UTC. Python's message for an offset quotes timedelta reprs
    (`offset must be a timedelta strictly between -timedelta(hours=24) and …`): said plainly."""
    if "offset" in str(exc):
        return "has a UTC offset out of range (at most ±23:59)"
    return f"is not a valid date-time: {exc}"


class PendingBandwidthChange(BaseModel):
    """A change accepted but not yet in force on the network."""

    id: str
    bandwidth: str
    effectiveDate: datetime
    status: Literal["scheduled", "applying"]
    scheduleId: str | SkipJsonSchema[None] = Field(
        default=None, description="Extension: the schedule whose transition it is, if any."
    )


class Connection(BaseModel):
    """A connection. `bandwidth` is what the network has in force right now."""

    model_config = ConfigDict(title="Connection")

    id: str
    status: Literal["active", "provisioning", "suspended", "terminated"]
    bandwidth: str
    location: str = Field(description="The id of the connection's location.")
    createdAt: datetime
    description: str | SkipJsonSchema[None] = Field(
        default=None, description="Extension: the text given at creation, if any."
    )
    updatedAt: datetime = Field(description="Extension: when the record last changed.")
    ipv4Block: str | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: the IPv4 block (CIDR) of the connection. Its first usable address is "
            "the provider edge's gateway, the second the customer's."
        ),
        examples=["10.0.0.4/30"],
    )
    pendingBandwidthChanges: list[PendingBandwidthChange] = Field(
        default_factory=list,
        description="Extension: accepted changes not yet in force, in the order they apply.",
    )
    targetStatus: (
        Literal["active", "provisioning", "suspended", "terminated"] | SkipJsonSchema[None]
    ) = Field(
        default=None,
        description=(
            "Extension: present while a suspend, resume or terminate is accepted but not yet "
            "done; the status the connection is heading to."
        ),
    )


class BandwidthChange(BaseModel):
    """Extension: the change record an update created."""

    id: str
    fromBandwidth: str | SkipJsonSchema[None] = Field(
        default=None, description="The bandwidth it replaced, once applied."
    )
    bandwidth: str
    effectiveDate: datetime
    status: Literal["scheduled", "applying", "applied", "failed", "cancelled"]
    requestedAt: datetime
    appliedAt: datetime | SkipJsonSchema[None] = None
    requestedBy: str = Field(description="The client id that asked for the change.")
    failureReason: str | SkipJsonSchema[None] = Field(
        default=None, description="Why it failed or was cancelled."
    )
    revertOf: str | SkipJsonSchema[None] = Field(
        default=None, description="For a boost's revert: the id of the boost."
    )
    scheduleId: str | SkipJsonSchema[None] = Field(
        default=None, description="The schedule whose transition it is, if any."
    )


class BandwidthUpdateResult(Connection):
    """The connection after the update was accepted, and the change it created."""

    model_config = ConfigDict(title="BandwidthUpdateResult")

    change: BandwidthChange | SkipJsonSchema[None] = Field(
        default=None,
        description=(
            "Extension: the change this request created; absent when it created none, "
            "because the connection will have that bandwidth at that time anyway."
        ),
    )
    revertChange: BandwidthChange | SkipJsonSchema[None] = Field(
        default=None, description="Extension: for a boost, the change that reverts it."
    )


class ConnectionList(BaseModel):
    connections: list[Connection]
    nextCursor: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Extension: pass as `cursor` for the next page; absent on the last page.",
    )


class BandwidthChangeList(BaseModel):
    """A page of a connection's changes, past and pending, in effective order."""

    bandwidthChanges: list[BandwidthChange]
    nextCursor: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Pass as `cursor` for the next page; absent on the last page.",
    )


class StatusTransitionOut(BaseModel):
    model_config = ConfigDict(title="StatusTransition")

    fromStatus: str | SkipJsonSchema[None] = None
    toStatus: str
    reason: str
    at: datetime


class StatusHistory(BaseModel):
    """Extension: a connection's status transitions, oldest first."""

    transitions: list[StatusTransitionOut]
