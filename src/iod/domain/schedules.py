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

import calendar as stdlib_calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import structlog
from dateutil.rrule import rrule, rrulestr

log = structlog.get_logger("iod.schedules")

DAY_SECONDS = 86_400
MAX_RECURRENCE_LENGTH = 500
_TIME = re.compile(r"^(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?$")
# Rules are about days; their time of day is `start`/`end`, so these parts are refused.
_FORBIDDEN_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART", "TZID")
_ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
MAX_INTERVAL = 1000
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Easter falls on day 80 (March 22) to 115 (April 25 of a leap year) of its year, counted
# from 0: these offsets keep the day in Easter's own year, every year. dateutil indexes a
# list of the year's days with Easter's day plus the offset: beyond it raises IndexError in
# some years (Easter late, the offset large) or, below 0, silently wraps to December.
EASTER_OFFSETS = (-80, 250)
# A rule with COUNT is evaluated up to its last occurrence, found once by walking it from its
# first day: that day must come within these years of the first (0.1 s of dateutil at most).
MAX_COUNT_YEARS = 100
# Names `zoneinfo` loads that are no IANA zone: the host's own zone (`localtime` follows
# /etc/localtime), tzcode's template and the "zone unknown" placeholder.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class ScheduleError(ValueError):
    """A part of a schedule that cannot be used; the message says why in plain words."""


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA time zone names (`zoneinfo.available_timezones()`, read once, less the names
    of files that are no zone: `localtime`, `posixrules`, `Factory`; `UTC` always)."""
    return frozenset((available_timezones() - _NOT_ZONES) | {"UTC"})


def zone(name: str, *, given: bool = False) -> ZoneInfo:
    """The time zone `name`, or ScheduleError. `given` (a name a client sends): it must be
    an IANA name (`zone_names`). A stored name is loaded as it is: one accepted before that
    check (`localtime`, `Factory`) must not stop the planning of its schedule."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ScheduleError(f"{name[:64]!r} is not an IANA time zone name")
    try:
        if given and name not in zone_names():
            raise ZoneInfoNotFoundError(name)
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
    _check_ordinals(parts)
    for offset in parts.get("BYEASTER", "").split(","):
        low, high = EASTER_OFFSETS
        if re.fullmatch(r"[+-]?[0-9]+", offset) and not low <= int(offset) <= high:
            raise ScheduleError(
                f"BYEASTER must be from {low} to {high}: a day of Easter's own year"
            )
    return value


def _check_ordinals(parts: dict[str, str]) -> None:
    """BYDAY's `+2MO`/`-1FR` counts the weekday within the month (MONTHLY, or YEARLY with
    BYMONTH) or the year (YEARLY): a count beyond 5 (53) matches no day, and dateutil
    indexes past the end of its list of the year's days for large ones (IndexError in some
    months). DAILY and WEEKLY ignore the count, as dateutil does."""
    freq = parts["FREQ"]
    if freq not in ("MONTHLY", "YEARLY"):
        return
    in_month = freq == "MONTHLY" or "BYMONTH" in parts
    most = 5 if in_month else 53
    for entry in parts.get("BYDAY", "").split(","):
        count = re.search(r"[+-]?[0-9]+", entry)
        if count is not None and abs(int(count[0])) > most:
            within = "month" if in_month else "year"
            raise ScheduleError(
                f"BYDAY {entry}: a {within} has at most {most} of each weekday "
                f"(count from 1 to {most}, or -1 to -{most} from the end)"
            )


def recurrence(text: str, anchor: date) -> rrule:
    """The parsed rule (dates at local midnight from `anchor`); ScheduleError if invalid:
    unusable text, a rule dateutil cannot step through (any exception it raises while
    parsing or stepping), one that never occurs, a COUNT that ends too far on."""
    checked = _checked(text, anchor)
    if isinstance(checked, str):
        raise ScheduleError(checked)
    return checked.rule


@dataclass(frozen=True)
class _Checked:
    rule: rrule  # from the anchor, as written (cache=False: it keeps no occurrences)
    freq: str
    interval: int
    wkst: int
    # What the rule is given to be shifted (`_from`): the byxxx parts dateutil would derive
    # from the anchor (a WEEKLY rule's weekday, a MONTHLY's day...), and a COUNT's last day.
    fixed: dict[str, Any]


