"""Queries of the traffic tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from iod.models import BandwidthChange, TrafficCounter, TrafficSample


def counters(session: Session, connection_ids: list[str]) -> dict[str, TrafficCounter]:
    if not connection_ids:
        return {}
    rows = session.scalars(
        select(TrafficCounter).where(TrafficCounter.connection_id.in_(connection_ids))
    ).all()
    return {r.connection_id: r for r in rows}


def samples(
    session: Session, connection_id: str, after: datetime, until: datetime
) -> Sequence[TrafficSample]:
    return session.scalars(
        select(TrafficSample)
        .where(
            TrafficSample.connection_id == connection_id,
            TrafficSample.at > after,
            TrafficSample.at <= until,
        )
        .order_by(TrafficSample.at)
    ).all()


def applied_changes(session: Session, connection_id: str) -> list[tuple[datetime, int, int]]:
    """(applied at, from Mbps, to Mbps) of the connection's applied changes, in order."""
    rows = session.execute(
        select(BandwidthChange.applied_at, BandwidthChange.from_mbps, BandwidthChange.to_mbps)
        .where(
            BandwidthChange.connection_id == connection_id,
            BandwidthChange.status == "applied",
            BandwidthChange.applied_at.is_not(None),
        )
        .order_by(BandwidthChange.applied_at)
    ).all()
    return [(at, int(f or t), int(t)) for at, f, t in rows if at is not None]


def raw_before(session: Session, before: datetime, limit: int) -> Sequence[TrafficSample]:
    return session.scalars(
        select(TrafficSample)
        .where(TrafficSample.resolution == 0, TrafficSample.at < before)
        .order_by(TrafficSample.connection_id, TrafficSample.at)
        .limit(limit)
    ).all()


def delete_ids(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(delete(TrafficSample).where(TrafficSample.id.in_(ids)))


def prune(session: Session, before: datetime) -> int:
    done = session.execute(delete(TrafficSample).where(TrafficSample.at < before))
    return int(getattr(done, "rowcount", 0) or 0)
