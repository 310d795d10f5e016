"""Handing out and taking back connections' IPv4 blocks, in the caller's transaction.

The caller holds the location's row lock (create takes it just before, with the capacity
counter's UPDATE, and allocates from the `ipv4_next` that UPDATE returned), so two creates at
one location never pick the same block; the unique primary key would refuse it anyway. A
freed block of the asked size is reused before the pool's untouched tail is cut.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import cast

from sqlalchemy import Integer, String, Table, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from iod.domain.addressing import aligned, block_at, block_size
from iod.infra.db import TransactionSelect, TransactionWrite, update_loaded
from iod.models import Ipv4Block, Location


def allocate(session: Session, location: Location, prefix_length: int, connection_id: str) -> str:
    """The block given to `connection_id`, as CIDR text. Raises PoolExhausted when full.

    Its statements are compiled once and run on the transaction's connection
    (`TransactionSelect`, `TransactionWrite`, `update_loaded`: every order runs them,
    issue 14); no Ipv4Block object is loaded or flushed."""
    free = free_blocks(session).rows(session, location=location.id, prefix=prefix_length)
    if free:
        offset, network = free[0]
        held = session.identity_map.get(session.identity_key(Ipv4Block, (location.id, offset)))
        if held is not None:  # loaded in this transaction: the ORM writes it, in step
            cast(Ipv4Block, held).connection_id = connection_id
            session.flush()
        else:
            _TAKE.execute(
                session, {"location": location.id, "offset_": offset, "connection": connection_id}
            )
        return str(network)
    offset = aligned(location.ipv4_next, block_size(prefix_length))
    network = str(block_at(IPv4Network(location.ipv4_pool), offset, prefix_length))
    _INSERT_BLOCK.execute(
        session,
        {
            "location_id": location.id,
            "offset": offset,
            "prefix_length": prefix_length,
            "network": network,
            "connection_id": connection_id,
        },
    )
    update_loaded(session, location, {"ipv4_next": offset + block_size(prefix_length)})
    return network


_blocks = cast(Table, Ipv4Block.__table__)
# The first free block of the size asked for: the first entry of the index of the free
# blocks (models.Ipv4Block, migration 20261204_0016), named on SQLite. SQLite's planner,
# without statistics (nothing runs ANALYZE there), took the unique index of `connection_id`
# for `IS NULL` instead: every free block of every location, then a sort (4.7 ms with 20,000
# free blocks, against 2 us by the index; docs/performance.md, "Fifteenth step"). A database
# without the index (not migrated) refuses the statement: SQLite's is migrated at start.
_FREE = {
    "postgresql": TransactionSelect(
        select(_blocks.c.offset, _blocks.c.network)
        .where(
            _blocks.c.location_id == bindparam("location", type_=String),
            _blocks.c.prefix_length == bindparam("prefix", type_=Integer),
            _blocks.c.connection_id.is_(None),
        )
        .order_by(_blocks.c.offset)
        .limit(1)
    ),
    "sqlite": TransactionSelect(
        text(
            'SELECT "offset", network FROM ipv4_blocks '
            "INDEXED BY ix_ipv4_blocks_location_id_prefix_length_offset WHERE "
            "location_id = :location AND prefix_length = :prefix AND connection_id IS NULL "
            'ORDER BY "offset" LIMIT 1'
        )
        .bindparams(bindparam("location", type_=String), bindparam("prefix", type_=Integer))
        .columns(_blocks.c.offset, _blocks.c.network)
    ),
}
_TAKE = TransactionWrite(
    update(_blocks)
    .where(
        _blocks.c.location_id == bindparam("location", type_=String),
        _blocks.c.offset == bindparam("offset_", type_=Integer),
    )
    .values(connection_id=bindparam("connection", type_=String))
)
_INSERT_BLOCK = TransactionWrite(insert(_blocks))


def free_blocks(session: Session) -> TransactionSelect:
    """The statement of the first free block (`_FREE`) for the session's database."""
    dialect = session.get_bind().dialect.name
    return _FREE["sqlite" if dialect == "sqlite" else "postgresql"]


def release(session: Session, connection_id: str) -> None:
    """The connection's block is free again (its network objects are gone)."""
    session.execute(
        update(Ipv4Block)
        .where(Ipv4Block.connection_id == connection_id)
        .values(connection_id=None)
        .execution_options(synchronize_session=False)
    )
