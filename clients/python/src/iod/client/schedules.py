"""Schedules in the SDK: typed views, the short rule syntax of the CLI, and the methods
`Client` and `AsyncClient` get from `ScheduleMethods` / `AsyncScheduleMethods`.

The short rule syntax (docs/schedules.md, "Short rules"):

    RULE  := BANDWIDTH DAYS START "-" END          e.g. "1 Gbps MO-FR 08:00-18:00"
    DAYS  := "daily" | "weekdays" | "weekends"
           | DAY ["-" DAY] ("," DAY ["-" DAY])*     weekly on those days (ranges may wrap)
           | NTH "-" DAY                           monthly: first..fourth, last (or 1..4, -1)
           | "FREQ=…"                              an RRULE as it is
    DAY   := MO | TU | WE | TH | FR | SA | SU      (any case)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from pydantic import Field

from iod.client import _common as c
from iod.client.models import Model

DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_NTH = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_RULE = re.compile(
    r"^\s*(?P<bandwidth>\d+(?:\.\d+)?\s*[MmGg]bps)\s+(?P<days>\S+)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$",
    re.ASCII,  # ASCII digits only, as the API's times (`\d` matches fullwidth ones too)
)


class RuleSyntaxError(ValueError):
    """A short rule the grammar does not read; the message says what was expected."""


def _day(text: str) -> int:
    upper = text.upper()
    if upper not in DAYS:
        raise RuleSyntaxError(f"{text!r} is not a day: use MO, TU, WE, TH, FR, SA or SU")
    return DAYS.index(upper)


def days_to_rrule(text: str) -> str:
    """The RRULE of the DAYS part of a short rule."""
    lower = text.lower()
    if text.upper().startswith("FREQ="):
        return text.upper()
    if lower == "daily":
        return "FREQ=DAILY"
    if lower == "weekdays":
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    if lower == "weekends":
        return "FREQ=WEEKLY;BYDAY=SA,SU"
    nth = re.fullmatch(r"(first|second|third|fourth|last|-1|[1-4])-([a-zA-Z]{2})", lower)
    if nth is not None:
        number = _NTH.get(nth.group(1)) or int(nth.group(1))
        return f"FREQ=MONTHLY;BYDAY={number}{DAYS[_day(nth.group(2))]}"
    chosen: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if dash and not (first and last):  # "MO-" is not Mondays: a range lost its end
            raise RuleSyntaxError(
                f"{part!r} is not a day or a range of days: use e.g. MO, MO-FR or SA,SU"
            )
        start = _day(first)
        stop = _day(last) if last else start
        index = start
        while True:  # a range may wrap around the week: FR-MO
            if index not in chosen:
                chosen.append(index)
            if index == stop:
                break
            index = (index + 1) % 7
    return "FREQ=WEEKLY;BYDAY=" + ",".join(DAYS[i] for i in sorted(chosen))


def _time(text: str) -> str:
    hours, minutes = text.split(":")
    return f"{int(hours):02d}:{minutes}"


def parse_rule(text: str) -> dict[str, str]:
    """A short rule as the API's rule: `"1 Gbps MO-FR 08:00-18:00"` →
    `{"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00",
    "recurrence": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"}`."""
    match = _RULE.fullmatch(text)
    if match is None:
        raise RuleSyntaxError(
            f"{text!r} is not a rule: expected BANDWIDTH DAYS HH:MM-HH:MM, "
            "e.g. '1 Gbps MO-FR 08:00-18:00' or '2 Gbps last-FR 00:00-06:00'"
        )
    return {
        "bandwidth": match["bandwidth"],
        "start": _time(match["start"]),
        "end": _time(match["end"]),
        "recurrence": days_to_rrule(match["days"]),
    }


# -- typed views ----------------------------------------------------------------------


class ScheduleRule(Model):
    bandwidth: str
    start: str
    end: str
    recurrence: str


class ScheduleException(Model):
    date: str
    bandwidth: str | None = None


class Schedule(Model):
    """A connection's recurring bandwidth schedule."""

    id: str
    connection_id: str
    time_zone: str
    default_bandwidth: str
    rules: list[ScheduleRule] = Field(default_factory=list)
    exceptions: list[ScheduleException] = Field(default_factory=list)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    paused: bool = False
    description: str | None = None
    planned_until: datetime | None = None
    created_at: datetime
    updated_at: datetime


class PreviewTransition(Model):
    at: datetime
    local_time: str
    bandwidth: str


class SchedulePreview(Model):
    """What a schedule asks for over a period: at `start`, then each transition."""

    schedule_id: str
    time_zone: str
    paused: bool
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    initial_bandwidth: str | None = None
    transitions: list[PreviewTransition] = Field(default_factory=list)


# -- requests -------------------------------------------------------------------------


def schedules_path(connection_id: str, schedule_id: str | None = None) -> str:
    path = c.connection_path(connection_id) + "/schedules"
    return path if schedule_id is None else f"{path}/{quote(schedule_id, safe='')}"


def create_body(
    time_zone: str,
    default_bandwidth: str,
    rules: list[str | dict[str, str]] | None,
    exceptions: list[str | dict[str, str]] | None,
    valid_from: datetime | str | None,
    valid_until: datetime | str | None,
    paused: bool,
    description: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timeZone": time_zone,
        "defaultBandwidth": default_bandwidth,
        "rules": [parse_rule(r) if isinstance(r, str) else r for r in rules or []],
        "exceptions": [{"date": e} if isinstance(e, str) else e for e in exceptions or []],
    }
    if valid_from is not None:
        body["validFrom"] = c.aware(valid_from, "valid_from")
    if valid_until is not None:
        body["validUntil"] = c.aware(valid_until, "valid_until")
    if paused:
        body["paused"] = True
    if description is not None:
        body["description"] = description
    return body


