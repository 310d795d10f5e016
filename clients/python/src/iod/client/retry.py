"""When and how long to wait before sending a request again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one call on connection errors and on `statuses` (429 and 503).

    `attempts` counts the first try. The n-th wait is drawn from [d/2, d] with
    d = min(`max_delay`, `base_delay` * 2**(n-1)) (exponential backoff, jitter), or is the
    server's `Retry-After` when that is longer; a `Retry-After` above `max_retry_after`
    is not waited for and the error is raised. POST and PUT carry one `Idempotency-Key`
    across all attempts, so a retry cannot do the work twice.
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """The wait before the next attempt, or None when the error should be raised."""
        if attempt >= self.attempts:
            return None
        wait = self.backoff(attempt)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            wait = max(wait, retry_after)
        return wait


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
