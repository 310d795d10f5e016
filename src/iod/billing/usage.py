"""What a customer used: the rated lines of a window, by hour, day or month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.billing import repository
from iod.domain import money
from iod.domain.bandwidth import format_bandwidth
from iod.domain.rating import HOUR, floor_hour
from iod.infra.errors import NotFound, shown
from iod.infra.ids import looks_like_id

MAX_WINDOW = timedelta(days=366)
# Far outside any usage, and far from datetime's limits (no overflow at the edges).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _period(moment: datetime, granularity: str) -> datetime:
    hour = floor_hour(moment)
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if granularity == "day" else day.replace(day=1)


def usage(
    session: Session,
    principal: Principal,
    start: datetime,
    end: datetime,
    connection_id: str | None,
    granularity: str,
) -> dict[str, Any]:
    """Lines per connection, period, tier, status and rate; totals per currency. The window
    is cut to whole hours (its start floored, its end rounded up)."""
    # An empty window has no lines, one longer than 366 days is cut to the 366 days before
    # its end, and both ends are kept within 2000-2200 (the answer's `from` and `to` say what
    # was read). A `to` before an explicit `from` is refused by the endpoint.
    start, end = (min(max(t.astimezone(UTC), EARLIEST), LATEST) for t in (start, end))
    end = max(end, start)
    start = max(start, end - MAX_WINDOW)
    if connection_id is not None:
        from iod.connections import repository as connections

        found = looks_like_id(connection_id) and connections.get_for_customer(
            session, principal.customer_id, connection_id
        )
        if not found:
            raise NotFound(f"no connection {shown(connection_id)}")
    lo = floor_hour(start)
    # An empty window stays empty (not the hour around it).
    hi = floor_hour(end) + (HOUR if end != floor_hour(end) and end > start else timedelta(0))
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[str, int] = {}
    for line in repository.usage_lines(session, principal.customer_id, lo, hi, connection_id):
        period = _period(line.hour, granularity)
        key = (line.connection_id, period, line.tier_mbps, line.status, line.hourly_minor,
               line.currency)  # fmt: skip
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"seconds": 0, "amount": 0}
        group["seconds"] += line.seconds
        group["amount"] += line.amount_minor
        totals[line.currency] = totals.get(line.currency, 0) + line.amount_minor
    last = repository.last_metered_hour(session)
    return {
        "from": lo,
        "to": hi,
        "granularity": granularity,
        "ratedUntil": last + HOUR if last is not None else None,
        "lines": [
            {
                "connectionId": key[0],
                "periodStart": key[1],
                "bandwidth": format_bandwidth(key[2]),
                "status": key[3],
                "seconds": group["seconds"],
                "hourlyRate": money.format_minor(key[4], key[5]),
                "currency": key[5],
                "amount": money.format_minor(group["amount"], key[5]),
            }
            for key, group in sorted(groups.items(), key=lambda item: item[0][:3])
        ],
        "totals": [
            {"currency": c, "amount": money.format_minor(a, c)} for c, a in sorted(totals.items())
        ],
    }
