"""Queries for connections and bandwidth changes, always scoped to a customer where asked."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iod.domain.status import PENDING_CHANGE_STATUSES, ConnectionStatus
from iod.models import BandwidthChange, Connection

_PENDING = [s.value for s in PENDING_CHANGE_STATUSES]


def get_for_customer(session: Session, customer_id: str, connection_id: str) -> Connection | None:
    return session.scalar(
        select(Connection).where(
            Connection.id == connection_id, Connection.customer_id == customer_id
        )
    )


def get(session: Session, connection_id: str) -> Connection | None:
    return session.get(Connection, connection_id)


def list_for_customer(session: Session, customer_id: str) -> Sequence[Connection]:
    return session.scalars(
        select(Connection).where(Connection.customer_id == customer_id).order_by(Connection.id)
    ).all()


def pending_changes(
    session: Session, connection_ids: Sequence[str]
) -> dict[str, list[BandwidthChange]]:
    result: dict[str, list[BandwidthChange]] = {cid: [] for cid in connection_ids}
    if not connection_ids:
        return result
    rows = session.scalars(
        select(BandwidthChange)
        .where(
            BandwidthChange.connection_id.in_(connection_ids),
            BandwidthChange.status.in_(_PENDING),
        )
        .order_by(BandwidthChange.effective_at, BandwidthChange.id)
    )
    for change in rows:
        result[change.connection_id].append(change)
    return result


def get_change(session: Session, change_id: str) -> BandwidthChange | None:
    return session.get(BandwidthChange, change_id)


def committed_at_location(
    session: Session, location_id: str, exclude_connection_id: str | None = None
) -> int:
    """Sum over live connections of the most each has or will have (pending changes)."""
    pending_max = (
        select(
            BandwidthChange.connection_id.label("cid"),
            func.max(BandwidthChange.to_mbps).label("mx"),
        )
        .where(BandwidthChange.status.in_(_PENDING))
        .group_by(BandwidthChange.connection_id)
        .subquery()
    )
    per_connection = func.coalesce(
        func.max(Connection.bandwidth_mbps, pending_max.c.mx)
        if session.get_bind().dialect.name == "sqlite"
        else func.greatest(Connection.bandwidth_mbps, pending_max.c.mx),
        Connection.bandwidth_mbps,
    )
    query = (
        select(func.coalesce(func.sum(per_connection), 0))
        .select_from(Connection)
        .outerjoin(pending_max, pending_max.c.cid == Connection.id)
        .where(
            Connection.location_id == location_id,
            Connection.status != ConnectionStatus.TERMINATED.value,
        )
    )
    if exclude_connection_id is not None:
        query = query.where(Connection.id != exclude_connection_id)
    return int(session.scalar(query) or 0)
