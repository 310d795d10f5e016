"""Rating against an independent model: over random timelines (orders, changes, boosts,
suspends, resumes, terminations, price versions, quotes), the rated amount of a window is
the integral of the rate in force, to the documented rounding (half a minor unit per line),
and a statement's total is the sum of the hourly lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from iod.billing import statements
from iod.domain.money import format_minor, line_amount
from iod.domain.rating import HOUR, Facts, Rate, rate_hour
from iod.models import Statement, UsageLine

T0 = datetime(2030, 3, 1, tzinfo=UTC)
TIERS = (10, 100, 1000)
HOURS = 4
MINUTES = HOURS * 60


def at(minute: int, second: int = 0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[Facts, dict[tuple[str, int], list[Rate]], Decimal]:
    ordered = draw(st.sampled_from(TIERS))
    created = draw(st.integers(0, 30))
    transitions = [(at(created), "provisioning")]
    changes: list[tuple[datetime, int, str]] = []
    quotes: dict[str | None, Rate] = {}
    if draw(st.booleans()):
        quotes[None] = Rate(T0, draw(st.integers(1, 500)), "USD", None, "quote:order")
    minute = created + draw(st.integers(0, 20))
    transitions.append((at(minute), "active"))
    status = "active"
    for index in range(draw(st.integers(0, 12))):
        minute += draw(st.integers(0, 40))
        second = draw(st.integers(0, 59))
        if minute >= MINUTES + 30 or status == "terminated":
            break
        kind = draw(st.sampled_from(["change", "boost", "suspend", "resume", "terminate"]))
        if kind in ("change", "boost"):
            tier = draw(st.sampled_from(TIERS))
            changes.append((at(minute, second), tier, f"chg{index}"))
            if draw(st.booleans()):
                quotes[f"chg{index}"] = Rate(T0, draw(st.integers(1, 900)), "USD", None,
                                             f"quote:{index}")  # fmt: skip
            if kind == "boost":  # and its revert, later
                back = changes[-2][1] if len(changes) > 1 else ordered
                minute += draw(st.integers(1, 30))
                changes.append((at(minute, second), back, f"rev{index}"))
        elif kind == "suspend" and status == "active":
            status = "suspended"
            transitions.append((at(minute, second), status))
        elif kind == "resume" and status == "suspended":
            status = "active"
            transitions.append((at(minute, second), status))
        elif kind == "terminate":
            status = "terminated"
            transitions.append((at(minute, second), status))
    book: dict[tuple[str, int], list[Rate]] = {}
    for tier in TIERS:
        starts = sorted(set(draw(st.lists(st.integers(0, MINUTES), max_size=3)))) or [0]
        starts[0] = min(starts[0], 0) if draw(st.booleans()) else starts[0]
        book[("LOC", tier)] = [
            Rate(at(s), draw(st.integers(1, 1000)), "USD", None, f"price:{tier}:{s}")
            for s in starts
        ]
    fraction = draw(st.sampled_from([Decimal(1), Decimal(0), Decimal("0.5"), Decimal("0.3")]))
    facts = Facts("con", "LOC", ordered, transitions, changes, quotes)
    return facts, book, fraction


def exact_integral(
    facts: Facts, book: dict[tuple[str, int], list[Rate]], fraction: Decimal
) -> Fraction:
    """The model: second by second over the window, from the raw facts."""
    total = Fraction(0)
    events = sorted(
        [(t.replace(microsecond=0), 0, s, None) for t, s in facts.transitions]
        + [(t.replace(microsecond=0), 1, str(m), c) for t, m, c in facts.changes],
        key=lambda e: (e[0], e[1]),
    )
    status, mbps, origin = "none", facts.ordered_mbps, None
    pending = list(events)
    counts: dict[tuple[int, str], int] = {}
    for second in range(HOURS * 3600):
        now = T0 + timedelta(seconds=second)
        while pending and pending[0][0] <= now:  # the facts in force from this second
            _, kind, value, change = pending.pop(0)
            if kind == 0:
                status = value
            else:
                mbps, origin = int(value), change
        if status not in ("active", "suspended"):
            continue
        rate = facts.quotes.get(origin)
        if rate is None:
            versions = [r for r in book[("LOC", mbps)] if r.start <= now]
            if not versions:
                continue
            rate = versions[-1]
        counts[(rate.hourly_minor, status)] = counts.get((rate.hourly_minor, status), 0) + 1
    for (hourly, status_then), seconds in counts.items():
        factor = Fraction(1) if status_then == "active" else Fraction(fraction)
        total += Fraction(hourly * seconds) * factor / 3600
    return total


@settings(max_examples=60, deadline=None)
@given(timelines())
def test_rated_amount_is_the_integral_of_the_rate(case) -> None:  # type: ignore[no-untyped-def]
    facts, book, fraction = case
    lines = [
        line for hour in range(HOURS) for line in rate_hour(facts, T0 + hour * HOUR, book, fraction)
    ]
    rated = sum(line.amount_minor for line in lines)
    exact = exact_integral(facts, book, fraction)
    assert abs(Fraction(rated) - exact) <= Fraction(len(lines), 2)
    for line in lines:
        assert line.start < line.end and line.seconds == (line.end - line.start).total_seconds()
        factor = Decimal(1) if line.status == "active" else fraction
        assert line.amount_minor == line_amount(line.rate.hourly_minor, line.seconds, factor)
    # Summing the hourly lines gives the statement's total.
    rows = [
        UsageLine(
            connection_id="con", hour=line.start.replace(minute=0, second=0), customer_id="c",
            start_at=line.start, end_at=line.end, seconds=line.seconds, tier_mbps=line.mbps,
            status=line.status, currency="USD", hourly_minor=line.rate.hourly_minor,
            amount_minor=line.amount_minor, monthly_cap_minor=None, source=line.rate.source,
        )
        for line in lines
    ]  # fmt: skip
    statement = Statement(id="stm", customer_id="c", month="2030-03", status="open")
    doc = statements.document(statement, statements.group_lines(rows), None)
    expected = [format_minor(rated, "USD")] if rows else []
    assert [t["amount"] for t in doc["totals"]] == expected
    assert sum(g["seconds"] for g in doc["lines"]) == sum(line.seconds for line in lines)


def test_a_change_at_0920_splits_the_hour() -> None:
    book = {("LOC", 100): [Rate(T0, 46, "USD", None, "price:a")],
            ("LOC", 1000): [Rate(T0, 208, "USD", None, "price:b")]}  # fmt: skip
    facts = Facts("con", "LOC", 100, [(T0, "provisioning"), (T0, "active")],
                  [(at(20, 0), 1000, "chg")], {})  # fmt: skip
    lines = rate_hour(facts, T0, book, Decimal(1))
    assert [(x.mbps, x.seconds, x.amount_minor) for x in lines] == [(100, 1200, 15),
                                                                    (1000, 2400, 139)]  # fmt: skip


def test_monthly_cap_adjusts_the_statement() -> None:
    rows = [
        UsageLine(connection_id="con", hour=T0 + h * HOUR, customer_id="c", start_at=T0 + h * HOUR,
                  end_at=T0 + (h + 1) * HOUR, seconds=3600, tier_mbps=100, status="active",
                  currency="USD", hourly_minor=46, amount_minor=46, monthly_cap_minor=100,
                  source="price:a")
        for h in range(3)
    ]  # fmt: skip
    doc = statements.document(
        Statement(id="s", month="2030-03", status="open"), statements.group_lines(rows), None
    )
    assert len(doc["lines"]) == 1 and doc["lines"][0]["seconds"] == 3 * 3600
    assert doc["capAdjustments"][0]["amount"] == "-0.38"
    assert doc["totals"] == [
        {"currency": "USD", "usage": "1.38", "capAdjustment": "-0.38", "amount": "1.00"}
    ]
