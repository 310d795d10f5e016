"""edge agents (desired state per location, operations), traffic counters and samples

Revision ID: 20261130_0012
Revises: 20261130_0011
Create Date: 2026-11-30 13:00:00.000000

New tables only: the previous release's code runs on this schema unchanged (it never reads
them, and a location without an agent keeps the in-process driver).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0012"
down_revision: str | None = "20261130_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = iod.infra.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "edge_agents",
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("cursor", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acked_cursor", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("actual_count", sa.Integer(), nullable=True),
        sa.Column("drift", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_contact_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_edge_agents_location_id_locations")
        ),
        sa.PrimaryKeyConstraint("location_id", name=op.f("pk_edge_agents")),
        sa.UniqueConstraint("client_id", name=op.f("uq_edge_agents_client_id")),
    )
    op.create_table(
        "edge_desired",
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("op_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("bandwidth_mbps", sa.Integer(), nullable=False),
        sa.Column("ipv4_block", sa.String(length=18), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("location_id", "connection_id", name=op.f("pk_edge_desired")),
    )
    op.create_index(op.f("ix_edge_desired_location_id_seq"), "edge_desired", ["location_id", "seq"])
    op.create_table(
        "edge_operations",
        sa.Column("op_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("acked_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("op_id", name=op.f("pk_edge_operations")),
    )
    op.create_index(
        op.f("ix_edge_operations_location_id_status"),
        "edge_operations",
        ["location_id", "status"],
    )
    op.create_table(
        "traffic_counters",
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("packets_in", sa.BigInteger(), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_traffic_counters")),
    )
    op.create_table(
        "traffic_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("resolution", sa.Integer(), server_default="0", nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("packets_in", sa.BigInteger(), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), nullable=False),
        sa.Column("peak_in_bps", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("peak_out_bps", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_samples")),
    )
    op.create_index(
        op.f("ix_traffic_samples_connection_id_at"), "traffic_samples", ["connection_id", "at"]
    )
    op.create_index(
        op.f("ix_traffic_samples_resolution_at"), "traffic_samples", ["resolution", "at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_traffic_samples_resolution_at"), table_name="traffic_samples")
    op.drop_index(op.f("ix_traffic_samples_connection_id_at"), table_name="traffic_samples")
    op.drop_table("traffic_samples")
    op.drop_table("traffic_counters")
    op.drop_index(op.f("ix_edge_operations_location_id_status"), table_name="edge_operations")
    op.drop_table("edge_operations")
    op.drop_index(op.f("ix_edge_desired_location_id_seq"), table_name="edge_desired")
    op.drop_table("edge_desired")
    op.drop_table("edge_agents")
