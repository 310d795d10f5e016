"""Queries of the traffic tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from iod.infra.db import TransactionSelectIn, TransactionWrite
from iod.models import BandwidthChange, TrafficCounter, TrafficSample

_counters = cast(Table, TrafficCounter.__table__)
_samples = cast(Table, TrafficSample.__table__)
# The sampler's statements (issue 14): compiled once, run on the transaction's connection,
# rather than an ORM query with an IN list of every active connection (re-rendered, and
# re-parsed by psycopg, at each run) and a flush of an object per sample and counter.
# Locked (PostgreSQL; SQLite has one writer) in connection id order, the order they are
# updated in: two readings of one connection ingested at once (two identical posts of an
# agent) are then ingested one after the other, and the second finds the first's counter
# and is skipped as a repeated reading, instead of both counting the same bytes.
_COUNTERS = TransactionSelectIn(
    _counters.c.connection_id,
    lambda ids: (
        select(*_counters.c).where(ids).order_by(_counters.c.connection_id).with_for_update()
    ),
)
_INSERT_COUNTERS = TransactionWrite(insert(_counters))
_UPDATE_COUNTERS = TransactionWrite(
    update(_counters).where(
        _counters.c.connection_id == bindparam("counter_id", type_=_counters.c.connection_id.type)
    )
)
_INSERT_SAMPLES = TransactionWrite(insert(_samples))


def counters(session: Session, connection_ids: list[str]) -> dict[str, Any]:
    """The last counters of these connections (rows with `TrafficCounter`'s columns)."""
    if not connection_ids:
        return {}
    return {r.connection_id: r for r in _COUNTERS.rows(session, connection_ids)}


def write_counters(
    session: Session, new: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> None:
    """Inserts the `new` counters (each a dict of every column) and updates the `changed`
    ones (the connection id as `counter_id`), each in connection id order: the order their
    rows are locked in."""
    if changed:  # updates before inserts, as the ORM's flush ordered them
        _UPDATE_COUNTERS.execute(session, changed)
    if new:
        _INSERT_COUNTERS.execute(session, new)


def insert_samples(session: Session, rows: list[dict[str, Any]]) -> None:
    """Inserts raw samples (each a dict of every column but `id`)."""
    if rows:
        _INSERT_SAMPLES.execute(session, rows)


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
