"""The schedule calendar's RRULEs (iod.domain.schedules): rules dateutil cannot step through
are refused when parsed, whatever year they would fail in; a rule stored before that holds
on no day instead of failing each evaluation; a rule's occurrences far from its first day
cost what the range asked for costs (the rule started near it, its phase kept: checked
against dateutil from the first day); time zones are IANA names only."""

from __future__ import annotations

import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.easter import easter
from dateutil.rrule import rrule, rrulestr
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from iod.domain import schedules as calendar


def _refused(text: str, anchor: date = date(2030, 1, 1)) -> str:
    try:
        calendar.recurrence(text, anchor)
    except calendar.ScheduleError as exc:
        return str(exc)
    raise AssertionError(f"{text!r} was accepted")


def test_rules_dateutil_fails_on_are_refused_not_raised() -> None:
    # Each raised IndexError inside dateutil (a 500), some only in some months or years:
    # the first two at once, the others only once a late month or a late Easter came.
    for text, anchor in (
        ("FREQ=MONTHLY;BYDAY=+53MO", date(2030, 1, 1)),
        ("FREQ=DAILY;BYEASTER=99999", date(2030, 1, 1)),
        ("FREQ=DAILY;BYEASTER=-99999", date(2030, 1, 1)),
        ("FREQ=YEARLY;BYDAY=+60MO", date(2030, 1, 1)),
        ("FREQ=MONTHLY;BYDAY=+10MO,1TU", date(2030, 1, 1)),  # December only
        ("FREQ=YEARLY;BYMONTH=1,12;BYDAY=+8MO,1TU", date(2030, 1, 1)),
        ("FREQ=DAILY;BYEASTER=260", date(2030, 1, 1)),  # a late Easter only (2038)
        ("FREQ=DAILY;BYEASTER=-100", date(2030, 1, 1)),  # wrapped silently to December
    ):
        message = _refused(text, anchor)
        assert "BYDAY" in message or "BYEASTER" in message, (text, message)
    # The largest counts that can match are kept, and every rule dateutil ignores counts in.
    for text in ("FREQ=MONTHLY;BYDAY=+5MO,-5FR", "FREQ=YEARLY;BYDAY=53MO,-53SU",
                 "FREQ=YEARLY;BYMONTH=2;BYDAY=-5SU,4SU", "FREQ=WEEKLY;BYDAY=+53MO",
                 "FREQ=DAILY;BYEASTER=-80,0,250", "FREQ=MONTHLY;BYDAY=MO(+2)"):  # fmt: skip
        calendar.recurrence(text, date(2030, 1, 1))


def test_the_bounds_accepted_never_fail_in_any_year() -> None:
    """The bounds hold in every year, not only the ones tried: Easter's day of the year (0
    from January 1) is 80 to 115 from 1583 to 9999, and the extreme rules accepted run
    through the 400-year cycle of weekdays and leap years."""
    low, high = calendar.EASTER_OFFSETS
    days = set()
    for year in range(1583, 10000):
        day = (easter(year) - date(year, 1, 1)).days
        length = (date(year + 1, 1, 1) - date(year, 1, 1)).days if year < 9999 else 365
        assert day + low >= 0 and day + high < length, year
        days.add(day)
    assert (min(days), max(days)) == (80, 115)  # so the bounds are the widest that hold
    for text in ("FREQ=MONTHLY;BYDAY=+5MO,-5FR,5SU,-5SA", "FREQ=YEARLY;BYDAY=53MO,-53SU,53SA",
                 "FREQ=YEARLY;BYMONTH=1,2,12;BYDAY=5MO,-5SU", "FREQ=DAILY;BYEASTER=-80,250",
                 "FREQ=YEARLY;BYWEEKNO=1,52,53,-1,-53;BYDAY=MO,SU;WKST=SU"):  # fmt: skip
        rule = rrulestr(text, dtstart=datetime(2000, 1, 1))
        assert isinstance(rule, rrule)
        assert len(rule.between(datetime(2000, 1, 1), datetime(2401, 1, 1))) > 0


