"""ipv4 blocks: a pool per location, a block per connection

Revision ID: 20261126_0004
Revises: 20261126_0003
Create Date: 2026-11-26 19:10:00

Existing locations get the next free /16 of 10.0.0.0/8 as their pool, in id order, and
existing live connections a /30 each, in creation order, so a database upgraded in place
looks like one that was created at this revision.
"""

from collections.abc import Sequence
from ipaddress import IPv4Network

import sqlalchemy as sa
from alembic import op

revision: str = "20261126_0004"
down_revision: str | None = "20261126_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = ("provisioning", "active", "suspended")


def upgrade() -> None:
    op.create_table(
        "ipv4_blocks",
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("prefix_length", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=18), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_ipv4_blocks_location_id_locations")
        ),
        sa.PrimaryKeyConstraint("location_id", "offset", name=op.f("pk_ipv4_blocks")),
        sa.UniqueConstraint("connection_id", name=op.f("uq_ipv4_blocks_connection_id")),
    )
    with op.batch_alter_table("ipv4_blocks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ipv4_blocks_location_id_prefix_length_connection_id"),
            ["location_id", "prefix_length", "connection_id"],
            unique=False,
        )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ipv4_block", sa.String(length=18), nullable=True))
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ipv4_pool", sa.String(length=18), nullable=True))
        batch_op.add_column(
            sa.Column("ipv4_next", sa.Integer(), server_default="0", nullable=False)
        )

    _backfill(op.get_bind())

    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.alter_column("ipv4_pool", existing_type=sa.String(length=18), nullable=False)


def _backfill(bind: sa.engine.Connection) -> None:
    locations = sa.table(
        "locations", sa.column("id"), sa.column("ipv4_pool"), sa.column("ipv4_next")
    )
    connections = sa.table(
        "connections",
        sa.column("id"),
        sa.column("location_id"),
        sa.column("status"),
        sa.column("created_at"),
        sa.column("ipv4_block"),
    )
    blocks = sa.table(
        "ipv4_blocks",
        sa.column("location_id"),
        sa.column("offset"),
        sa.column("prefix_length"),
        sa.column("network"),
        sa.column("connection_id"),
    )
    pools = iter(IPv4Network("10.0.0.0/8").subnets(new_prefix=16))
    for (location_id,) in bind.execute(sa.select(locations.c.id).order_by(locations.c.id)):
        pool = next(pools)
        live = bind.execute(
            sa.select(connections.c.id)
            .where(connections.c.location_id == location_id)
            .where(connections.c.status.in_(_LIVE))
            .order_by(connections.c.created_at, connections.c.id)
        ).scalars()
        offset = 0
        for connection_id in live:
            network = str(IPv4Network((int(pool.network_address) + offset, 30)))
            bind.execute(
                blocks.insert().values(
                    location_id=location_id,
                    offset=offset,
                    prefix_length=30,
                    network=network,
                    connection_id=connection_id,
                )
            )
            bind.execute(
                connections.update()
                .where(connections.c.id == connection_id)
                .values(ipv4_block=network)
            )
            offset += 4
        bind.execute(
            locations.update()
            .where(locations.c.id == location_id)
            .values(ipv4_pool=str(pool), ipv4_next=offset)
        )


def downgrade() -> None:
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_column("ipv4_next")
        batch_op.drop_column("ipv4_pool")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("ipv4_block")
    with op.batch_alter_table("ipv4_blocks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ipv4_blocks_location_id_prefix_length_connection_id"))
    op.drop_table("ipv4_blocks")
