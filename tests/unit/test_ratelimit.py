"""The token bucket: refill, burst, the header figures, and bounded memory."""

from __future__ import annotations

from iod.infra.ratelimit import Rate, TokenBuckets


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Rate(per_second=2, burst=3), ticker=ticker)
    assert [buckets.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("a")
    assert (refused.remaining, refused.retry_after, refused.reset) == (0, 1, 2)
    ticker.now += 0.5  # one token back
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    ticker.now += 100  # never more than the burst
    assert [buckets.take("a").allowed for _ in range(4)] == [True, True, True, False]


def test_a_refused_request_takes_nothing() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Rate(per_second=1, burst=1), ticker=ticker)
    assert buckets.take("a").allowed
    for _ in range(10):
        assert not buckets.take("a").allowed
    ticker.now += 1
    assert buckets.take("a").allowed


def test_keys_are_independent_and_give_back_restores() -> None:
    buckets = TokenBuckets(Rate(per_second=1, burst=1), ticker=Ticker())
    assert buckets.take("a").allowed and buckets.take("b").allowed
    assert not buckets.take("a").allowed
    buckets.give_back("a")
    assert buckets.take("a").allowed


def test_retry_after_is_at_least_a_second_and_covers_the_wait() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Rate(per_second=1 / 6, burst=2), ticker=ticker)  # 10 a minute
    buckets.take("a")
    buckets.take("a")
    refused = buckets.take("a")
    assert refused.retry_after == 6 and refused.reset == 12
    ticker.now += refused.retry_after
    assert buckets.take("a").allowed


def test_memory_is_bounded() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Rate(per_second=1, burst=5), ticker=ticker, max_keys=100)
    for n in range(1000):
        buckets.take(n)
    assert len(buckets) <= 100
    ticker.now += 10  # every bucket refilled: pruned first
    buckets.take("again")
    assert len(buckets) <= 51


def test_headers() -> None:
    decision = TokenBuckets(Rate(per_second=10, burst=20), ticker=Ticker()).take("a")
    assert decision.headers() == [
        (b"ratelimit-limit", b"20"),
        (b"ratelimit-remaining", b"19"),
        (b"ratelimit-reset", b"1"),
    ]
    assert not Rate(0, 10).enabled and not Rate(1, 0).enabled and Rate(1, 1).enabled


def test_a_charge_after_the_fact_may_leave_a_debt_that_is_waited_out() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Rate(per_second=2, burst=4), ticker=ticker)
    assert buckets.take("a").allowed  # 3 left
    charged = buckets.charge("a", 5)  # -2: allowed (the work is done), in debt
    assert charged.allowed and charged.remaining == 0 and charged.reset == 3
    refused = buckets.take("a")
    assert not refused.allowed and refused.retry_after == 2  # 3 tokens at 2/s
    ticker.now += 1.5  # +3: one token
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    assert buckets.charge("b", 1).remaining == 3  # another key: its own full bucket
