"""What the pages show that is not a template: times in the user's zone, local times read
back as UTC, and the connection's timeline drawn as an SVG chart on the server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup, escape

from iod.domain.bandwidth import format_bandwidth
from iod.domain.schedules import zone_names
from iod.infra.clock import as_utc
from iod.infra.errors import ValidationFailed, shown


def zone_of(name: str) -> ZoneInfo:
    """The zone named, or UTC for a name that is none: only the calendar's names are
    looked up, never a path a form sent (`America` is a directory of the zone files, a
    very long name no file name at all: both were a 500)."""
    if name in zone_names():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    return ZoneInfo("UTC")


def check_zone(name: str, pointer: str = "/timeZone") -> str:
    name = name.strip() or "UTC"
    # The calendar's list: no `localtime` (the host's zone), `posixrules` or `Factory`.
    if len(name) > 64 or name not in zone_names():
        raise ValidationFailed.field(pointer, f"{shown(name)} is not an IANA time zone name")
    return name


def local(value: datetime | None, zone: str) -> str:
    """`2030-01-01 10:00 CET`: the user's zone, named."""
    if value is None:
        return ""
    moment = as_utc(value).astimezone(zone_of(zone))
    return moment.strftime("%Y-%m-%d %H:%M ") + (moment.tzname() or zone)


def parse_local(text: str, zone: str, pointer: str) -> datetime:
    """A `datetime-local` value (`2030-01-01T10:00`) in the user's zone, as UTC."""
    text = text.strip()
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed.field(
            pointer, f"{shown(text, 40)} is not a date and time such as 2030-01-01T10:00"
        ) from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    # As the CLI's --at: a wall time the clocks skip is refused (it was moved an hour on
    # without a word), a repeated one is its first occurrence (fold=0).
    tz = zone_of(zone)
    moment = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if moment.astimezone(tz).replace(tzinfo=None) != naive:
        raise ValidationFailed.field(
            pointer,
            f"{text[:40]} does not exist in {zone}: the clocks skip it (daylight saving "
            "time begins); choose another time",
        )
    return moment


@dataclass(frozen=True)
class Step:
    at: datetime
    mbps: int
    planned: bool = False


@dataclass(frozen=True)
class Band:
    start: datetime
    status: str


COLORS = {
    "provisioning": "#b7791f",
    "active": "#2f855a",
    "suspended": "#c05621",
    "terminated": "#718096",
}
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 220, 70, 12, 12, 46
# Presentation attributes inline: the chart reads the same without the stylesheet.
STYLES = {
    "line": 'fill="none" stroke="#2b6cb0" stroke-width="2.5"',
    "plan": 'fill="none" stroke="#2b6cb0" stroke-width="2" stroke-dasharray="6 4"',
}


def timeline_svg(steps: Sequence[Step], bands: Sequence[Band], now: datetime, zone: str) -> Markup:
    """Bandwidth over time as a step line (planned changes dashed) over a strip of the
    status in force, on a log scale of Mbps; a <title> and <desc> say it in words."""
    if not steps:
        return Markup("")
    now = as_utc(now)
    start = min(as_utc(steps[0].at), now)
    elapsed = max(now - start, timedelta(minutes=1))
    last = max(as_utc(s.at) for s in steps)
    # The past fills the left, the planned future (however far) the right quarter: a
    # change planned for next month must not squeeze today's history into a line.
    future = last - now if last > now else timedelta(0)
    split = 0.75 if future else 0.95
    plot_w = W - LEFT - RIGHT

    def x(at: datetime) -> float:
        moment = as_utc(at)
        if moment <= now or not future:
            share = split * min((moment - start) / elapsed, 1.0)
        else:
            share = split + (0.95 - split) * ((moment - now) / future)
        return LEFT + plot_w * max(share, 0.0)

    values = sorted({s.mbps for s in steps})
    low, high = math.log10(max(values[0], 1)), math.log10(max(values[-1], 1))
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    plot_h = H - TOP - BOTTOM

    def y(mbps: int) -> float:
        return TOP + plot_h * (1 - (math.log10(max(mbps, 1)) - low) / (high - low)) * 0.9 + 5

    parts = [
        f'<svg class="timeline" viewBox="0 0 {W} {H}" role="img" '
        'aria-labelledby="tl-title tl-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="tl-title">Bandwidth and status over time</title>',
    ]
    words = "; ".join(
        f"{format_bandwidth(s.mbps)} {'planned ' if s.planned else ''}from {local(s.at, zone)}"
        for s in steps
    )
    parts.append(f'<desc id="tl-desc">{escape(words)}</desc>')
    for mbps in values:
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(mbps):.1f}" y2="{y(mbps):.1f}" '
            'class="grid" stroke="#e2e8f0"/>'
            f'<text x="{LEFT - 6}" y="{y(mbps) + 4:.1f}" text-anchor="end">'
            f"{escape(format_bandwidth(mbps))}</text>"
        )
    strip_y = H - BOTTOM + 6
    for i, band in enumerate(bands):
        x0 = x(max(as_utc(band.start), start))
        x1 = x(as_utc(bands[i + 1].start)) if i + 1 < len(bands) else x(now)
        color = COLORS.get(band.status, "#4a5568")
        parts.append(
            f'<rect x="{x0:.1f}" y="{strip_y}" width="{max(x1 - x0, 1):.1f}" height="10" '
            f'fill="{color}"><title>{escape(band.status)} from '
            f"{escape(local(band.start, zone))}</title></rect>"
        )
    past = [s for s in steps if not s.planned]
    planned = [s for s in steps if s.planned]
    parts.append(_path(past, x, y, x(now), "line"))
    if planned:
        parts.append(_path([past[-1], *planned] if past else planned, x, y, W - RIGHT, "plan"))
    parts.append(
        f'<line x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{TOP}" y2="{strip_y + 10}" class="now" '
        'stroke="#c53030" stroke-dasharray="2 3"/>'
        f'<text x="{LEFT}" y="{H - 8}">{escape(local(start, zone))}</text>'
        f'<text x="{x(now) + 3:.1f}" y="{TOP + 8}">now</text>'
        + (
            f'<text x="{W - RIGHT}" y="{H - 8}" text-anchor="end">'
            f"{escape(local(last, zone))}</text>"
            if future
            else ""
        )
    )
    parts.append("</svg>")
    # Every text in it went through escape(); the rest is numbers and fixed markup.
    return Markup("".join(parts))  # noqa: S704


def _path(steps: Sequence[Step], x: object, y: object, until: float, cls: str) -> str:
    assert callable(x) and callable(y)
    points: list[str] = []
    for i, step in enumerate(steps):
        px, py = x(step.at), y(step.mbps)
        if i:
            points.append(f"{px:.1f},{y(steps[i - 1].mbps):.1f}")
        points.append(f"{px:.1f},{py:.1f}")
    points.append(f"{until:.1f},{y(steps[-1].mbps):.1f}")
    style = STYLES[cls]
    return f'<polyline class="{cls}" {style} points="{" ".join(points)}"/>'
