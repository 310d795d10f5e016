"""Recurring bandwidth schedules as plain Python: what bandwidth a schedule asks for at an
instant, and the instants where that changes (docs/schedules.md).

A schedule has a time zone (IANA, `zoneinfo`), a default bandwidth, rules
`{bandwidth, start, end, recurrence}` (an iCalendar RRULE, `python-dateutil`), one-off
exception dates and an optional validity window. The rules:

- **Occurrences.** A rule's RRULE gives the local dates it happens on (FREQ DAILY or
  coarser; its DTSTART is the schedule's anchor date, midnight). On each such date `d` it
  holds from `start` to `end` local time; an `end` at or before `start` ends on `d + 1`
  (an overnight window), `24:00` is midnight at the end of `d`.
- **Priority.** Where windows of several rules overlap, the rule later in the list wins.
  Outside every window the default bandwidth holds.
- **Exceptions.** On an exception date (local, 00:00 to 24:00) the rules do not apply: the
  exception's own bandwidth holds, or the default when it has none.
- **Validity.** Outside `[validFrom, validUntil)` the schedule asks for nothing (no
  transition; the connection keeps what it has).
- **Local times to instants** use `fold=0` (PEP 495): a wall time that does not exist
  (the spring-forward gap) is shifted forward by the gap (02:30 in New York on the spring
  day is 03:30 EDT); a repeated wall time (autumn) is its first occurrence. A window that
  the shift empties (starts at or after its end) does not happen that day.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

DAY_SECONDS = 86_400
MAX_RECURRENCE_LENGTH = 500
_TIME = re.compile(r"^(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?$")
# Rules are about days; their time of day is `start`/`end`, so these parts are refused.
_FORBIDDEN_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART", "TZID")
_ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
MAX_INTERVAL = 1000


class ScheduleError(ValueError):
    """A part of a schedule that cannot be used; the message says why in plain words."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or ScheduleError."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ScheduleError(f"{name[:64]!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(
            f"{name!r} is not a known IANA time zone (e.g. America/New_York, Europe/Berlin)"
        ) from exc


def parse_time(text: str, *, end: bool = False) -> int:
    """`HH:MM` (or `HH:MM:SS`) as seconds after midnight; `24:00` only as an end."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ScheduleError(f"{text[:32]!r} is not a time of day: use HH:MM, e.g. 08:00")
    hours, minutes, seconds = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if end and (hours, minutes, seconds) == (24, 0, 0):
        return DAY_SECONDS
    if hours > 23 or minutes > 59 or seconds > 59:
        limit = "00:00 to 24:00" if end else "00:00 to 23:59"
        raise ScheduleError(f"{text!r} is not a time of day ({limit})")
    return hours * 3600 + minutes * 60 + seconds


def format_time(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def normalise_recurrence(text: str) -> str:
    """The RRULE value without an `RRULE:` prefix, upper-cased; ScheduleError if unusable."""
    value = text.strip()
    if value.upper().startswith("RRULE:"):
        value = value[6:]
    value = value.upper()
    if not value or len(value) > MAX_RECURRENCE_LENGTH:
        raise ScheduleError(
            f"must be an iCalendar RRULE of at most {MAX_RECURRENCE_LENGTH} characters, "
            "e.g. FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
        )
    if any(ch in value for ch in "\r\n:") or not value.isascii():
        raise ScheduleError("must be a single RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO,TU")
    parts = dict(part.partition("=")[::2] for part in value.split(";") if part)
    names = set(parts)
    for forbidden in _FORBIDDEN_PARTS:
        if forbidden in names:
            raise ScheduleError(
                f"{forbidden} is not allowed: a rule's time of day is its start and end, "
                "its first day the schedule's validFrom (or creation day)"
            )
    if parts.get("FREQ") not in _ALLOWED_FREQS:
        raise ScheduleError(
            "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY (a rule is a set of days; its "
            "start and end give the time of day)"
        )
    interval = parts.get("INTERVAL")
    # INTERVAL=0 would never move on (dateutil loops for ever), a negative one backwards.
    if interval is not None and not (interval.isdigit() and 1 <= int(interval) <= MAX_INTERVAL):
        raise ScheduleError(f"INTERVAL must be a whole number from 1 to {MAX_INTERVAL}")
    return value


@lru_cache(maxsize=4096)
def recurrence(text: str, anchor: date) -> rrule:
    """The parsed rule (dates at local midnight from `anchor`); ScheduleError if invalid."""
    value = normalise_recurrence(text)
    try:
        rule = rrulestr(value, dtstart=datetime.combine(anchor, time()), cache=True)
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise ScheduleError(f"is not a valid RRULE: {exc}") from exc
    if not isinstance(rule, rrule):
        raise ScheduleError("must be a single RRULE")
    if not _occurs(rule, datetime.combine(anchor, time())):
        raise ScheduleError(
            "never occurs (e.g. a day the month does not have, a week the year does not "
            "have, COUNT=0 or an UNTIL before the rule's first day)"
        )
    return rule


def _occurs(rule: rrule, first: datetime) -> bool:
    """Whether the rule has any occurrence, found in bounded time. dateutil searches a rule
    that never occurs up to the year 9999 (seconds for a daily one: an evaluation of it
    would hang a worker). The Gregorian calendar repeats every 400 years (146,097 days, whole
    weeks, the same leap years), so the rule from a first day moved 400·k years on, to
    within 410 years of 9999, occurs if and only if this one does, and is searched to the
    end in a fraction of the time."""
    years = 400 * max(0, (9589 - first.year) // 400 + 1)
    until: datetime | None = getattr(rule, "_until", None)
    moved_until = None
    if until is not None:
        if until < first:
            return False
        moved_until = until.replace(year=until.year + years) if until.year + years <= 9999 else None
    try:
        moved = rule.replace(dtstart=first.replace(year=first.year + years), until=moved_until)
        return next(iter(moved), None) is not None
    except (ValueError, OverflowError):
        return False


@dataclass(frozen=True)
class Rule:
    mbps: int
    start: int  # seconds after local midnight
    end: int  # seconds after local midnight, 1..86400; <= start: the next day
    recurrence: str

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ScheduleError("start and end must differ")


@dataclass(frozen=True)
class Spec:
    """A schedule's content, as the evaluation needs it."""

    zone: ZoneInfo
    default_mbps: int
    rules: tuple[Rule, ...]
    anchor: date  # DTSTART of the rules: local date of validFrom, else of creation
    exceptions: dict[date, int | None] = field(default_factory=dict)
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def local_to_utc(day: date, seconds: int, tz: ZoneInfo) -> datetime:
    """Wall time `seconds` after midnight of `day` in `tz` as a UTC instant (fold=0: a time
    in a gap is shifted forward by the gap, a repeated time is its first occurrence)."""
    naive = datetime.combine(day, time()) + timedelta(seconds=seconds)
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _windows(spec: Spec, rule: Rule, first: date, last: date) -> list[tuple[datetime, datetime]]:
    """The rule's windows (UTC) whose local date is within [first, last]."""
    parsed = recurrence(rule.recurrence, spec.anchor)
    days = parsed.between(datetime.combine(first, time()), datetime.combine(last, time()), inc=True)
    windows = []
    for occurrence in days:
        day = occurrence.date()
        begin = local_to_utc(day, rule.start, spec.zone)
        end_day = day if rule.end > rule.start else day + timedelta(days=1)
        finish = local_to_utc(end_day, rule.end, spec.zone)
        if begin < finish:  # a window a gap has emptied does not happen
            windows.append((begin, finish))
    return windows