def preview_params(start: datetime | str | None, end: datetime | str | None) -> dict[str, str]:
    params = {}
    if start is not None:
        params["from"] = c.aware(start, "start")
    if end is not None:
        params["to"] = c.aware(end, "end")
    return params


class _Requests(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any: ...


class _AsyncRequests(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any: ...


class ScheduleMethods:
    """The schedule operations of `Client`."""

    def create_schedule(
        self: _Requests,
        connection_id: str,
        time_zone: str,
        default_bandwidth: str,
        rules: list[str | dict[str, str]] | None = None,
        *,
        exceptions: list[str | dict[str, str]] | None = None,
        valid_from: datetime | str | None = None,
        valid_until: datetime | str | None = None,
        paused: bool = False,
        description: str | None = None,
    ) -> Schedule:
        """A schedule for the connection. `rules` are API rules (dicts) or short rules
        (`"1 Gbps MO-FR 08:00-18:00"`); `exceptions` dates (`"2030-12-25"`) or
        `{"date", "bandwidth"}`."""
        body = create_body(time_zone, default_bandwidth, rules, exceptions, valid_from,
                           valid_until, paused, description)  # fmt: skip
        return c.parse(Schedule, self.request("POST", schedules_path(connection_id), json=body))

    def list_schedules(self: _Requests, connection_id: str | None = None) -> list[Schedule]:
        """The connection's schedules, or every schedule of the customer (all pages)."""
        if connection_id is not None:
            data = self.request("GET", schedules_path(connection_id))
            return [c.parse(Schedule, s) for s in data["schedules"]]
        found: list[Schedule] = []
        params: dict[str, Any] = {}
        while True:
            data = self.request("GET", "/internet-on-demand/schedules", params=params)
            found += [c.parse(Schedule, s) for s in data["schedules"]]
            if not data.get("nextCursor"):
                return found
            params["cursor"] = data["nextCursor"]

    def get_schedule(self: _Requests, connection_id: str, schedule_id: str) -> Schedule:
        return c.parse(Schedule, self.request("GET", schedules_path(connection_id, schedule_id)))

    def update_schedule(
        self: _Requests, connection_id: str, schedule_id: str, **changes: Any
    ) -> Schedule:
        """PATCH with the API's field names (`timeZone=…`, `rules=[…]`, `paused=True`)."""
        if "rules" in changes:
            changes["rules"] = [
                parse_rule(r) if isinstance(r, str) else r for r in changes["rules"]
            ]
        path = schedules_path(connection_id, schedule_id)
        return c.parse(Schedule, self.request("PATCH", path, json=changes))

    def pause_schedule(self: _Requests, connection_id: str, schedule_id: str) -> Schedule:
        path = schedules_path(connection_id, schedule_id)
        return c.parse(Schedule, self.request("PATCH", path, json={"paused": True}))

    def resume_schedule(self: _Requests, connection_id: str, schedule_id: str) -> Schedule:
        path = schedules_path(connection_id, schedule_id)
        return c.parse(Schedule, self.request("PATCH", path, json={"paused": False}))

    def delete_schedule(self: _Requests, connection_id: str, schedule_id: str) -> None:
        self.request("DELETE", schedules_path(connection_id, schedule_id))

    def preview_schedule(
        self: _Requests,
        connection_id: str,
        schedule_id: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> SchedulePreview:
        path = schedules_path(connection_id, schedule_id) + "/preview"
        data = self.request("GET", path, params=preview_params(start, end))
        return c.parse(SchedulePreview, data)


class AsyncScheduleMethods:
    """The schedule operations of `AsyncClient`."""

    async def create_schedule(
        self: _AsyncRequests,
        connection_id: str,
        time_zone: str,
        default_bandwidth: str,
        rules: list[str | dict[str, str]] | None = None,
        *,
        exceptions: list[str | dict[str, str]] | None = None,
        valid_from: datetime | str | None = None,
        valid_until: datetime | str | None = None,
        paused: bool = False,
        description: str | None = None,
    ) -> Schedule:
        body = create_body(time_zone, default_bandwidth, rules, exceptions, valid_from,
                           valid_until, paused, description)  # fmt: skip
        data = await self.request("POST", schedules_path(connection_id), json=body)
        return c.parse(Schedule, data)

    async def list_schedules(self: _AsyncRequests, connection_id: str) -> list[Schedule]:
        data = await self.request("GET", schedules_path(connection_id))
        return [c.parse(Schedule, s) for s in data["schedules"]]

    async def get_schedule(self: _AsyncRequests, connection_id: str, schedule_id: str) -> Schedule:
        data = await self.request("GET", schedules_path(connection_id, schedule_id))
        return c.parse(Schedule, data)

    async def pause_schedule(
        self: _AsyncRequests, connection_id: str, schedule_id: str
    ) -> Schedule:
        path = schedules_path(connection_id, schedule_id)
        return c.parse(Schedule, await self.request("PATCH", path, json={"paused": True}))

    async def resume_schedule(
        self: _AsyncRequests, connection_id: str, schedule_id: str
    ) -> Schedule:
        path = schedules_path(connection_id, schedule_id)
        return c.parse(Schedule, await self.request("PATCH", path, json={"paused": False}))

    async def delete_schedule(self: _AsyncRequests, connection_id: str, schedule_id: str) -> None:
        await self.request("DELETE", schedules_path(connection_id, schedule_id))
