"""Queries for locations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.models import Location


def get(session: Session, location_id: str) -> Location | None:
    return session.get(Location, location_id)


def get_for_update(session: Session, location_id: str) -> Location | None:
    # Row lock on PostgreSQL serialises capacity checks per location; SQLite writers are
    # already serialised by BEGIN IMMEDIATE.
    return session.scalar(select(Location).where(Location.id == location_id).with_for_update())


def list_all(session: Session) -> list[Location]:
    return list(session.scalars(select(Location).order_by(Location.id)))
