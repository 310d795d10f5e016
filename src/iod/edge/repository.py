"""Queries of the edge tables (agents, desired state, operations)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from iod.models import EdgeAgent, EdgeDesired, EdgeOperation


def agent(session: Session, location_id: str, *, lock: bool = False) -> EdgeAgent | None:
    query = select(EdgeAgent).where(EdgeAgent.location_id == location_id)
    return session.scalars(query.with_for_update() if lock else query).first()


def agent_of_client(session: Session, client_id: str) -> EdgeAgent | None:
    return session.scalars(select(EdgeAgent).where(EdgeAgent.client_id == client_id)).first()


def agents(session: Session) -> Sequence[EdgeAgent]:
    return session.scalars(select(EdgeAgent).order_by(EdgeAgent.location_id)).all()


def locations_with_agent(session: Session) -> set[str]:
    return set(session.scalars(select(EdgeAgent.location_id)).all())


def next_seq(session: Session, location_id: str, count: int = 1) -> int:
    """Takes `count` sequence numbers of the location (the agent row stays locked until the
    transaction ends, so they are handed out in commit order); returns the last one."""
    row = session.execute(
        update(EdgeAgent)
        .where(EdgeAgent.location_id == location_id)
        .values(cursor=EdgeAgent.cursor + count)
        .returning(EdgeAgent.cursor)
    ).first()
    if row is None:
        raise LookupError(f"no agent at {location_id}")
    return int(row[0])


def desired(session: Session, location_id: str, connection_id: str) -> EdgeDesired | None:
    return session.get(EdgeDesired, (location_id, connection_id))


def connections_at(session: Session, location_ids: Iterable[str]) -> set[str]:
    """The connections the edges of these locations hold (or are removing)."""
    return set(
        session.scalars(
            select(EdgeDesired.connection_id).where(EdgeDesired.location_id.in_(list(location_ids)))
        ).all()
    )


def desired_of_location(session: Session, location_id: str) -> Sequence[EdgeDesired]:
    return session.scalars(
        select(EdgeDesired).where(EdgeDesired.location_id == location_id).order_by(EdgeDesired.seq)
    ).all()


def changes_after(
    session: Session, location_id: str, after: int, limit: int
) -> Sequence[EdgeDesired]:
    return session.scalars(
        select(EdgeDesired)
        .where(EdgeDesired.location_id == location_id, EdgeDesired.seq > after)
        .order_by(EdgeDesired.seq)
        .limit(limit)
    ).all()


def operation(session: Session, op_id: str, *, lock: bool = False) -> EdgeOperation | None:
    query = select(EdgeOperation).where(EdgeOperation.op_id == op_id)
    return session.scalars(query.with_for_update() if lock else query).first()


def operations(session: Session, op_ids: list[str]) -> Sequence[EdgeOperation]:
    if not op_ids:
        return []
    return session.scalars(select(EdgeOperation).where(EdgeOperation.op_id.in_(op_ids))).all()


def pending_summary(session: Session) -> dict[str, tuple[int, datetime | None]]:
    """Per location: pending operations and the oldest one's creation."""
    rows = session.execute(
        select(
            EdgeOperation.location_id,
            func.count(),
            func.min(EdgeOperation.created_at),
        )
        .where(EdgeOperation.status == "pending")
        .group_by(EdgeOperation.location_id)
    ).all()
    return {str(loc): (int(n), oldest) for loc, n, oldest in rows}
