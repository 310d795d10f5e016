"""IPv4 blocks for connections: carved from a location's pool, aligned, one size per request.

A block's first usable address is the provider edge's gateway, the second the customer's.
/30 is the default (one customer address); /29 and /28 give the customer more room.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

PREFIX_LENGTHS = (30, 29, 28)
DEFAULT_PREFIX_LENGTH = 30
# Pools handed to new locations when none is given: the next free /16 of 10.0.0.0/8.
DEFAULT_SUPERNET = IPv4Network("10.0.0.0/8")
DEFAULT_POOL_PREFIX = 16


class PoolExhausted(Exception):
    """No block of the asked size is left in the pool."""


def block_size(prefix_length: int) -> int:
    if prefix_length not in PREFIX_LENGTHS:
        raise ValueError(f"prefix length must be one of {PREFIX_LENGTHS}")
    return 1 << (32 - prefix_length)


def aligned(offset: int, size: int) -> int:
    """The first offset at or after `offset` where a block of `size` may start."""
    return -(-offset // size) * size


def block_at(pool: IPv4Network, offset: int, prefix_length: int) -> IPv4Network:
    """The block of `prefix_length` starting `offset` addresses into the pool."""
    size = block_size(prefix_length)
    if offset % size:
        raise ValueError("offset is not aligned to the block size")
    if offset < 0 or offset + size > pool.num_addresses:
        raise PoolExhausted(f"{pool} has no room for a /{prefix_length} at offset {offset}")
    return IPv4Network((int(pool.network_address) + offset, prefix_length))


def offset_in(pool: IPv4Network, block: IPv4Network) -> int:
    return int(block.network_address) - int(pool.network_address)


def gateway(block: IPv4Network) -> IPv4Address:
    return block.network_address + 1


def customer_address(block: IPv4Network) -> IPv4Address:
    return block.network_address + 2


def parse_pool(text: str) -> IPv4Network:
    """A location's pool: an IPv4 network of at least one /30, strict (no host bits)."""
    try:
        pool = IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 network such as 10.1.0.0/16: {exc}") from exc
    if pool.prefixlen > max(PREFIX_LENGTHS):
        raise ValueError(f"a pool must be at least a /{max(PREFIX_LENGTHS)}")
    return pool


def next_default_pool(taken: list[IPv4Network]) -> IPv4Network:
    """The first /16 of 10.0.0.0/8 that overlaps no pool already taken."""
    for candidate in DEFAULT_SUPERNET.subnets(new_prefix=DEFAULT_POOL_PREFIX):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise PoolExhausted("every /16 of 10.0.0.0/8 is taken: give the location a pool")
