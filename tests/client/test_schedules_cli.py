"""The short rule grammar (iod.client.schedules) and the preview's week grid, offline."""

from __future__ import annotations

import pytest
from rich.console import Console

from iod.client.schedules import RuleSyntaxError, SchedulePreview, parse_rule
from iod.client.schedules_cli import peak, week_grid


@pytest.mark.parametrize(
    ("text", "recurrence", "start", "end"),
    [
        ("1 Gbps MO-FR 08:00-18:00", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "08:00", "18:00"),
        ("500Mbps fr-mo 22:00-6:00", "FREQ=WEEKLY;BYDAY=MO,FR,SA,SU", "22:00", "06:00"),
        ("2 Gbps last-FR 00:00-06:00", "FREQ=MONTHLY;BYDAY=-1FR", "00:00", "06:00"),
        ("2 Gbps first-MO 00:00-24:00", "FREQ=MONTHLY;BYDAY=1MO", "00:00", "24:00"),
        ("1 Gbps weekdays 9:00-17:30", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "09:00", "17:30"),
        ("1 Gbps weekends 10:00-12:00", "FREQ=WEEKLY;BYDAY=SA,SU", "10:00", "12:00"),
        ("1 Gbps daily 10:00-12:00", "FREQ=DAILY", "10:00", "12:00"),
        ("1 Gbps SA,TU,SA 10:00-12:00", "FREQ=WEEKLY;BYDAY=TU,SA", "10:00", "12:00"),
        ("1 Gbps FREQ=YEARLY;BYMONTH=12 10:00-12:00", "FREQ=YEARLY;BYMONTH=12", "10:00", "12:00"),
    ],
)
def test_short_rules(text: str, recurrence: str, start: str, end: str) -> None:
    rule = parse_rule(text)
    assert (rule["recurrence"], rule["start"], rule["end"]) == (recurrence, start, end)


@pytest.mark.parametrize(
    "text",
    [
        "1 Gbps",
        "fast MO-FR 08:00-18:00",
        "1 Gbps XX 08:00-18:00",
        "1 Gbps MO 8-18",
        "1 Gbps fifth-MO 08:00-18:00",
        # A range with a side missing was read as its one day ("MO-" as Mondays only).
        "1 Gbps MO- 08:00-18:00",
        "1 Gbps -FR 08:00-18:00",
        "1 Gbps MO,,FR 08:00-18:00",
        "1 Gbps MO-FR, 08:00-18:00",
        # Digits other than ASCII ones: the hours were converted, the minutes sent as typed.
        "1 Gbps daily 08:\uff10\uff10-18:00",
        "1 Gbps daily \u0660\u0668:00-18:00",
    ],
)
def test_bad_short_rules_say_what_was_expected(text: str) -> None:
    with pytest.raises(RuleSyntaxError):
        parse_rule(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("1 Gbps MO- 08:00-18:00", "'MO-'"), ("1 Gbps -2-MO 08:00-18:00", "'-2-MO'")],
)
def test_a_broken_day_range_is_named_whole(text: str, shown: str) -> None:
    with pytest.raises(RuleSyntaxError, match=shown):
        parse_rule(text)


def test_week_grid_shows_each_hours_peak() -> None:
    preview = SchedulePreview.model_validate(
        {
            "scheduleId": "sch_x", "timeZone": "America/New_York", "paused": False,
            "from": "2030-01-07T05:00:00Z", "to": "2030-01-14T05:00:00Z",
            "initialBandwidth": "100 Mbps",
            "transitions": [
                {"at": "2030-01-07T13:00:00Z", "localTime": "2030-01-07T08:00:00-05:00",
                 "bandwidth": "1 Gbps"},
                {"at": "2030-01-07T13:00:05Z", "localTime": "2030-01-07T08:00:05-05:00",
                 "bandwidth": "100 Mbps"},
            ],
        }
    )  # fmt: skip
    assert preview.to_json()["from"] == "2030-01-07T05:00:00Z"
    hour = preview.transitions[0].at
    assert peak(preview, hour.replace(minute=0), hour.replace(hour=14)) == "1 Gbps"
    console = Console(width=200, record=True, color_system=None)
    console.print(week_grid(preview))
    text = console.export_text()
    monday = next(line for line in text.splitlines() if line.strip().startswith("Mon 07"))
    cells = monday.split()
    assert cells[2 + 8] == "1G" and cells[2 + 7] == "100M"  # 08:00 local holds a 5 s window
