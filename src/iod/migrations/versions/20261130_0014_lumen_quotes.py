"""Lumen quotes: lumen_quotes (what a Lumen priceRequest adds to a money quote)

Revision ID: 20261130_0014
Revises: 20261130_0013
Create Date: 2026-11-30 13:30:00.000000

A new table only: the previous release's code never reads it (docs/lumen.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0014"
down_revision: str | None = "20261130_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lumen_quotes",
        sa.Column("quote_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=11), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["quote_id"], ["quotes.id"], name=op.f("fk_lumen_quotes_quote_id_quotes")
        ),
        sa.PrimaryKeyConstraint("quote_id", name=op.f("pk_lumen_quotes")),
    )
    op.create_index(
        op.f("ix_lumen_quotes_customer_id_quote_id"),
        "lumen_quotes",
        ["customer_id", "quote_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_lumen_quotes_customer_id_quote_id"), table_name="lumen_quotes")
    op.drop_table("lumen_quotes")