def test_a_stored_rule_refused_now_holds_on_no_day() -> None:
    """Passed the old check (its first months are fine), failed in December at each planning:
    now the rule holds on no day, the schedule's other rules as usual, and it is checked
    once, not at each evaluation."""
    bad = "FREQ=MONTHLY;BYDAY=+10MO,1TU"
    spec = calendar.Spec(
        ZoneInfo("UTC"), 100,
        (calendar.Rule(1000, 8 * 3600, 18 * 3600, "FREQ=WEEKLY;BYDAY=WE"),
         calendar.Rule(2000, 9 * 3600, 10 * 3600, bad)),
        date(2030, 1, 1),
    )  # fmt: skip
    start = datetime(2030, 12, 1, tzinfo=UTC)
    _, found = calendar.transitions(spec, start, start + timedelta(days=7))
    assert [(t.at.day, t.at.hour, t.mbps) for t in found] == [(4, 8, 1000), (4, 18, 100)]
    assert calendar.value_at(spec, datetime(2030, 12, 3, 9, 30, tzinfo=UTC)) == 100
    began = clock.process_time()
    for _ in range(200):
        calendar.transitions(spec, start, start + timedelta(days=2))
    assert clock.process_time() - began < 2.0


def test_occurrences_far_from_the_first_day_cost_the_range_only() -> None:
    """20 rules `FREQ=DAILY;BYMONTH=n` a week in 9000-12: dateutil from the first day (2030)
    walked every day since, seconds per rule (more than 30 s in all)."""
    rules = tuple(
        calendar.Rule(1000 + n, 8 * 3600, 18 * 3600, f"FREQ=DAILY;BYMONTH={n % 12 + 1}")
        for n in range(20)
    )
    spec = calendar.Spec(ZoneInfo("Europe/Berlin"), 100, rules, date(2030, 1, 1))
    began = clock.process_time()
    for year in (3000, 9000):
        start = datetime(year, 12, 1, tzinfo=UTC)
        _, found = calendar.transitions(spec, start, start + timedelta(days=31))
        assert len(found) == 2 * 31  # the last December rule (n=19), each day
    assert clock.process_time() - began < 2.0


def test_count_is_an_end_found_once() -> None:
    anchor = date(2030, 1, 1)
    assert calendar.occurrences("FREQ=WEEKLY;COUNT=3", anchor, date(2030, 1, 1),
                                date(2031, 1, 1)) == [date(2030, 1, 1), date(2030, 1, 8),
                                                      date(2030, 1, 15)]  # fmt: skip
    assert calendar.occurrences("FREQ=DAILY;COUNT=3", anchor, date(8000, 1, 1),
                                date(8000, 2, 1)) == []  # fmt: skip
    assert "COUNT" in _refused("FREQ=YEARLY;COUNT=102")
    assert "COUNT" in _refused("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;COUNT=30")
    calendar.recurrence("FREQ=YEARLY;COUNT=101", anchor)
    calendar.recurrence("FREQ=DAILY;COUNT=36000", anchor)


@pytest.mark.parametrize("anchor", [date(2000, 2, 29), date(2400, 2, 29)])
def test_count_from_a_29_february_whose_year_a_century_on_is_not_leap(anchor: date) -> None:
    """The COUNT bound is 100 years on: from 2000-02-29 that is 2100, no leap year (was a
    ValueError, a 500 at the schedule's creation and a failed planning)."""
    calendar.recurrence("FREQ=DAILY;COUNT=3", anchor)
    assert calendar.occurrences("FREQ=DAILY;COUNT=3", anchor, anchor, anchor + timedelta(9)) == [
        anchor,
        anchor + timedelta(1),
        anchor + timedelta(2),
    ]


# --- the rule started near the range asked for equals dateutil from its first day ----------

WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def rules(draw: st.DrawFn) -> str:
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts = [f"FREQ={freq}"]
    interval = draw(st.one_of(st.integers(1, 4), st.integers(5, 60)))
    if interval > 1 or draw(st.booleans()):
        parts.append(f"INTERVAL={interval}")
    if draw(st.booleans()):
        parts.append(f"WKST={draw(st.sampled_from(WEEKDAYS))}")
    by_month = draw(st.booleans())
    if by_month:
        months = draw(st.sets(st.integers(1, 12), min_size=1, max_size=4))
        parts.append("BYMONTH=" + ",".join(map(str, sorted(months))))
    by = draw(st.sampled_from(["", "BYDAY", "BYNTHDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO",
                               "BYEASTER"]))  # fmt: skip
    if by == "BYDAY":
        days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1, max_size=4))
        parts.append("BYDAY=" + ",".join(sorted(days)))
    elif by == "BYNTHDAY" and freq in ("MONTHLY", "YEARLY"):
        most = 5 if freq == "MONTHLY" or by_month else 53
        nth = st.integers(-most, most).filter(bool)
        items = draw(st.lists(st.tuples(nth, st.sampled_from(WEEKDAYS)), min_size=1, max_size=3))
        parts.append("BYDAY=" + ",".join(f"{n:+d}{d}" for n, d in items))
    elif by == "BYMONTHDAY":
        days = draw(st.sets(st.integers(-31, 31).filter(bool), min_size=1, max_size=3))
        parts.append("BYMONTHDAY=" + ",".join(map(str, sorted(days))))
    elif by == "BYYEARDAY":
        days = draw(st.sets(st.integers(-366, 366).filter(bool), min_size=1, max_size=3))
        parts.append("BYYEARDAY=" + ",".join(map(str, sorted(days))))
    elif by == "BYWEEKNO" and freq == "YEARLY":
        weeks = draw(st.sets(st.integers(-53, 53).filter(bool), min_size=1, max_size=2))
        parts.append("BYWEEKNO=" + ",".join(map(str, sorted(weeks))))
    elif by == "BYEASTER":
        parts.append(f"BYEASTER={draw(st.integers(*calendar.EASTER_OFFSETS))}")
    if len(parts) > 1 + (interval > 1) and draw(st.booleans()):
        positions = draw(st.sets(st.integers(-3, 3).filter(bool), min_size=1, max_size=2))
        parts.append("BYSETPOS=" + ",".join(map(str, sorted(positions))))
    end = draw(st.sampled_from(["", "", "COUNT", "UNTIL"]))
    if end == "COUNT":
        parts.append(f"COUNT={draw(st.integers(1, 40))}")
    elif end == "UNTIL":
        until = date(2030, 1, 1) + timedelta(days=draw(st.integers(0, 40 * 366)))
        parts.append(f"UNTIL={until:%Y%m%d}T000000")
    return ";".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
# A WEEKLY rule started on its anchor's weekday instead of its week's start (WKST) would cut
# that week short: BYSETPOS would pick Friday 2030-03-08 instead of Monday 2030-03-04.
@example("FREQ=WEEKLY;BYDAY=MO,FR;BYSETPOS=1", 1, 63, 14)
# What dateutil derives from the anchor (its weekday, its day of the month, its month).
@example("FREQ=WEEKLY;INTERVAL=3", 1, 400, 30)
@example("FREQ=MONTHLY;INTERVAL=5", 30, 3000, 62)
@example("FREQ=YEARLY;INTERVAL=2", 58, 9000, 62)
@example("FREQ=MONTHLY;BYDAY=-1FR;BYSETPOS=-1;COUNT=30", 3, 700, 62)
@given(
    rules(),
    st.integers(-400, 400),  # the anchor, in days from 2030-01-01
    st.one_of(st.integers(-40, 40), st.integers(0, 30 * 366)),  # the range's first day...
    st.integers(0, 62),  # ...and its length
)
def test_the_rule_started_near_the_range_has_the_same_occurrences(
    text: str, anchor_days: int, offset: int, length: int
) -> None:
    anchor = date(2030, 1, 1) + timedelta(days=anchor_days)
    try:
        calendar.recurrence(text, anchor)
    except calendar.ScheduleError:
        assume(False)
    first = anchor + timedelta(days=offset)
    last = first + timedelta(days=length)
    whole = rrulestr(text, dtstart=datetime.combine(anchor, time()))
    assert isinstance(whole, rrule)
    expected = whole.between(
        datetime.combine(first, time()), datetime.combine(last, time()), inc=True
    )
    assert calendar.occurrences(text, anchor, first, last) == [d.date() for d in expected]


# --- time zones -------------------------------------------------------------------------------


def test_only_iana_zone_names_are_zones() -> None:
    # zoneinfo loads these (localtime: the host's /etc/localtime), but they are no IANA zone.
    for name in ("localtime", "posixrules", "Factory", "right/UTC", "posix/UTC",
                 "posix/Europe/Berlin", "right/Europe/Berlin", "utc"):  # fmt: skip
        try:
            calendar.zone(name, given=True)
        except calendar.ScheduleError as exc:
            assert "not a known IANA time zone" in str(exc)
            continue
        raise AssertionError(f"{name!r} was accepted")
    for name in ("UTC", "Etc/UTC", "GMT", "America/New_York", "Europe/Berlin",
                 "Australia/Lord_Howe", "Asia/Kolkata", "Etc/GMT+5"):  # fmt: skip
        assert calendar.zone(name, given=True).key == name
    assert len(calendar.zone_names()) > 300
    assert calendar.zone_names() is calendar.zone_names()  # read once


def test_a_stored_zone_accepted_before_the_check_still_loads() -> None:
    """`localtime` and `Factory` were accepted before the IANA check: a schedule stored with
    one must still be planned (an evaluation error would fail its planner job for ever)."""
    assert calendar.zone("Factory").key == "Factory"
    with pytest.raises(calendar.ScheduleError):
        calendar.zone("Factory", given=True)
