"""The schedule calendar (iod.domain.schedules) against an independent minute-by-minute
evaluation written here, over random rule sets in three zones with daylight saving (one with
a 30-minute shift), and the documented DST behaviour on fixed days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

from iod.domain import schedules as calendar

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
# Days around each zone's DST changes (2030), so most examples cross one.
DST_DAYS = {
    "America/New_York": [date(2030, 3, 10), date(2030, 11, 3)],
    "Europe/Berlin": [date(2030, 3, 31), date(2030, 10, 27)],
    "Australia/Lord_Howe": [date(2030, 4, 7), date(2030, 10, 6)],
}
RECURRENCES = [
    "FREQ=DAILY",
    "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
    "FREQ=WEEKLY;BYDAY=SA,SU",
    "FREQ=WEEKLY;BYDAY=SU",
    "FREQ=DAILY;INTERVAL=2",
    "FREQ=MONTHLY;BYDAY=1SU,-1SU",
]
# Times of day that hit the gaps and repeated hours: 02:00-03:00 (New York, Berlin),
# 01:30-02:30 (Lord Howe), on the quarter hour.
TIMES = st.integers(0, 24 * 4 - 1).map(lambda q: q * 900)


def _utc_candidates(naive: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every UTC instant whose wall time in `tz` is `naive`, found by trying the offsets the
    zone uses around then (not through `fold`)."""
    offsets = {
        tz.utcoffset(naive + timedelta(hours=h))  # type: ignore[arg-type]
        for h in (-30, -12, 0, 12, 30)
    }
    found = []
    for offset in offsets:
        assert offset is not None
        instant = (naive - offset).replace(tzinfo=UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == naive:
            found.append(instant)
    return sorted(found)


def oracle_instant(day: date, seconds: int, tz: ZoneInfo) -> datetime:
    """The documented conversion, computed another way: a repeated wall time is its first
    instant; a wall time in a gap moves forward by the gap (the wall time minus the offset
    in force before the gap)."""
    naive = datetime.combine(day, datetime.min.time()) + timedelta(seconds=seconds)
    found = _utc_candidates(naive, tz)
    if found:
        return found[0]
    before = tz.utcoffset(naive - timedelta(hours=3))  # type: ignore[arg-type]
    assert before is not None
    return (naive - before).replace(tzinfo=UTC)


def oracle(spec: calendar.Spec, start: datetime, minutes: int) -> list[tuple[datetime, int]]:
    """Minute by minute: the value at each minute, then the minutes where it changes."""
    tz = spec.zone
    first = start.astimezone(tz).date() - timedelta(days=3)
    last = first + timedelta(days=minutes // 1440 + 6)
    occurrences = []
    for rule in spec.rules:
        parsed = rrulestr(
            rule.recurrence, dtstart=datetime.combine(spec.anchor, datetime.min.time())
        )
        days = {d.date() for d in parsed.between(  # type: ignore[union-attr]
            datetime.combine(first, datetime.min.time()),
            datetime.combine(last, datetime.min.time()), inc=True)}  # fmt: skip
        windows = []
        for day in days:
            begin = oracle_instant(day, rule.start, tz)
            end_day = day if rule.end > rule.start else day + timedelta(days=1)
            end = oracle_instant(end_day, rule.end, tz)
            windows.append((begin, end))
        occurrences.append(windows)

    def value(moment: datetime) -> int | None:
        if spec.valid_from is not None and moment < spec.valid_from:
            return None
        if spec.valid_until is not None and moment >= spec.valid_until:
            return None
        local_day = moment.astimezone(tz).date()
        if local_day in spec.exceptions:
            return spec.exceptions[local_day] or spec.default_mbps
        winner = spec.default_mbps
        for rule, windows in zip(spec.rules, occurrences, strict=True):
            if any(b <= moment < e for b, e in windows):
                winner = rule.mbps  # later rules overwrite: the later rule wins
        return winner

    changes = []
    current = value(start)
    for minute in range(1, minutes + 1):
        moment = start + timedelta(minutes=minute)
        now = value(moment)
        if now is not None and now != current:
            changes.append((moment, now))
        current = now
    return changes


@st.composite
def specs(draw: st.DrawFn) -> tuple[calendar.Spec, datetime]:
    name = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(name)
    day = draw(st.sampled_from(DST_DAYS[name])) + timedelta(days=draw(st.integers(-2, 1)))
    start = datetime.combine(day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
    start += timedelta(minutes=15 * draw(st.integers(0, 95)))
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        begin = draw(TIMES)
        end = draw(TIMES.filter(lambda t, b=begin: t != b)) or calendar.DAY_SECONDS
        rules.append(
            calendar.Rule(
                draw(st.sampled_from([200, 500, 1000, 2000])),
                begin,
                end,
                draw(st.sampled_from(RECURRENCES)),
            )
        )
    exceptions = {
        day + timedelta(days=offset): draw(st.sampled_from([None, 50]))
        for offset in draw(st.sets(st.integers(-1, 2), max_size=2))
    }
    valid_from = valid_until = None
    if draw(st.booleans()):
        valid_from = start + timedelta(minutes=15 * draw(st.integers(0, 100)))
    if draw(st.booleans()):
        valid_until = start + timedelta(minutes=15 * draw(st.integers(101, 200)))
    anchor = day - timedelta(days=draw(st.integers(0, 10)))
    spec = calendar.Spec(tz, 100, tuple(rules), anchor, exceptions, valid_from, valid_until)
    return spec, start


@settings(max_examples=60, deadline=None)
@given(specs())
def test_transitions_match_a_minute_by_minute_evaluation(
    case: tuple[calendar.Spec, datetime],
) -> None:
    spec, start = case
    minutes = 48 * 60
    _, found = calendar.transitions(spec, start, start + timedelta(minutes=minutes))
    got = [(t.at, t.mbps) for t in found]
    assert got == oracle(spec, start, minutes)
    instants = [t.at for t in found]
    assert len(instants) == len(set(instants)), "two transitions at one instant"


def test_planning_in_pieces_equals_planning_at_once() -> None:
    """A planner that tops up hour by hour plans what one pass over the period plans."""
    tz = ZoneInfo("Europe/Berlin")
    spec = calendar.Spec(
        tz, 100,
        (calendar.Rule(1000, 2 * 3600 + 1800, 6 * 3600, "FREQ=DAILY"),
         calendar.Rule(500, 22 * 3600, 3 * 3600, "FREQ=WEEKLY;BYDAY=SA,SU")),
        date(2030, 3, 1),
    )  # fmt: skip
    start = datetime(2030, 3, 29, tzinfo=UTC)
    _, whole = calendar.transitions(spec, start, start + timedelta(days=4))
    pieces: list[calendar.Transition] = []
    for hour in range(96):
        begin = start + timedelta(hours=hour)
        pieces += calendar.transitions(spec, begin, begin + timedelta(hours=1))[1]
    assert pieces == whole


NY = ZoneInfo("America/New_York")


def _local(found: list[calendar.Transition], tz: ZoneInfo) -> list[tuple[str, int]]:
    return [(t.at.astimezone(tz).isoformat(), t.mbps) for t in found]


def test_spring_forward_shifts_a_missing_time_forward_by_the_gap() -> None:
    # 2030-03-10, New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
    spec = calendar.Spec(NY, 100, (calendar.Rule(1000, 2 * 3600 + 1800, 6 * 3600, "FREQ=DAILY"),),
                         date(2030, 3, 1))  # fmt: skip
    start = datetime(2030, 3, 9, 12, tzinfo=UTC)
    _, found = calendar.transitions(spec, start, start + timedelta(days=2))
    assert _local(found, NY) == [
        ("2030-03-10T03:30:00-04:00", 1000),  # 02:30 shifted by the one-hour gap
        ("2030-03-10T06:00:00-04:00", 100),
        ("2030-03-11T02:30:00-04:00", 1000),
        ("2030-03-11T06:00:00-04:00", 100),
    ]


def test_a_window_inside_the_gap_does_not_happen() -> None:
    spec = calendar.Spec(NY, 100, (calendar.Rule(1000, 2 * 3600 + 1800, 3 * 3600, "FREQ=DAILY"),),
                         date(2030, 3, 1))  # fmt: skip
    start = datetime(2030, 3, 10, 5, tzinfo=UTC)  # 00:00 EST on the spring day
    _, found = calendar.transitions(spec, start, start + timedelta(hours=20))
    assert found == []


def test_the_repeated_autumn_hour_is_its_first_occurrence() -> None:
    # 2030-11-03, New York: 01:00-02:00 happens twice (EDT, then EST).
    spec = calendar.Spec(NY, 100, (calendar.Rule(1000, 3600 + 1800, 2 * 3600, "FREQ=DAILY"),),
                         date(2030, 11, 1))  # fmt: skip
    start = datetime(2030, 11, 3, 4, tzinfo=UTC)  # 00:00 EDT
    _, found = calendar.transitions(spec, start, start + timedelta(hours=6))
    assert [(t.at.isoformat(), t.mbps) for t in found] == [
        ("2030-11-03T05:30:00+00:00", 1000),  # 01:30 EDT, the first 01:30
        ("2030-11-03T07:00:00+00:00", 100),  # 02:00 EST: the window lasts 1.5 hours
    ]


def test_lord_howe_half_hour_shift() -> None:
    # 2030-10-06, Lord Howe: 02:00 +10:30 jumps to 02:30 +11:00; 02:15 does not exist.
    tz = ZoneInfo("Australia/Lord_Howe")
    spec = calendar.Spec(tz, 100, (calendar.Rule(1000, 2 * 3600 + 900, 4 * 3600, "FREQ=DAILY"),),
                         date(2030, 10, 1))  # fmt: skip
    start = datetime(2030, 10, 5, 13, tzinfo=UTC)  # 23:30 local the day before
    _, found = calendar.transitions(spec, start, start + timedelta(hours=6))
    assert _local(found, tz) == [
        ("2030-10-06T02:45:00+11:00", 1000),  # shifted by the 30-minute gap
        ("2030-10-06T04:00:00+11:00", 100),
    ]


def test_later_rule_wins_and_exceptions_override() -> None:
    utc = ZoneInfo("UTC")
    spec = calendar.Spec(
        utc, 100,
        (calendar.Rule(1000, 8 * 3600, 18 * 3600, "FREQ=DAILY"),
         calendar.Rule(200, 12 * 3600, 13 * 3600, "FREQ=DAILY")),
        date(2030, 1, 1), {date(2030, 1, 2): None, date(2030, 1, 3): 5000},
    )  # fmt: skip
    start = datetime(2030, 1, 1, tzinfo=UTC)
    _, found = calendar.transitions(spec, start, start + timedelta(days=3))
    assert [(t.at.strftime("%d %H:%M"), t.mbps) for t in found] == [
        ("01 08:00", 1000), ("01 12:00", 200), ("01 13:00", 1000), ("01 18:00", 100),
        ("03 00:00", 5000), ("04 00:00", 100),
    ]  # fmt: skip


def test_invalid_parts_are_refused() -> None:
    for text in ("FREQ=HOURLY", "FREQ=DAILY;BYHOUR=3", "DTSTART:20300101T000000", "nonsense",
                 "FREQ=WEEKLY;BYDAY=XX", "FREQ=DAILY\nRRULE:FREQ=DAILY", "",
                 "FREQ=DAILY;INTERVAL=0", "FREQ=MONTHLY;INTERVAL=-1", "FREQ=DAILY;INTERVAL=1001",
                 "FREQ=YEARLY;INTERVAL=x"):  # fmt: skip
        try:
            calendar.recurrence(text, date(2030, 1, 1))
        except calendar.ScheduleError:
            continue
        raise AssertionError(f"{text!r} was accepted")
    for name in ("Mars/Base", "", "../../etc/passwd", "/etc/localtime"):
        try:
            calendar.zone(name)
        except calendar.ScheduleError:
            continue
        raise AssertionError(f"{name!r} was accepted")


def test_rules_that_never_occur_are_refused_quickly() -> None:
    """dateutil searches a rule with no occurrence up to the year 9999 (seconds for a daily
    one, each time it is evaluated): such rules are refused when parsed, and the check
    itself is bounded (the calendar repeats every 400 years)."""
    import time as clock

    never = ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "FREQ=YEARLY;BYWEEKNO=60", "FREQ=DAILY;COUNT=0",
             "FREQ=MONTHLY;BYSETPOS=40;BYDAY=MO", "FREQ=DAILY;UNTIL=20291231T000000")  # fmt: skip
    for text in never:
        began = clock.process_time()
        try:
            calendar.recurrence(text, date(2030, 1, 1))
        except calendar.ScheduleError as exc:
            assert "never occurs" in str(exc)
        else:
            raise AssertionError(f"{text!r} was accepted")
        assert clock.process_time() - began < 2.0  # generous: about 0.15 s on a slow machine
    # Rare but real: Feb 29 (every 4 years, not in 2100), every 7th year's Feb 29, one day.
    rare = ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "FREQ=YEARLY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29",
            "FREQ=DAILY;COUNT=1", "FREQ=DAILY;UNTIL=20300101T000000")  # fmt: skip
    for text in rare:
        calendar.recurrence(text, date(2030, 1, 1))
    for anchor in (date(2097, 3, 1), date(9980, 1, 1), date(1, 1, 1)):
        calendar.recurrence("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", anchor)
