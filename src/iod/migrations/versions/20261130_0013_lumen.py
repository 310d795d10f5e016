"""Lumen compatibility: customers.customer_number, lumen_services, lumen_orders

Revision ID: 20261130_0013
Revises: 20261130_0012
Create Date: 2026-11-30 12:30:00.000000

Customers and connections that exist already get a customer number and a service id here,
so every one of them is reachable through the Lumen paths (docs/lumen.md). The previous
release's code keeps working on this schema (it never reads these); a customer it creates has
no number until `iod customers set-number`, and a connection it orders no service id, so the
Lumen inventory does not list it (a deploy should not mix the two releases for long).
"""

import secrets
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

import iod.infra.db

revision: str = "20261130_0013"
down_revision: str | None = "20261130_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def upgrade() -> None:
    op.add_column("customers", sa.Column("customer_number", sa.String(length=40), nullable=True))
    op.create_index(
        op.f("ix_customers_customer_number"), "customers", ["customer_number"], unique=True
    )
    op.create_table(
        "lumen_services",
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=11), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_lumen_services_connection_id_connections"),
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_lumen_services")),
    )
    op.create_index(
        op.f("ix_lumen_services_customer_id_connection_id"),
        "lumen_services",
        ["customer_id", "connection_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_lumen_services_service_id"), "lumen_services", ["service_id"], unique=True
    )
    op.create_table(
        "lumen_orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=20), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", iod.infra.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_lumen_orders_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lumen_orders")),
        sa.UniqueConstraint(
            "customer_id", "external_id", name=op.f("uq_lumen_orders_customer_id_external_id")
        ),
    )
    _backfill(op.get_bind())


def _backfill(bind: sa.engine.Connection) -> None:
    """A customer number for each customer, a service id for each connection: random, as
    the code makes them (`customers.service.new_customer_number`, `lumen.service`), distinct."""
    taken: set[str] = set()
    for (customer_id,) in bind.execute(sa.text("SELECT id FROM customers ORDER BY id")):
        number = _fresh(taken, lambda: "1-" + "".join(secrets.choice(_ALPHABET) for _ in range(7)))
        bind.execute(
            sa.text("UPDATE customers SET customer_number = :n WHERE id = :id"),
            {"n": number, "id": customer_id},
        )
    taken.clear()
    rows = bind.execute(sa.text("SELECT id, customer_id FROM connections ORDER BY id"))
    for connection_id, customer_id in list(rows):
        service_id = _fresh(taken, lambda: f"77{secrets.randbelow(10**9):09d}")
        bind.execute(
            sa.text(
                "INSERT INTO lumen_services (connection_id, service_id, customer_id)"
                " VALUES (:c, :s, :k)"
            ),
            {"c": connection_id, "s": service_id, "k": customer_id},
        )


def _fresh(taken: set[str], make: Callable[[], str]) -> str:
    while True:
        value = make()
        if value not in taken:
            taken.add(value)
            return value


def downgrade() -> None:
    op.drop_table("lumen_orders")
    op.drop_index(op.f("ix_lumen_services_service_id"), table_name="lumen_services")
    op.drop_index(op.f("ix_lumen_services_customer_id_connection_id"), table_name="lumen_services")
    op.drop_table("lumen_services")
    op.drop_index(op.f("ix_customers_customer_number"), table_name="customers")
    # A plain DROP COLUMN (SQLite has it since 3.35): a batch would copy and drop the table,
    # which the clients' foreign key refuses once there are clients.
    op.execute("ALTER TABLE customers DROP COLUMN customer_number")
