"""Queries for customers and clients."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from iod.models import Client, Customer


def get_customer(session: Session, customer_id: str) -> Customer | None:
    return session.get(Customer, customer_id)


def find_customer_by_name(session: Session, name: str) -> Customer | None:
    return session.scalar(select(Customer).where(Customer.name == name).limit(1))


def list_customers(session: Session) -> list[Customer]:
    return list(session.scalars(select(Customer).order_by(Customer.id)))


def get_client(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


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
