"""Rating, in plain Python: what was in force on the network, second by second, and what an
hour of it costs. The metering task feeds it the worker's facts (docs/money.md).

- A connection is billed from its activation (provisioning is free) until its termination.
- The tier is what the network had in force: the ordered tier from activation, then each
  applied change from its `applied_at`.
- Suspended time is billed at `suspended_fraction` (a setting: 1, a fraction, or 0).
- The rate of a stretch is its quote's when the order or change that started the stretch
  used a quote, else the price book's version in force at each second (so a new price
  version splits a stretch at its `effective_from`).
- Times are cut to whole seconds (floored) before anything is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from iod.domain.money import line_amount

HOUR = timedelta(hours=1)
ACTIVE = "active"
SUSPENDED = "suspended"
BILLED = (ACTIVE, SUSPENDED)


def floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Rate:
    """A rate in force from `start` (a price version or a quote)."""

    start: datetime
    hourly_minor: int
    currency: str
    monthly_cap_minor: int | None
    source: str  # "price:<id>" or "quote:<id>"


@dataclass(frozen=True)
class Facts:
    """What the worker recorded about one connection (times need not be whole seconds)."""

    connection_id: str
    location_id: str
    ordered_mbps: int
    # (at, to_status) in order: the status history.
    transitions: Sequence[tuple[datetime, str]]
    # (applied_at, to_mbps, change_id) in order: applied bandwidth changes.
    changes: Sequence[tuple[datetime, int, str]]
    # The quote used by the order (key None) or by a change (key: its id).
    quotes: Mapping[str | None, Rate]


@dataclass(frozen=True)
class Span:
    """A stretch with one status and tier; `origin` is the change that set the tier (None:
    the order)."""

    start: datetime
    end: datetime
    status: str
    mbps: int
    origin: str | None


@dataclass(frozen=True)
class Line:
    start: datetime
    end: datetime
    seconds: int
    mbps: int
    status: str
    rate: Rate
    amount_minor: int


def spans(facts: Facts, until: datetime) -> list[Span]:
    """The billable stretches (active or suspended) before `until`, in order."""
    moments: list[tuple[datetime, int, str, int, str | None]] = []
    for index, (at, status) in enumerate(facts.transitions):
        moments.append((floor_second(at), 0, status, index, None))
    for index, (at, mbps, change_id) in enumerate(facts.changes):
        moments.append((floor_second(at), 1, str(mbps), index, change_id))
    moments.sort(key=lambda m: (m[0], m[1], m[3]))
    status = "provisioning"
    mbps = facts.ordered_mbps
    origin: str | None = None
    since: datetime | None = None
    out: list[Span] = []

    def close(at: datetime) -> None:
        if since is not None and status in BILLED and at > since:
            out.append(Span(since, at, status, mbps, origin))

    for moment in moments:
        at = min(moment[0], until)
        close(at)
        if moment[1] == 0:
            status = moment[2]
        else:
            mbps, origin = int(moment[2]), moment[4]
        since = at
    close(until)
    return [s for s in out if s.start < until]


def _rate_pieces(
    start: datetime, end: datetime, versions: Sequence[Rate]
) -> list[tuple[datetime, datetime, Rate]]:
    """[start, end) cut where the price version in force changes; no version: not rated."""
    pieces: list[tuple[datetime, datetime, Rate]] = []
    for index, version in enumerate(versions):
        later = versions[index + 1].start if index + 1 < len(versions) else None
        lo = max(start, version.start)
        hi = end if later is None else min(end, later)
        if lo < hi:
            pieces.append((lo, hi, version))
    return pieces


def rate_hour(
    facts: Facts,
    hour: datetime,
    prices: Mapping[tuple[str, int], Sequence[Rate]],
    suspended_fraction: Decimal,
) -> list[Line]:
    """The lines of [hour, hour + 1h): one per stretch of one status, tier and rate."""
    end = hour + HOUR
    lines: list[Line] = []
    for span in spans(facts, end):
        lo, hi = max(span.start, hour), min(span.end, end)
        if lo >= hi:
            continue
        quoted = facts.quotes.get(span.origin)
        if quoted is not None and quoted.start <= lo:
            pieces = [(lo, hi, quoted)]
        else:
            pieces = _rate_pieces(lo, hi, prices.get((facts.location_id, span.mbps), ()))
        fraction = Decimal(1) if span.status == "active" else suspended_fraction
        for a, b, rate in pieces:
            seconds = int((b - a).total_seconds())
            amount = line_amount(rate.hourly_minor, seconds, fraction)
            lines.append(Line(a, b, seconds, span.mbps, span.status, rate, amount))
    return lines


def parse_fraction(text: str) -> Decimal:
    """The suspended rule: "full" (1), "none" (0) or a fraction between 0 and 1 ("0.5")."""
    words = {"full": Decimal(1), "none": Decimal(0)}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        value = Decimal(text.strip())
    except ArithmeticError as exc:
        raise ValueError(f"{text!r}: expected full, none or a fraction such as 0.5") from exc
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(1):
        raise ValueError(f"{text!r}: a fraction must be between 0 and 1")
    return value
