"""Bandwidth tiers a location offers, and the port capacity its connections commit."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iod.domain.bandwidth import format_bandwidth, parse_bandwidth
from iod.domain.capacity import committed_mbps, fits
from iod.domain.tiers import DEFAULT_TIERS_MBPS, is_offered, tiers_up_to
from tests.conftest import thorough

EXPECTED_TIERS = (1, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000)

mbps = st.integers(min_value=0, max_value=1_000_000)


def test_default_tiers_are_the_product_tiers() -> None:
    assert DEFAULT_TIERS_MBPS == EXPECTED_TIERS
    assert isinstance(DEFAULT_TIERS_MBPS, tuple)  # immutable: a shared default


def test_default_tiers_are_strictly_increasing() -> None:
    assert all(a < b for a, b in itertools.pairwise(DEFAULT_TIERS_MBPS))


def test_default_tiers_have_canonical_text() -> None:
    texts = [format_bandwidth(t) for t in DEFAULT_TIERS_MBPS]
    assert texts == [
        "1 Mbps", "5 Mbps", "10 Mbps", "20 Mbps", "50 Mbps", "100 Mbps", "200 Mbps",
        "300 Mbps", "500 Mbps", "1 Gbps", "2 Gbps", "3 Gbps", "5 Gbps", "10 Gbps",
    ]  # fmt: skip
    assert [parse_bandwidth(t) for t in texts] == list(DEFAULT_TIERS_MBPS)


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [
        (0, []),
        (-5, []),
        (1, [1]),
        (4, [1]),
        (5, [1, 5]),
        (99, [1, 5, 10, 20, 50]),
        (100, [1, 5, 10, 20, 50, 100]),
        (999, [1, 5, 10, 20, 50, 100, 200, 300, 500]),
        (1000, [1, 5, 10, 20, 50, 100, 200, 300, 500, 1000]),
        (9999, [1, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000]),
        (10_000, list(EXPECTED_TIERS)),
        (1_000_000, list(EXPECTED_TIERS)),
    ],
)
def test_tiers_up_to(capacity: int, expected: list[int]) -> None:
    assert tiers_up_to(capacity) == expected


def test_tiers_up_to_with_custom_tiers() -> None:
    assert tiers_up_to(250, (100, 250, 400)) == [100, 250]
    assert tiers_up_to(50, (100, 250, 400)) == []
    assert tiers_up_to(50, ()) == []


def test_tiers_up_to_returns_a_fresh_list() -> None:
    first = tiers_up_to(100)
    first.append(12345)
    assert tiers_up_to(100) == [1, 5, 10, 20, 50, 100]
    assert DEFAULT_TIERS_MBPS == EXPECTED_TIERS


@settings(max_examples=thorough(300))
@given(mbps)
def test_tiers_up_to_is_the_prefix_that_fits(capacity: int) -> None:
    offered = tiers_up_to(capacity)
    assert all(t <= capacity for t in offered)
    assert all(t > capacity for t in DEFAULT_TIERS_MBPS if t not in offered)
    # Order kept: the offered tiers are a prefix of the (sorted) product tiers.
    assert tuple(offered) == DEFAULT_TIERS_MBPS[: len(offered)]


@settings(max_examples=thorough(200))
@given(mbps, mbps)
def test_tiers_up_to_is_monotonic_in_capacity(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert set(tiers_up_to(low)) <= set(tiers_up_to(high))


def test_is_offered() -> None:
    offered = tiers_up_to(1000)
    assert is_offered(100, offered)
    assert is_offered(1000, offered)
    assert not is_offered(2000, offered)
    assert not is_offered(150, offered)
    assert not is_offered(100, [])
    assert is_offered(5, (1, 5))


# -- capacity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "pending", "expected"),
    [
        (100, [], 100),
        (100, [50], 100),
        (100, [500], 500),
        (100, [50, 1000, 200], 1000),
        (1000, [10, 20], 1000),
        (0, [], 0),
        (0, [10], 10),
    ],
)
def test_committed_mbps(current: int, pending: list[int], expected: int) -> None:
    assert committed_mbps(current, pending) == expected


def test_committed_mbps_accepts_any_iterable() -> None:
    assert committed_mbps(10, (x for x in [5, 30, 20])) == 30
    assert committed_mbps(10, iter(())) == 10
    assert committed_mbps(10, {40, 3}) == 40


@settings(max_examples=thorough(300))
@given(mbps, st.lists(mbps, max_size=10))
def test_committed_mbps_is_the_most_the_connection_will_have(
    current: int, pending: list[int]
) -> None:
    committed = committed_mbps(current, pending)
    assert committed >= current
    assert all(committed >= p for p in pending)
    assert committed in [current, *pending]


@pytest.mark.parametrize(
    ("capacity", "committed", "extra", "expected"),
    [
        (1000, 0, 1000, True),
        (1000, 0, 1001, False),
        (1000, 900, 100, True),
        (1000, 900, 101, False),
        (1000, 1000, 0, True),
        (1000, 1000, 1, False),
        (1000, 1200, 0, False),  # already over (e.g. capacity lowered): nothing more fits
        (0, 0, 0, True),
        (0, 0, 1, False),
    ],
)
def test_fits(capacity: int, committed: int, extra: int, expected: bool) -> None:
    assert fits(capacity, committed, extra) is expected


@settings(max_examples=thorough(300))
@given(mbps, mbps, mbps)
def test_fits_means_total_within_capacity(capacity: int, committed: int, extra: int) -> None:
    assert fits(capacity, committed, extra) == (committed + extra <= capacity)


@settings(max_examples=thorough(200))
@given(mbps, mbps, mbps, st.integers(min_value=1, max_value=1000))
def test_fits_is_monotonic(capacity: int, committed: int, extra: int, more: int) -> None:
    if fits(capacity, committed, extra):
        assert fits(capacity + more, committed, extra)
        assert fits(capacity, committed, max(extra - more, 0))
    else:
        assert not fits(capacity, committed, extra + more)
        assert not fits(capacity, committed + more, extra)


@settings(max_examples=thorough(200))
@given(
    st.integers(min_value=1, max_value=100_000),
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=10_000), st.lists(mbps, max_size=3)),
        max_size=8,
    ),
)
def test_admitting_only_what_fits_never_overcommits(
    capacity: int, requests: list[tuple[int, list[int]]]
) -> None:
    """Admit connections one by one with fits(); the port is never overcommitted."""
    total = 0
    for current, pending in requests:
        need = committed_mbps(current, pending)
        if fits(capacity, total, need):
            total += need
        assert total <= capacity


def test_fits_builds_the_sql_condition_of_the_checked_update() -> None:
    """One rule: on the location's columns, `fits` is the WHERE of the conditional UPDATE."""
    from sqlalchemy import column

    condition = fits(column("capacity_mbps"), column("committed_mbps"), 100)
    compiled = condition.compile(compile_kwargs={"literal_binds": True})
    assert str(compiled) == "committed_mbps + 100 <= capacity_mbps"
