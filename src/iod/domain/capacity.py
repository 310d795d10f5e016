"""Port capacity: what a location's live connections have committed may not exceed it."""

from __future__ import annotations

from collections.abc import Iterable


def committed_mbps(current: int, pending: Iterable[int]) -> int:
    """A connection commits the most it has or will have."""
    return max([current, *pending])


def fits(capacity_mbps: int, committed_total: int, extra_mbps: int) -> bool:
    return committed_total + extra_mbps <= capacity_mbps
