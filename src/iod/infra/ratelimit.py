"""Token buckets in this process's memory: per OAuth client on the API, per client id and per
source address on the token endpoint.

Hand-written on purpose: the well-kept Python rate-limit libraries (`limits`, slowapi,
pyrate-limiter) offer fixed or sliding windows or leaky buckets, not a token bucket, and cost
more than these few lines on the authenticated GET, which is benchmarked. State is per
process: with N API processes a client gets up to N times the configured rate (see
docs/operations.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens are added up to `burst`; a request takes one. 0 disables."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0 and self.burst > 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request, with what the RateLimit-* headers say."""

    allowed: bool
    limit: int  # the bucket's size (the burst)
    remaining: int  # whole tokens left after this request
    reset: int  # seconds until the bucket is full again
    retry_after: int  # when refused: seconds until a token is there again

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset),
        ]


class TokenBuckets:
    """One bucket per key. A full bucket is the same as no bucket, so full ones are dropped
    when the table grows past `max_keys`; if it is still too large (keys sprayed by an
    attacker), the oldest entries are forgotten, which bounds memory at the cost of those
    keys starting again with a full bucket."""

    def __init__(
        self,
        rate: Rate,
        *,
        ticker: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self._ticker = ticker
        self._max_keys = max_keys
        # key -> [tokens, time they were counted]
        self._buckets: dict[Hashable, list[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable, cost: float = 1.0) -> Decision:
        """Takes `cost` tokens if they are there; a refused request takes nothing."""
        rate, burst = self.rate.per_second, self.rate.burst
        now = self._ticker()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = [float(burst), now]
            tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            bucket[0], bucket[1] = tokens, now
        retry_after = 0 if allowed else max(1, math.ceil((cost - tokens) / rate))
        return Decision(
            allowed=allowed,
            limit=burst,
            remaining=max(0, int(tokens)),
            reset=math.ceil((burst - tokens) / rate),
            retry_after=retry_after,
        )

    def charge(self, key: Hashable, cost: float) -> Decision:
        """Takes `cost` more tokens for a request already allowed, whose price is known
        only once it is done (a list page: its rows): the bucket may go below zero, and the
        client's next requests wait until it has paid the debt off."""
        rate, burst = self.rate.per_second, self.rate.burst
        now = self._ticker()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(burst), now]
            tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate) - cost
            bucket[0], bucket[1] = tokens, now
        return Decision(
            allowed=True,
            limit=burst,
            remaining=max(0, int(tokens)),
            reset=math.ceil((burst - tokens) / rate),
            retry_after=0,
        )

    def give_back(self, key: Hashable, cost: float = 1.0) -> None:
        """Returns tokens taken for an attempt that turned out not to count."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket[0] = min(float(self.rate.burst), bucket[0] + cost)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        """Down to half of `max_keys`: full buckets first, then the oldest, so the scan is
        paid once per max_keys/2 new keys."""
        rate, burst = self.rate.per_second, self.rate.burst
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= burst]
        for key in full:
            del self._buckets[key]
        excess = len(self._buckets) - self._max_keys // 2
        if excess > 0:
            for key in list(self._buckets)[:excess]:
                del self._buckets[key]


@dataclass
class Limits:
    """Every limiter of one process; a disabled one is None."""

    reads: TokenBuckets | None
    writes: TokenBuckets | None
    token_requests: TokenBuckets | None
    token_failures: TokenBuckets | None


def build_limits(
    *,
    reads: Rate,
    writes: Rate,
    token_requests: Rate,
    token_failures: Rate,
    ticker: Callable[[], float] = time.monotonic,
) -> Limits:
    def make(rate: Rate) -> TokenBuckets | None:
        return TokenBuckets(rate, ticker=ticker) if rate.enabled else None

    return Limits(make(reads), make(writes), make(token_requests), make(token_failures))


# A read costs one token, taken before it runs; a list answer costs one more per this many
# rows it returns, charged once they are known (docs/api.md, "Limits").
ROWS_PER_TOKEN = 100


def row_charge(rows: int) -> int:
    """The tokens a list answer of `rows` rows costs beyond the one every read takes."""
    return rows // ROWS_PER_TOKEN
