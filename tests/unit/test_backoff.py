"""Retry backoff: exponential with full jitter, capped."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iod.jobs.queue import backoff_seconds
from tests.conftest import thorough


class EdgeRng(random.Random):
    """Returns an end of the interval, to read the bound the function asks for."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.high else a


def bound(attempts: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** (attempts - 1))


@settings(max_examples=thorough(500))
@given(
    attempts=st.integers(min_value=1, max_value=1000),
    base=st.floats(min_value=0, max_value=1000, allow_nan=False),
    cap=st.floats(min_value=0, max_value=100_000, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_within_zero_and_the_capped_exponential(
    attempts: int, base: float, cap: float, seed: int
) -> None:
    value = backoff_seconds(attempts, base, cap, random.Random(seed))
    assert 0 <= value <= bound(attempts, base, cap)
    assert value <= cap


@pytest.mark.parametrize(
    ("attempts", "base", "cap", "expected"),
    [
        (1, 1.0, 60.0, 1.0),
        (2, 1.0, 60.0, 2.0),
        (3, 1.0, 60.0, 4.0),
        (6, 1.0, 60.0, 32.0),
        (7, 1.0, 60.0, 60.0),
        (30, 1.0, 60.0, 60.0),
        (4, 0.5, 60.0, 4.0),
        (3, 10.0, 25.0, 25.0),
        (5, 0.0, 60.0, 0.0),
        (5, 2.0, 0.0, 0.0),
    ],
)
def test_backoff_interval_is_zero_to_capped_exponential(
    attempts: int, base: float, cap: float, expected: float
) -> None:
    high, low = EdgeRng(high=True), EdgeRng(high=False)
    assert backoff_seconds(attempts, base, cap, high) == expected
    assert backoff_seconds(attempts, base, cap, low) == 0
    assert high.calls == [(0, expected)]


def test_attempt_zero_is_not_longer_than_the_first_retry() -> None:
    rng = EdgeRng(high=True)
    assert 0 <= backoff_seconds(0, 1.0, 60.0, rng) <= 1.0


def test_same_seed_same_backoff() -> None:
    values = [backoff_seconds(4, 1.0, 60.0, random.Random(7)) for _ in range(3)]
    assert len(set(values)) == 1


def test_backoff_is_jittered_over_the_whole_interval() -> None:
    rng = random.Random(1234)
    samples = [backoff_seconds(5, 1.0, 60.0, rng) for _ in range(4_000)]
    assert all(0 <= s <= 16.0 for s in samples)
    assert min(samples) < 0.5
    assert max(samples) > 15.5
    assert 7.0 < statistics.fmean(samples) < 9.0  # full jitter: mean is half the bound
    assert len(set(samples)) > 3_900


def test_backoff_grows_with_attempts_until_the_cap() -> None:
    rng = random.Random(99)
    means = [
        statistics.fmean(backoff_seconds(n, 1.0, 60.0, rng) for _ in range(2_000))
        for n in (1, 3, 5, 10)
    ]
    assert means[0] < means[1] < means[2] < means[3]
    assert 27.0 < means[3] < 33.0  # capped at 60: mean about 30


@pytest.mark.parametrize("attempts", [1025, 5000])
def test_backoff_is_capped_for_very_many_attempts(attempts: int) -> None:
    value = backoff_seconds(attempts, 1.0, 60.0, random.Random(0))
    assert 0 <= value <= 60.0