@lru_cache(maxsize=4096)
def _checked(text: str, anchor: date) -> _Checked | str:
    """The rule, or why it cannot be used (the verdict is cached: a stored rule that a newer
    check refuses is not checked again at each evaluation)."""
    try:
        return _check(text, anchor)
    except ScheduleError as exc:
        return str(exc)


def _check(text: str, anchor: date) -> _Checked:
    value = normalise_recurrence(text)
    first = datetime.combine(anchor, time())
    try:
        rule = rrulestr(value, dtstart=first, cache=False)
    except Exception as exc:  # whatever dateutil raises on text it cannot use
        raise ScheduleError(f"is not a valid RRULE: {exc}") from exc
    if not isinstance(rule, rrule):
        raise ScheduleError("must be a single RRULE")
    if not _occurs(rule, first):
        raise ScheduleError(
            "never occurs (e.g. a day the month does not have, a week the year does not "
            "have, COUNT=0 or an UNTIL before the rule's first day)"
        )
    parts = dict(part.partition("=")[::2] for part in value.split(";") if part)
    fixed: dict[str, Any] = {}
    if not {"BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYEASTER"} & set(parts):
        # What dateutil derives from the DTSTART when none of these is given.
        if parts["FREQ"] == "YEARLY":
            fixed = {"bymonthday": anchor.day}
            if "BYMONTH" not in parts:
                fixed["bymonth"] = anchor.month
        elif parts["FREQ"] == "MONTHLY":
            fixed = {"bymonthday": anchor.day}
        elif parts["FREQ"] == "WEEKLY":
            fixed = {"byweekday": anchor.weekday()}
    if "COUNT" in parts:
        fixed.update(count=None, until=_count_end(rule, first, int(parts["COUNT"])))
    wkst = _WEEKDAYS.index(parts["WKST"]) if "WKST" in parts else stdlib_calendar.firstweekday()
    return _Checked(rule, parts["FREQ"], int(parts.get("INTERVAL", "1")), wkst, fixed)


