"""Wire models of schedules (docs/schedules.md). Write bodies are strict, like the others."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from iod.connections.schemas import (
    _RFC3339,
    BANDWIDTH_DESCRIPTION,
    StrictBody,
    _canonical_bandwidth,
    invalid_datetime,
)
from iod.domain import schedules as calendar
from iod.domain.text import description_text

MAX_RULES = 20
MAX_EXCEPTIONS = 366
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Only for the syntax check of a recurrence: the anchor changes what it counts from, not
# whether it is valid.
_CHECK_ANCHOR = date(2000, 1, 1)

ZONE_DESCRIPTION = (
    "An IANA time zone name (`America/New_York`, `Europe/Berlin`, `UTC`): the rules' times "
    "and the exception dates are wall-clock times and dates there, daylight saving included."
)
TIME_DESCRIPTION = "Local time of day, `HH:MM` (or `HH:MM:SS`)."
RECURRENCE_DESCRIPTION = (
    "An iCalendar RRULE (RFC 5545) giving the days the rule holds on, e.g. "
    "`FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR` or `FREQ=MONTHLY;BYDAY=-1FR` (the last Friday). "
    "FREQ is DAILY, WEEKLY, MONTHLY or YEARLY; BYHOUR, BYMINUTE, BYSECOND and DTSTART are "
    "not allowed (the time of day is `start`/`end`; the rule counts from the schedule's "
    "`validFrom`, or its creation day). A BYDAY count is 1 to 5 within a month (53 within a "
    "year), BYEASTER -80 to 250, and a COUNT must end within 100 years (else use UNTIL)."
)


def _string(value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string such as {example}")
    return value


def _zone(value: Any) -> Any:
    value = _string(value, "America/New_York")
    try:
        calendar.zone(value, given=True)
    except calendar.ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


def _date_time(value: Any) -> Any:
    """RFC 3339 with an offset (the same rule as `effectiveDate`)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string such as 2030-01-01T09:00:00Z")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time such as 2030-01-01T09:00:00Z")
    if match.group("offset") is None:
        raise ValueError("must include a UTC offset, e.g. Z or +02:00")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
        moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(invalid_datetime(exc)[:120]) from None
    return moment


def _description(value: Any) -> Any:
    return None if value is None else description_text(value)


