"""IPv4 block arithmetic: aligned, inside the pool, never overlapping."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iod.domain.addressing import (
    PoolExhausted,
    aligned,
    block_at,
    block_size,
    customer_address,
    gateway,
    next_default_pool,
    parse_pool,
)


def test_block_roles() -> None:
    block = IPv4Network("10.0.0.4/30")
    assert str(gateway(block)) == "10.0.0.5"
    assert str(customer_address(block)) == "10.0.0.6"


@given(st.lists(st.sampled_from([30, 29, 28]), min_size=1, max_size=60))
def test_bump_allocation_never_overlaps(sizes: list[int]) -> None:
    pool = IPv4Network("10.1.0.0/22")
    offset, blocks = 0, []
    for prefix in sizes:
        start = aligned(offset, block_size(prefix))
        block = block_at(pool, start, prefix)
        offset = start + block_size(prefix)
        assert block.subnet_of(pool)
        assert int(block.network_address) % block_size(prefix) == 0
        assert not any(block.overlaps(other) for other in blocks)
        blocks.append(block)


def test_pool_end_is_exhaustion() -> None:
    pool = IPv4Network("10.1.0.0/29")
    assert str(block_at(pool, 4, 30)) == "10.1.0.4/30"
    with pytest.raises(PoolExhausted):
        block_at(pool, 8, 30)


@pytest.mark.parametrize("bad", ["10.1.0.1/24", "10.1.0.0/31", "nonsense", "::/64", "10.0.0.0/33"])
def test_bad_pools_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_pool(bad)


def test_default_pools_skip_taken_ones() -> None:
    assert str(next_default_pool([])) == "10.0.0.0/16"
    taken = [IPv4Network("10.0.0.0/16"), IPv4Network("10.1.128.0/17")]
    assert str(next_default_pool(taken)) == "10.2.0.0/16"
