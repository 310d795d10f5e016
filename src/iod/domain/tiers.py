"""The product's bandwidth tiers, and what a location offers of them."""

from __future__ import annotations

DEFAULT_TIERS_MBPS: tuple[int, ...] = (
    1, 5, 10, 20, 50, 100, 200, 300, 500,
    1000, 2000, 3000, 5000, 10000,
)  # fmt: skip


def tiers_up_to(capacity_mbps: int, tiers: tuple[int, ...] = DEFAULT_TIERS_MBPS) -> list[int]:
    """A location offers the tiers that fit its port."""
    return [t for t in tiers if t <= capacity_mbps]


def is_offered(mbps: int, offered: list[int] | tuple[int, ...]) -> bool:
    return mbps in offered