@dataclass
class _Evaluator:
    spec: Spec
    windows: list[list[tuple[datetime, datetime]]]

    def value_at(self, moment: datetime) -> int | None:
        """What the schedule asks for at `moment` (UTC); None outside its validity."""
        spec = self.spec
        if spec.valid_from is not None and moment < spec.valid_from:
            return None
        if spec.valid_until is not None and moment >= spec.valid_until:
            return None
        local_day = moment.astimezone(spec.zone).date()
        if local_day in spec.exceptions:
            override = spec.exceptions[local_day]
            return spec.default_mbps if override is None else override
        for index in range(len(spec.rules) - 1, -1, -1):  # the later rule wins
            if any(begin <= moment < end for begin, end in self.windows[index]):
                return spec.rules[index].mbps
        return spec.default_mbps


def _evaluator(spec: Spec, start: datetime, end: datetime) -> tuple[_Evaluator, list[datetime]]:
    """An evaluator for instants in [start, end] and the instants where its value may change."""
    first = start.astimezone(spec.zone).date() - timedelta(days=2)
    last = end.astimezone(spec.zone).date() + timedelta(days=1)
    windows = [_windows(spec, rule, first, last) for rule in spec.rules]
    candidates: set[datetime] = set()
    for per_rule in windows:
        for begin, finish in per_rule:
            candidates.update((begin, finish))
    for day in spec.exceptions:
        if first <= day <= last:
            candidates.add(local_to_utc(day, 0, spec.zone))
            candidates.add(local_to_utc(day + timedelta(days=1), 0, spec.zone))
    for bound in (spec.valid_from, spec.valid_until):
        if bound is not None:
            candidates.add(bound)
    return _Evaluator(spec, windows), sorted(candidates)


def value_at(spec: Spec, moment: datetime) -> int | None:
    """The bandwidth the schedule asks for at `moment`; None outside its validity window."""
    evaluator, _ = _evaluator(spec, moment, moment)
    return evaluator.value_at(moment)


@dataclass(frozen=True)
class Transition:
    at: datetime  # UTC
    mbps: int


def transitions(spec: Spec, start: datetime, end: datetime) -> tuple[int | None, list[Transition]]:
    """What the schedule asks for at `start`, and each instant in (start, end] where that
    changes (to a bandwidth: leaving the validity window is no transition), in order."""
    evaluator, candidates = _evaluator(spec, start, end)
    initial = evaluator.value_at(start)
    current = initial
    found: list[Transition] = []
    for moment in candidates:
        if not start < moment <= end:
            continue
        value = evaluator.value_at(moment)
        if value is not None and value != current:
            found.append(Transition(moment, value))
        current = value
    return initial, found


def last_transition(spec: Spec, start: datetime, end: datetime) -> Transition | None:
    """The last transition in (start, end], if any (what a planner that missed them owes)."""
    _, found = transitions(spec, start, end)
    return found[-1] if found else None


def check_rules(rules: Sequence[Rule], anchor: date) -> list[tuple[int, str]]:
    """(index, message) for each rule whose recurrence cannot be used."""
    problems = []
    for index, rule in enumerate(rules):
        try:
            recurrence(rule.recurrence, anchor)
        except ScheduleError as exc:
            problems.append((index, str(exc)))
    return problems
