"""Handing out and taking back connections' IPv4 blocks, in the caller's transaction.

The caller holds the location's row lock (create takes it just before, with the capacity
counter's UPDATE, and allocates from the `ipv4_next` that UPDATE returned), so two creates at
one location never pick the same block; the unique primary key would refuse it anyway. A
freed block of the asked size is reused before the pool's untouched tail is cut.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from iod.domain.addressing import aligned, block_at, block_size
from iod.models import Ipv4Block, Location


def allocate(session: Session, location: Location, prefix_length: int, connection_id: str) -> str:
    """The block given to `connection_id`, as CIDR text. Raises PoolExhausted when full."""
    free = session.scalar(
        select(Ipv4Block)
        .where(Ipv4Block.location_id == location.id)
        .where(Ipv4Block.prefix_length == prefix_length)
        .where(Ipv4Block.connection_id.is_(None))
        .order_by(Ipv4Block.offset)
        .limit(1)
    )
    if free is not None:
        free.connection_id = connection_id
        return free.network
    offset = aligned(location.ipv4_next, block_size(prefix_length))
    network = str(block_at(IPv4Network(location.ipv4_pool), offset, prefix_length))
    session.add(
        Ipv4Block(
            location_id=location.id,
            offset=offset,
            prefix_length=prefix_length,
            network=network,
            connection_id=connection_id,
        )
    )
    location.ipv4_next = offset + block_size(prefix_length)
    return network


def release(session: Session, connection_id: str) -> None:
    """The connection's block is free again (its network objects are gone)."""
    session.execute(
        update(Ipv4Block)
        .where(Ipv4Block.connection_id == connection_id)
        .values(connection_id=None)
        .execution_options(synchronize_session=False)
    )
