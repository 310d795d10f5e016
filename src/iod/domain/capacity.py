"""Port capacity: what a location's live connections have committed may not exceed it.

The rule is stated once, here. `fits` is plain arithmetic on ints, and the same function
builds the condition of the conditional UPDATE that enforces it atomically on both
databases (`connections/capacity._reserve`: `WHERE fits(capacity, committed, delta)` on the
location's columns), so there is no second copy of it in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload


def committed_mbps(current: int, pending: Iterable[int]) -> int:
    """A connection commits the most it has or will have."""
    return max([current, *pending])


@overload
def fits(capacity_mbps: int, committed_total: int, extra_mbps: int) -> bool: ...
@overload
def fits(capacity_mbps: Any, committed_total: Any, extra_mbps: Any) -> Any: ...
def fits(capacity_mbps: Any, committed_total: Any, extra_mbps: Any) -> Any:
    """Whether `extra_mbps` more (negative: less) fits beside what is committed. On ints a
    bool; on SQL column expressions (anything with `+` and `<=`) the SQL condition."""
    return committed_total + extra_mbps <= capacity_mbps
