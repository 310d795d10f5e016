"""`iod schedules …`: recurring bandwidth schedules, on the SDK (customer commands).

A connection has at most one schedule, so the commands take the connection's id and find
its schedule (or take `--schedule ID`). The SDK is imported when a command runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.table import Table

from iod.client.terminal import safe

if TYPE_CHECKING:
    from iod.client import Client
    from iod.client.schedules import Schedule, SchedulePreview

schedules_app = typer.Typer(
    help="Recurring bandwidth schedules of your connections (see docs/schedules.md).",
    no_args_is_help=True,
)
ConnectionId = Annotated[str, typer.Argument(help="The connection's id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _cli() -> ModuleType:
    """`iod.client.cli`'s helpers (it imports this module when it registers the commands,
    so this one takes them when a command runs)."""
    from iod.client import cli

    return cli


ScheduleOption = Annotated[
    str | None,
    typer.Option("--schedule", help="The schedule's id (default: the connection's schedule)."),
]


def _find(api: Client, connection_id: str, schedule_id: str | None) -> str:
    if schedule_id is not None:
        return schedule_id
    found = api.list_schedules(connection_id)
    if not found:
        _cli().fail(_cli().EXIT_NOT_FOUND, f"connection {safe(connection_id)} has no schedule")
    return found[0].id


def show(schedule: Schedule) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("id", schedule.id),
        ("connection", schedule.connection_id),
        ("time zone", schedule.time_zone),
        ("default", schedule.default_bandwidth),
        ("paused", "yes" if schedule.paused else "no"),
    ]
    for index, rule in enumerate(schedule.rules):
        rows.append(
            (f"rule {index + 1}", f"{rule.bandwidth} {rule.start}-{rule.end} {rule.recurrence}")
        )
    for exception in schedule.exceptions:
        rows.append(("except", f"{exception.date} {exception.bandwidth or '(default)'}"))
    if schedule.valid_from:
        rows.append(("from", schedule.valid_from.isoformat()))
    if schedule.valid_until:
        rows.append(("until", schedule.valid_until.isoformat()))
    if schedule.planned_until:
        rows.append(("planned until", schedule.planned_until.isoformat()))
    if schedule.description:
        rows.append(("description", schedule.description))
    for name, value in rows:
        table.add_row(name, safe(value))
    _cli().out.print(table)


@schedules_app.command("create")
def schedules_create(
    connection_id: ConnectionId,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone, e.g. America/New_York.")],
    default: Annotated[str, typer.Option("--default", help="Bandwidth outside the rules.")],
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule",
            help="BANDWIDTH DAYS HH:MM-HH:MM, e.g. '1 Gbps MO-FR 08:00-18:00' (repeatable; "
            "a later rule wins where they overlap). DAYS: daily, weekdays, weekends, MO-FR, "
            "SA,SU, last-FR, first-MO, or an RRULE (FREQ=…).",
        ),
    ] = None,
    exception: Annotated[
        list[str] | None,
        typer.Option(
            "--except",
            help="A local date without the rules, YYYY-MM-DD, or YYYY-MM-DD=BANDWIDTH for "
            "that bandwidth all day (repeatable).",
        ),
    ] = None,
    valid_from: Annotated[str | None, typer.Option("--from", help="RFC 3339 start.")] = None,
    valid_until: Annotated[str | None, typer.Option("--until", help="RFC 3339 end.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    description: Annotated[str | None, typer.Option("--description")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the connection's schedule; its current bandwidth applies now."""
    from iod.client.schedules import RuleSyntaxError, parse_rule

    try:
        rules: list[str | dict[str, str]] = [parse_rule(r) for r in rule or []]
    except RuleSyntaxError as exc:
        _cli().fail(_cli().EXIT_USAGE, f"--rule: {exc}")
    exceptions: list[str | dict[str, str]] = []
    for item in exception or []:
        day, _, bandwidth = item.partition("=")
        exceptions.append({"date": day, "bandwidth": bandwidth} if bandwidth else day)
    start = _cli().parse_at(valid_from, "--from") if valid_from else None
    end = _cli().parse_at(valid_until, "--until") if valid_until else None
    with _cli().handled(), _cli().client() as api:
        schedule = api.create_schedule(
            connection_id, tz, default, rules, exceptions=exceptions, valid_from=start,
            valid_until=end, paused=paused, description=description,
        )  # fmt: skip
    if as_json:
        _cli().print_json(schedule.to_json())
        return
    show(schedule)


