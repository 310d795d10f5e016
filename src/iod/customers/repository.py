"""Queries for customers and clients."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm import Session

from iod.infra.db import Database
from iod.models import Client, Customer

# What the token endpoint needs of a client, by id: one statement, run as a `PreparedSelect`.
_CREDENTIAL_COLUMNS: list[Any] = [
    Client.customer_id,
    Client.scopes,
    Client.enabled,
    Client.secret_hash,
    Client.secret_generation,
    Client.previous_secret_hash,
    Client.previous_secret_until,
]
_CREDENTIALS: Select[Any] = select(*_CREDENTIAL_COLUMNS).where(Client.id == bindparam("client_id"))
_NUMBER_COLUMNS: list[Any] = [Customer.customer_number, Customer.name]
_NUMBER: Select[Any] = select(*_NUMBER_COLUMNS).where(Customer.id == bindparam("customer_id"))


def get_customer(session: Session, customer_id: str) -> Customer | None:
    return session.get(Customer, customer_id)


def find_customer_by_name(session: Session, name: str) -> Customer | None:
    return session.scalar(select(Customer).where(Customer.name == name).limit(1))


def find_customer_by_number(session: Session, number: str) -> Customer | None:
    return session.scalar(select(Customer).where(Customer.customer_number == number))


def customer_number_of(db: Database, customer_id: str) -> tuple[str | None, str] | None:
    """The customer's Lumen customer number (None without one) and name; None for no such
    customer. One statement on the calling thread's kept connection, as `credentials`."""
    rows = db.prepared(_NUMBER).rows(customer_id=customer_id)
    return (rows[0].customer_number, rows[0].name) if rows else None


def list_customers(session: Session) -> list[Customer]:
    return list(session.scalars(select(Customer).order_by(Customer.id)))


def get_client(session: Session, client_id: str, *, lock: bool = False) -> Client | None:
    """The client; `lock`: its row locked and read again (a read-modify-write)."""
    if lock:
        return session.get(Client, client_id, with_for_update=True, populate_existing=True)
    return session.get(Client, client_id)


def credentials(db: Database, client_id: str) -> Any | None:
    """The client's `_CREDENTIALS` row (a named tuple with the columns' names), or None.
    Runs on the calling thread's kept connection, without a transaction: one statement."""
    rows = db.prepared(_CREDENTIALS).rows(client_id=client_id)
    return rows[0] if rows else None


def list_clients(session: Session, customer_id: str | None = None) -> list[Client]:
    query = select(Client).order_by(Client.id)
    if customer_id is not None:
        query = query.where(Client.customer_id == customer_id)
    return list(session.scalars(query))


def replace_secret_hash(session: Session, client_id: str, column: str, old: str, new: str) -> int:
    """Compare-and-set of one hash column (`secret_hash` or `previous_secret_hash`)."""
    target = {
        "secret_hash": Client.secret_hash,
        "previous_secret_hash": Client.previous_secret_hash,
    }
    result = session.execute(
        update(Client)
        .where(Client.id == client_id, target[column] == old)
        .values({target[column]: new})
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def secret_hash_key_ids(db: Database) -> set[str]:
    """The keys the stored client secrets are hashed with (current and previous secrets)."""
    from iod.auth.passwords import SCHEME, key_id_of

    keyed = f"{SCHEME}$%"
    with db.read() as session:
        rows = session.execute(
            select(Client.secret_hash, Client.previous_secret_hash).where(
                Client.secret_hash.like(keyed) | Client.previous_secret_hash.like(keyed)
            )
        ).all()
    return {k for row in rows for k in map(key_id_of, row) if k is not None}
