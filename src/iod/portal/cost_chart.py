"""The usage page's chart: cost per day of a month, as an SVG drawn on the server (bars,
one per day in UTC; a <title> on each bar and a <desc> in words), readable without
JavaScript or the stylesheet, like the connection's timeline (views.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal

from markupsafe import Markup, escape

from iod.domain import money

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 220, 70, 12, 14, 34
BAR = "#2b6cb0"


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 2.5, 5 times 10^n (minor units) at least `value` (and at least 1):
    the axis's top, so its half is a round amount too."""
    if value <= 1:
        return 1
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return int(10 * magnitude)  # pragma: no cover - 10 times magnitude always fits


def cost_per_day_svg(
    first_day: date, days: int, per_day: Mapping[date, int], currency: str, chart_id: str
) -> Markup:
    """Bars of `per_day` (minor units of `currency`) for the `days` days from `first_day`."""
    fmt = money.format_minor
    top = nice_ceiling(max(per_day.values(), default=0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / days

    def y(amount: int) -> float:
        return TOP + plot_h * (1 - amount / top)

    total = sum(per_day.values())
    words = f"Cost per day, {first_day:%Y-%m}: {fmt(total, currency)} {currency} in all"
    if per_day and total:
        high_day = max(per_day, key=lambda d: (per_day[d], -d.toordinal()))
        words += (
            f"; the most, {fmt(per_day[high_day], currency)} {currency}, "
            f"on {high_day.isoformat()}; "
            f"{sum(1 for v in per_day.values() if v)} days with a cost"
        )
    else:
        words += "; no rated usage yet"
    parts = [
        f'<svg class="costs" viewBox="0 0 {W} {H}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">Cost per day ({escape(currency)})</title>',
        f'<desc id="{chart_id}-desc">{escape(words)}</desc>',
    ]
    for amount in (0, top // 2 if top % 2 == 0 else None, top):
        if amount is None:
            continue
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(amount):.1f}" y2="{y(amount):.1f}" '
            'stroke="#e2e8f0"/>'
            f'<text x="{LEFT - 6}" y="{y(amount) + 4:.1f}" text-anchor="end" fill="#4a5568">'
            f"{escape(fmt(amount, currency))}</text>"
        )
    for index in range(days):
        day = first_day + timedelta(days=index)
        amount = per_day.get(day, 0)
        x = LEFT + slot * index
        if amount:
            parts.append(
                f'<rect x="{x + slot * 0.15:.1f}" y="{y(amount):.1f}" width="{slot * 0.7:.1f}" '
                f'height="{max(y(0) - y(amount), 1):.1f}" fill="{BAR}">'
                f"<title>{day.isoformat()}: {escape(fmt(amount, currency))} "
                f"{escape(currency)}</title></rect>"
            )
        if index == 0 or (index + 1) % 5 == 0 or index == days - 1:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" '
                f'fill="#4a5568">{day.day}</text>'
            )
    parts.append(
        f'<text x="{W - RIGHT}" y="{H - 4}" text-anchor="end" fill="#4a5568">'
        f"day of {first_day:%B %Y} (UTC)</text></svg>"
    )
    # Every text in it went through escape(); the rest is numbers and fixed markup.
    return Markup("".join(parts))  # noqa: S704


def hours(seconds: int) -> str:
    """3600 → "1", 5400 → "1.5", 1200 → "0.33": hours for people, not for sums."""
    value = (Decimal(seconds) / 3600).quantize(Decimal("0.01"))
    return f"{value.normalize():f}"