@schedules_app.command("list")
def schedules_list(
    connection_id: Annotated[
        str | None, typer.Argument(help="Only this connection's (default: all).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List your schedules."""
    with _cli().handled(), _cli().client() as api:
        found = api.list_schedules(connection_id)
    if as_json:
        _cli().print_json({"schedules": [s.to_json() for s in found]})
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("schedule", "connection", "time zone", "default", "rules", "paused"):
        table.add_column(name, no_wrap=True)
    for s in found:
        table.add_row(
            safe(s.id), safe(s.connection_id), safe(s.time_zone), safe(s.default_bandwidth),
            str(len(s.rules)), "yes" if s.paused else "no",
        )  # fmt: skip
    _cli().out.print(table)


@schedules_app.command("get")
def schedules_get(
    connection_id: ConnectionId, schedule: ScheduleOption = None, as_json: JsonFlag = False
) -> None:
    """Show the connection's schedule."""
    with _cli().handled(), _cli().client() as api:
        found = api.get_schedule(connection_id, _find(api, connection_id, schedule))
    if as_json:
        _cli().print_json(found.to_json())
        return
    show(found)


def _set_paused(connection_id: str, schedule: str | None, paused: bool, as_json: bool) -> None:
    with _cli().handled(), _cli().client() as api:
        schedule_id = _find(api, connection_id, schedule)
        if paused:
            found = api.pause_schedule(connection_id, schedule_id)
        else:
            found = api.resume_schedule(connection_id, schedule_id)
    if as_json:
        _cli().print_json(found.to_json())
        return
    show(found)


@schedules_app.command("pause")
def schedules_pause(
    connection_id: ConnectionId, schedule: ScheduleOption = None, as_json: JsonFlag = False
) -> None:
    """Pause the schedule: kept, but its changes not yet started are cancelled."""
    _set_paused(connection_id, schedule, True, as_json)


@schedules_app.command("resume")
def schedules_resume(
    connection_id: ConnectionId, schedule: ScheduleOption = None, as_json: JsonFlag = False
) -> None:
    """Resume the schedule: its current bandwidth applies now, its changes are planned."""
    _set_paused(connection_id, schedule, False, as_json)


@schedules_app.command("delete")
def schedules_delete(connection_id: ConnectionId, schedule: ScheduleOption = None) -> None:
    """Delete the schedule; its changes not yet started are cancelled."""
    with _cli().handled(), _cli().client() as api:
        schedule_id = _find(api, connection_id, schedule)
        api.delete_schedule(connection_id, schedule_id)
    _cli().out.print(f"deleted {safe(schedule_id)}")


def short(bandwidth: str) -> str:
    """`100 Mbps` → `100M`, `1 Gbps` → `1G`: a grid cell."""
    number, _, unit = bandwidth.partition(" ")
    return f"{number}{unit[:1].upper()}"


def bandwidth_at(preview: SchedulePreview, moment: datetime) -> str | None:
    current = preview.initial_bandwidth
    for transition in preview.transitions:
        if transition.at <= moment:
            current = transition.bandwidth
    return current


def peak(preview: SchedulePreview, begin: datetime, end: datetime) -> str | None:
    """The highest bandwidth asked for during [begin, end) within the preview's period."""
    begin, end = max(begin, preview.start), min(end, preview.end)
    if begin >= end:
        return None
    values = [bandwidth_at(preview, begin)]
    values += [t.bandwidth for t in preview.transitions if begin < t.at < end]
    present = [v for v in values if v is not None]
    return max(present, key=_mbps) if present else None


def week_grid(preview: SchedulePreview) -> Table:
    """Seven local days from `from`, a column per local hour: the highest bandwidth asked
    for during that hour (a DST day shows the hours the wall clock shows)."""
    zone = ZoneInfo(preview.time_zone)
    first: date = preview.start.astimezone(zone).date()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 0))
    table.add_column("day", no_wrap=True)
    for hour in range(24):
        table.add_column(f"{hour:02d}", no_wrap=True, justify="right")
    levels = sorted(
        {t.bandwidth for t in preview.transitions} | {preview.initial_bandwidth or ""},
        key=_mbps,
    )
    styles = ["dim", "", "cyan", "green", "yellow", "bold red"]
    for offset in range(7):
        day = first + timedelta(days=offset)
        cells = []
        for hour in range(24):
            moment = datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)
            value = peak(preview, moment, moment + timedelta(hours=1))
            if value is None:
                cells.append("")
                continue
            style = styles[min(levels.index(value), len(styles) - 1)] if value in levels else ""
            cells.append(f"[{style}]{safe(short(value))}[/]" if style else safe(short(value)))
        table.add_row(day.strftime("%a %d"), *cells)
    return table


def _mbps(bandwidth: str) -> float:
    number, _, unit = bandwidth.partition(" ")
    try:
        return float(number) * (1000 if unit.lower().startswith("g") else 1)
    except ValueError:
        return 0.0


@schedules_app.command("preview")
def schedules_preview(
    connection_id: ConnectionId,
    schedule: ScheduleOption = None,
    start: Annotated[str | None, typer.Option("--from", help="RFC 3339; default now.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="RFC 3339; default 7 days on.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The schedule's transitions (table) and a week view (a column per local hour)."""
    begin = _cli().parse_at(start, "--from") if start else None
    finish = _cli().parse_at(end, "--to") if end else None
    with _cli().handled(), _cli().client() as api:
        schedule_id = _find(api, connection_id, schedule)
        preview = api.preview_schedule(connection_id, schedule_id, begin, finish)
    if as_json:
        _cli().print_json(preview.to_json())
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("at (UTC)", f"local ({safe(preview.time_zone)})", "bandwidth"):
        table.add_column(name, no_wrap=True)
    table.add_row(
        preview.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M"), "(from)",
        safe(preview.initial_bandwidth or "(outside its validity)"),
    )  # fmt: skip
    for t in preview.transitions:
        table.add_row(
            t.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"), safe(t.local_time),
            safe(t.bandwidth),
        )  # fmt: skip
    _cli().out.print(table)
    if preview.paused:
        _cli().out.print("(paused: nothing of this is planned until it is resumed)")
    _cli().out.print(week_grid(preview))
