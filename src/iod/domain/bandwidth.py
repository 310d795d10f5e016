"""Bandwidth on the wire is a string such as "100 Mbps"; inside it is an integer of Mbps."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# Up to 20 decimals: "1.0000001 Gbps" is understood and refused as not a whole number of Mbps.
_PATTERN = re.compile(r"^(\d{1,9}(?:\.\d{1,20})?) ?(mbps|gbps)$", re.IGNORECASE | re.ASCII)
MAX_MBPS = 1_000_000  # 1 Tbps: far above any port, small enough for every integer column


class BandwidthError(ValueError):
    """The text is not a bandwidth this service understands."""


def parse_bandwidth(text: str) -> int:
    """Parse "100 Mbps", "1Gbps", "1.5 gbps" into whole Mbps; anything else raises."""
    match = _PATTERN.fullmatch(text.strip())
    if match is None:
        raise BandwidthError(
            "bandwidth must be a positive number followed by Mbps or Gbps, e.g. '100 Mbps'"
        )
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise BandwidthError("bandwidth is not a number") from exc
    mbps = number * 1000 if match.group(2).lower() == "gbps" else number
    if mbps <= 0:
        raise BandwidthError("bandwidth must be positive")
    if mbps != mbps.to_integral_value():
        raise BandwidthError("bandwidth must be a whole number of Mbps")
    if mbps > MAX_MBPS:
        raise BandwidthError("bandwidth is larger than any port this service offers")
    return int(mbps)


@lru_cache(maxsize=4096)  # a few tiers cover most connections; a page formats 100
def format_bandwidth(mbps: int) -> str:
    """Canonical text: "100 Mbps", "1 Gbps", "1.5 Gbps"."""
    if mbps <= 0:
        raise ValueError("bandwidth must be positive")
    if mbps < 1000:
        return f"{mbps} Mbps"
    gbps = Decimal(mbps) / 1000
    text = format(gbps.normalize(), "f")
    return f"{text} Gbps"
