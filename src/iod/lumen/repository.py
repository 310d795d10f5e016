"""Queries of the Lumen paths: service ids, the inventory, orders; always by customer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, and_, bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from iod.domain.status import PENDING_CHANGE_STATUSES
from iod.infra.db import TransactionSelect
from iod.models import BandwidthChange, Connection, Location, LumenOrder, LumenService

_PENDING = [s.value for s in PENDING_CHANGE_STATUSES]


def service_id_of(session: Session, connection_id: str) -> str | None:
    return session.scalar(
        select(LumenService.service_id).where(LumenService.connection_id == connection_id)
    )


def service_id_holders(session: Session, connection_id: str, service_id: str) -> list[Any]:
    """The rows (`connection_id`, `service_id`) of the connection's service id and of the
    service id `service_id`, if any: one read compiled once, on the transaction's
    connection (`TransactionSelect`: every order runs it, issue 14)."""
    return _HOLDERS.rows(session, connection=connection_id, service=service_id)


def add_service_id(session: Session, connection_id: str, customer_id: str, service_id: str) -> bool:
    """Gives the connection `service_id` unless it has a service id already or `service_id`
    is another's (INSERT … ON CONFLICT DO NOTHING, either unique key): True if it did.
    Compiled once and run on the transaction's connection (`TransactionSelect`); nothing
    reads the row back as an object in the order's transaction."""
    insert_new = _INSERT_NEW[session.get_bind().dialect.name]
    return bool(
        insert_new.rows(session, connection=connection_id, service=service_id, customer=customer_id)
    )


_services = cast(Table, LumenService.__table__)
_HOLDERS = TransactionSelect(
    select(_services.c.connection_id, _services.c.service_id).where(
        or_(
            _services.c.connection_id == bindparam("connection", type_=String),
            _services.c.service_id == bindparam("service", type_=String),
        )
    )
)


def _insert_new(insert: Any) -> TransactionSelect:
    # RETURNING, not the row count: psycopg's count is not 0 for a conflict skipped.
    return TransactionSelect(
        insert(_services)
        .values(
            connection_id=bindparam("connection", type_=String),
            service_id=bindparam("service", type_=String),
            customer_id=bindparam("customer", type_=String),
        )
        .on_conflict_do_nothing()
        .returning(_services.c.connection_id)
    )


_INSERT_NEW = {"sqlite": _insert_new(sqlite.insert), "postgresql": _insert_new(postgresql.insert)}


def connection_of_service(session: Session, customer_id: str, service_id: str) -> str | None:
    """The connection of the customer's service; None for an unknown or another customer's."""
    return session.scalar(
        select(LumenService.connection_id).where(
            LumenService.service_id == service_id, LumenService.customer_id == customer_id
        )
    )


def inventory(
    session: Session, customer_id: str, service_id: str | None, offset: int, limit: int
) -> Sequence[Any]:
    """One page of the customer's services with their connection and location, in order of
    creation (connection ids sort by time)."""
    statement = (
        select(
            LumenService.service_id,
            Connection.id,
            Connection.status,
            Connection.target_status,
            Connection.bandwidth_mbps,
            Connection.ipv4_block,
            Connection.created_at,
            Connection.updated_at,
            Location.id.label("location_id"),
            Location.name.label("location_name"),
            Location.address.label("location_address"),
        )
        .join(Connection, Connection.id == LumenService.connection_id)
        .join(Location, Location.id == Connection.location_id)
        .where(LumenService.customer_id == customer_id, Connection.customer_id == customer_id)
        .order_by(Connection.id)
        .offset(offset)
        .limit(limit)
    )
    if service_id is not None:
        statement = statement.where(LumenService.service_id == service_id)
    return session.execute(statement).all()


def changes_in_flight(session: Session, connection_ids: Sequence[str], now: datetime) -> set[str]:
    """Those of the connections with a bandwidth change due (not in the future) but not yet
    in force: Lumen's "Change pending"."""
    if not connection_ids:
        return set()
    rows = session.scalars(
        select(BandwidthChange.connection_id).where(
            and_(
                BandwidthChange.connection_id.in_(connection_ids),
                BandwidthChange.status.in_(_PENDING),
                BandwidthChange.effective_at <= now,
            )
        )
    )
    return set(rows)


def changes(session: Session, change_ids: Sequence[str]) -> dict[str, BandwidthChange]:
    if not change_ids:
        return {}
    found = session.scalars(select(BandwidthChange).where(BandwidthChange.id.in_(change_ids)))
    return {c.id: c for c in found}


def connections(session: Session, connection_ids: Sequence[str]) -> dict[str, Connection]:
    if not connection_ids:
        return {}
    found = session.scalars(select(Connection).where(Connection.id.in_(connection_ids)))
    return {c.id: c for c in found}


def services_of(session: Session, connection_ids: Sequence[str]) -> dict[str, str]:
    if not connection_ids:
        return {}
    rows = session.execute(
        select(LumenService.connection_id, LumenService.service_id).where(
            LumenService.connection_id.in_(connection_ids)
        )
    )
    return {connection_id: service_id for connection_id, service_id in rows}


def order_by_external_id(session: Session, customer_id: str, external_id: str) -> LumenOrder | None:
    return session.scalar(
        select(LumenOrder).where(
            LumenOrder.customer_id == customer_id, LumenOrder.external_id == external_id
        )
    )


def order(session: Session, customer_id: str, order_id: str) -> LumenOrder | None:
    return session.scalar(
        select(LumenOrder).where(LumenOrder.customer_id == customer_id, LumenOrder.id == order_id)
    )


def add_order(session: Session, order: LumenOrder) -> None:
    session.add(order)
    session.flush()


def locations(session: Session) -> Sequence[Location]:
    return list(session.scalars(select(Location).order_by(Location.id)))
