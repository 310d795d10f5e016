"""Queries for locations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.models import Location


def get(session: Session, location_id: str) -> Location | None:
    return session.get(Location, location_id)


def list_all(session: Session) -> list[Location]:
    return list(session.scalars(select(Location).order_by(Location.id)))