class ScheduleRule(StrictBody):
    """From `start` to `end` local time on the days of `recurrence`: `bandwidth`."""

    model_config = ConfigDict(extra="forbid", title="ScheduleRule")

    bandwidth: str = Field(description=BANDWIDTH_DESCRIPTION, examples=["1 Gbps"], strict=True)
    start: str = Field(description=TIME_DESCRIPTION, examples=["08:00"], strict=True)
    end: str = Field(
        description=TIME_DESCRIPTION + " At or before `start`: the next day (overnight); "
        "`24:00` is the end of the day.",
        examples=["18:00"],
        strict=True,
    )
    recurrence: str = Field(
        description=RECURRENCE_DESCRIPTION,
        examples=["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"],
        strict=True,
        json_schema_extra={"maxLength": calendar.MAX_RECURRENCE_LENGTH + 6},
    )

    _bandwidth = field_validator("bandwidth", mode="before")(_canonical_bandwidth)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        value = _string(value, "08:00")
        try:
            calendar.parse_time(value)
        except calendar.ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, value: Any) -> Any:
        value = _string(value, "18:00")
        try:
            calendar.parse_time(value, end=True)
        except calendar.ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("recurrence", mode="before")
    @classmethod
    def _recurrence(cls, value: Any) -> Any:
        value = _string(value, "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
        try:
            calendar.recurrence(value, _CHECK_ANCHOR)
        except calendar.ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return calendar.normalise_recurrence(value)


class ScheduleException(StrictBody):
    """A local date on which the rules do not apply: its `bandwidth` all day, or the
    default bandwidth when it has none (a holiday)."""

    model_config = ConfigDict(extra="forbid", title="ScheduleException")

    date: str = Field(
        description="A local date, `YYYY-MM-DD`.", examples=["2030-12-25"], strict=True
    )
    bandwidth: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Extension of the holiday: this bandwidth all day instead of the default.",
        examples=["100 Mbps"],
    )

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        value = _string(value, "2030-12-25")
        if not _DATE.fullmatch(value):
            raise ValueError("must be a date YYYY-MM-DD")
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"is not a valid date: {exc}") from None
        return value

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _bandwidth(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a string when present; leave the field out instead")
        return _canonical_bandwidth(_string(value, "100 Mbps"))


def _unique_dates(value: list[ScheduleException]) -> list[ScheduleException]:
    seen: set[str] = set()
    for each in value:
        if each.date in seen:
            raise ValueError(f"the date {each.date} is given twice")
        seen.add(each.date)
    return value


class ScheduleRequest(StrictBody):
    """Create a connection's recurring bandwidth schedule."""

    model_config = ConfigDict(extra="forbid", title="ScheduleRequest")

    timeZone: str = Field(description=ZONE_DESCRIPTION, examples=["America/New_York"])
    defaultBandwidth: str = Field(
        description="What the connection has outside every rule's window. " + BANDWIDTH_DESCRIPTION,
        examples=["100 Mbps"],
        strict=True,
    )
    rules: list[ScheduleRule] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Where windows overlap, the rule later in the list wins.",
    )
    exceptions: list[ScheduleException] = Field(
        default_factory=list,
        max_length=MAX_EXCEPTIONS,
        description="Local dates on which the rules do not apply (each date once).",
    )
    validFrom: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None, description="The schedule acts from then on (RFC 3339, with an offset)."
    )
    validUntil: AwareDatetime | SkipJsonSchema[None] = Field(
        default=None,
        description="The schedule acts until then; afterwards the connection keeps what it has.",
    )
    paused: bool = Field(
        default=False,
        strict=True,
        description="A paused schedule is kept but plans nothing; its unstarted changes are "
        "cancelled. Resuming applies its current bandwidth and plans again.",
    )
    description: str | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra={"maxLength": 255},
        description="Free text, up to 255 characters.",
    )

    _zone = field_validator("timeZone", mode="before")(_zone)
    _bandwidth = field_validator("defaultBandwidth", mode="before")(_canonical_bandwidth)
    _dates = field_validator("exceptions")(_unique_dates)
    _description = field_validator("description", mode="before")(_description)

    @field_validator("validFrom", "validUntil", mode="before")
    @classmethod
    def _moments(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a string when present; leave the field out instead")
        return _date_time(value)


class SchedulePatch(StrictBody):
    """Change a schedule: only the fields given (JSON merge patch: `null` clears
    `validFrom`, `validUntil` and `description`). Lists are replaced whole."""

    model_config = ConfigDict(extra="forbid", title="SchedulePatch")

    timeZone: str | SkipJsonSchema[None] = Field(default=None, description=ZONE_DESCRIPTION)
    defaultBandwidth: str | SkipJsonSchema[None] = Field(
        default=None, description=BANDWIDTH_DESCRIPTION
    )
    rules: list[ScheduleRule] | SkipJsonSchema[None] = Field(
        default=None, max_length=MAX_RULES, description="Replaces every rule."
    )
    exceptions: list[ScheduleException] | SkipJsonSchema[None] = Field(
        default=None, max_length=MAX_EXCEPTIONS, description="Replaces every exception."
    )
    validFrom: AwareDatetime | None = Field(default=None, description="`null` clears it.")
    validUntil: AwareDatetime | None = Field(default=None, description="`null` clears it.")
    paused: bool | SkipJsonSchema[None] = Field(
        default=None, description="`true` pauses, `false` resumes."
    )
    description: str | None = Field(
        default=None, json_schema_extra={"maxLength": 255}, description="`null` clears it."
    )

    _description = field_validator("description", mode="before")(_description)
    _moments = field_validator("validFrom", "validUntil", mode="before")(_date_time)

    @field_validator("timeZone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a string when present; leave the field out instead")
        return _zone(value)

    @field_validator("defaultBandwidth", mode="before")
    @classmethod
    def _bandwidth(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a string when present; leave the field out instead")
        return _canonical_bandwidth(_string(value, "100 Mbps"))

    @field_validator("rules", "exceptions", "paused", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value

    @field_validator("paused", mode="before")
    @classmethod
    def _paused(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    _dates = field_validator("exceptions")(_unique_dates)


class ScheduleRuleOut(BaseModel):
    model_config = ConfigDict(title="ScheduleRuleOut")

    bandwidth: str
    start: str
    end: str
    recurrence: str


class ScheduleExceptionOut(BaseModel):
    model_config = ConfigDict(title="ScheduleExceptionOut")

    date: str
    bandwidth: str | SkipJsonSchema[None] = None


class Schedule(BaseModel):
    """A connection's recurring bandwidth schedule."""

    model_config = ConfigDict(title="Schedule")

    id: str
    connectionId: str
    timeZone: str
    defaultBandwidth: str
    rules: list[ScheduleRuleOut]
    exceptions: list[ScheduleExceptionOut]
    validFrom: datetime | SkipJsonSchema[None] = None
    validUntil: datetime | SkipJsonSchema[None] = None
    paused: bool
    description: str | SkipJsonSchema[None] = None
    plannedUntil: datetime | SkipJsonSchema[None] = Field(
        default=None,
        description="Its transitions up to then are planned as bandwidth changes "
        "(`scheduleId` on the connection's changes).",
    )
    createdAt: datetime
    updatedAt: datetime


class ScheduleList(BaseModel):
    schedules: list[Schedule]
    nextCursor: str | SkipJsonSchema[None] = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last."
    )


class PreviewTransition(BaseModel):
    model_config = ConfigDict(title="ScheduleTransition")

    at: datetime = Field(description="The instant, UTC.")
    localTime: str = Field(description="The same instant in the schedule's time zone.")
    bandwidth: str


class SchedulePreview(BaseModel):
    """What the schedule asks for over a period. (Cost: once prices exist, see
    docs/schedules.md.)"""

    model_config = ConfigDict(title="SchedulePreview")

    scheduleId: str
    timeZone: str
    paused: bool
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    initialBandwidth: str | SkipJsonSchema[None] = Field(
        default=None,
        description="What it asks for at `from`; absent outside its validity window.",
    )
    transitions: list[PreviewTransition]
