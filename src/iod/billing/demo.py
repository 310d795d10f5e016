"""The demo price book: plausible hourly rates per tier (100 Mbps at $0.46 an hour, as in
the provider's own quote example), capped at 720 hours a month, at every demo location."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from iod.domain.bandwidth import format_bandwidth

DEMO_EFFECTIVE_FROM = "2026-01-01T00:00:00Z"
DEMO_HOURLY_USD = {
    1: "0.03", 5: "0.07", 10: "0.10", 20: "0.16", 50: "0.29", 100: "0.46", 200: "0.74",
    300: "0.97", 500: "1.39", 1000: "2.08", 2000: "3.47", 3000: "4.51", 5000: "6.25",
    10000: "10.42",
}  # fmt: skip


def demo_prices(locations: list[tuple[str, list[int]]]) -> list[dict[str, Any]]:
    """Rows for `service.import_prices`: every offered tier of each (id, tiers) location."""
    rows = []
    for location_id, tiers in locations:
        for tier in tiers:
            rate = DEMO_HOURLY_USD.get(tier)
            if rate is None:
                continue
            rows.append(
                {
                    "locationId": location_id,
                    "bandwidth": format_bandwidth(tier),
                    "currency": "USD",
                    "hourlyRate": rate,
                    "monthlyCap": str(Decimal(rate) * 720),
                    "effectiveFrom": DEMO_EFFECTIVE_FROM,
                }
            )
    return rows