def _occurs(rule: rrule, first: datetime) -> bool:
    """Whether the rule has any occurrence, found in bounded time. dateutil searches a rule
    that never occurs up to the year 9999 (seconds for a daily one: an evaluation of it
    would hang a worker). The Gregorian calendar repeats every 400 years (146,097 days, whole
    weeks, the same leap years), so the rule from a first day moved 400·k years on, to
    within 410 years of 9999, occurs if and only if this one does, and is searched to the
    end in a fraction of the time. An exception dateutil raises on the way is ScheduleError."""
    years = 400 * max(0, (9589 - first.year) // 400 + 1)
    until: datetime | None = getattr(rule, "_until", None)
    moved_until = None
    if until is not None:
        if until < first:
            return False
        moved_until = until.replace(year=until.year + years) if until.year + years <= 9999 else None
    try:
        moved = rule.replace(dtstart=first.replace(year=first.year + years), until=moved_until)
    except (ValueError, OverflowError):
        return False
    try:
        return next(iter(moved), None) is not None
    except Exception as exc:  # e.g. IndexError: a rule dateutil cannot step through
        raise ScheduleError(
            f"is not a valid RRULE: dateutil cannot evaluate it ({type(exc).__name__}: {exc})"
        ) from exc


def _count_end(rule: rrule, first: datetime, count: int) -> datetime:
    """A COUNT rule's last occurrence (or its UNTIL's), found by walking it (bounded: it must
    come within MAX_COUNT_YEARS of the first day). It makes the rule an UNTIL one, which
    `_from` can start anywhere: a count depends on every occurrence before."""
    years = first.year + MAX_COUNT_YEARS
    # A 29 February's year a century on may not be a leap year (2000 -> 2100): the 28th.
    limit = first.replace(
        year=years, day=min(first.day, stdlib_calendar.monthrange(years, first.month)[1])
    )
    until: datetime | None = getattr(rule, "_until", None)
    last: datetime | None = None
    walked = 0
    try:
        bounded = rule.replace(count=None, until=limit if until is None else min(until, limit))
        for moment in islice(bounded, count):
            last, walked = moment, walked + 1
    except Exception as exc:
        raise ScheduleError(
            f"is not a valid RRULE: dateutil cannot evaluate it ({type(exc).__name__}: {exc})"
        ) from exc
    if walked < count and (until is None or until > limit):
        raise ScheduleError(
            f"with COUNT must have its last occurrence within {MAX_COUNT_YEARS} years of its "
            "first day: use UNTIL for a longer one"
        )
    assert last is not None  # the rule occurs (checked before)
    return last


def period_start(freq: str, interval: int, wkst: int, anchor: date, first: date) -> date:
    """Where to start a rule from the anchor to find its occurrences from `first` on: the
    latest start of one of its periods (a day, a week from WKST, a month, a year; every
    INTERVAL-th from the anchor's) on or before `first`, or the anchor while `first` is in
    the anchor's own period. Started there, with the parts it derives from the anchor given
    explicitly, the rule has the same occurrences from `first` on as from the anchor:
    dateutil builds each period's candidate days from that period alone (BYSETPOS included),
    and only the first period may be cut short (a WEEKLY rule from its DTSTART's weekday)."""
    if first <= anchor:
        return anchor
    if freq == "DAILY":
        return anchor + timedelta(days=(first - anchor).days // interval * interval)
    if freq == "WEEKLY":
        week = anchor - timedelta(days=(anchor.weekday() - wkst) % 7)
        steps = (first - week).days // (7 * interval)
        return anchor if steps == 0 else week + timedelta(days=7 * interval * steps)
    if freq == "MONTHLY":
        month = anchor.year * 12 + anchor.month - 1
        steps = (first.year * 12 + first.month - 1 - month) // interval
        month += steps * interval
        return anchor if steps == 0 else date(month // 12, month % 12 + 1, 1)
    steps = (first.year - anchor.year) // interval  # YEARLY
    return anchor if steps == 0 else date(anchor.year + steps * interval, 1, 1)


@lru_cache(maxsize=4096)
def _from(text: str, anchor: date, start: date) -> rrule:
    """The rule started at `start` (`period_start`), caching its occurrences: they run from
    `start`, a period at most before the dates asked for, so the cache stays small."""
    checked = _checked(text, anchor)
    assert not isinstance(checked, str)
    return checked.rule.replace(
        dtstart=datetime.combine(start, time()), cache=True, **checked.fixed
    )


def occurrences(text: str, anchor: date, first: date, last: date) -> list[date]:
    """The local dates in [first, last] the rule (valid: `recurrence`) happens on, at a cost
    bounded by the range asked for, not by its distance from the anchor."""
    checked = _checked(text, anchor)
    if isinstance(checked, str):
        raise ScheduleError(checked)
    start = period_start(checked.freq, checked.interval, checked.wkst, anchor, first)
    rule = _from(text, anchor, start)
    try:
        found = rule.between(
            datetime.combine(first, time()), datetime.combine(last, time()), inc=True
        )
    except Exception as exc:  # not met by a rule the checks pass; never a failed planning
        raise ScheduleError(f"dateutil cannot evaluate it ({type(exc).__name__}: {exc})") from exc
    return [moment.date() for moment in found]


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
    try:
        days = occurrences(rule.recurrence, spec.anchor, first, last)
    except ScheduleError as exc:
        _unusable(rule.recurrence, spec.anchor, str(exc))
        return []
    windows = []
    for day in days:
        begin = local_to_utc(day, rule.start, spec.zone)
        end_day = day if rule.end > rule.start else day + timedelta(days=1)
        finish = local_to_utc(end_day, rule.end, spec.zone)
        if begin < finish:  # a window a gap has emptied does not happen
            windows.append((begin, finish))
    return windows


@lru_cache(maxsize=256)
def _unusable(text: str, anchor: date, reason: str) -> None:
    """A stored rule the checks refuse (stored before they did: docs/schedules.md) holds on no
    day; said once per rule and anchor (cached), not at each evaluation."""
    log.warning("schedule_rule_unusable", recurrence=text, anchor=str(anchor), reason=reason)


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
