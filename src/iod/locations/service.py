"""Importing and describing locations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from iod.clock import Clock
from iod.domain.bandwidth import BandwidthError, format_bandwidth, parse_bandwidth
from iod.domain.tiers import DEFAULT_TIERS_MBPS, tiers_up_to
from iod.errors import FieldError, ValidationFailed
from iod.locations import repository
from iod.models import Location


class LocationIn(BaseModel):
    """One catalog entry as imported: capacity and tiers as bandwidth strings."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: str = Field(min_length=1, max_length=255)
    address: str = Field(min_length=1, max_length=512)
    capacity: str
    tiers: list[str] | None = None

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: str) -> str:
        parse_bandwidth(value)
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, value: list[str] | None) -> list[str] | None:
        for tier in value or []:
            parse_bandwidth(tier)
        return value


def offered_tiers(entry: LocationIn) -> list[int]:
    capacity = parse_bandwidth(entry.capacity)
    if entry.tiers is None:
        return tiers_up_to(capacity, DEFAULT_TIERS_MBPS)
    return sorted({t for t in (parse_bandwidth(x) for x in entry.tiers) if t <= capacity})


def parse_catalog(data: Any) -> list[LocationIn]:
    if isinstance(data, dict) and "locations" in data:
        data = data["locations"]
    if not isinstance(data, list):
        raise ValidationFailed("a catalog is a JSON list of locations (or {'locations': [...]})")
    entries: list[LocationIn] = []
    errors: list[FieldError] = []
    for index, item in enumerate(data):
        try:
            entries.append(LocationIn.model_validate(item))
        except (ValidationError, BandwidthError) as exc:
            errors.append(FieldError(f"/{index}", str(exc).splitlines()[0]))
    if errors:
        raise ValidationFailed("the catalog has invalid entries", errors=errors)
    return entries


def upsert(session: Session, clock: Clock, entries: list[LocationIn]) -> tuple[int, int]:
    """Create or update locations by id; returns (created, updated)."""
    created = updated = 0
    now = clock.now()
    for entry in entries:
        row = repository.get(session, entry.id)
        tiers = offered_tiers(entry)
        capacity = parse_bandwidth(entry.capacity)
        if row is None:
            session.add(
                Location(
                    id=entry.id,
                    name=entry.name,
                    address=entry.address,
                    capacity_mbps=capacity,
                    tiers_mbps=tiers,
                    created_at=now,
                    updated_at=now,
                )
            )
            created += 1
        elif (row.name, row.address, row.capacity_mbps, row.tiers_mbps) != (
            entry.name,
            entry.address,
            capacity,
            tiers,
        ):
            row.name, row.address = entry.name, entry.address
            row.capacity_mbps, row.tiers_mbps = capacity, tiers
            row.updated_at = now
            updated += 1
    session.flush()
    return created, updated


def describe(location: Location) -> dict[str, Any]:
    return {
        "id": location.id,
        "name": location.name,
        "address": location.address,
        "capacity": format_bandwidth(location.capacity_mbps),
        "tiers": [format_bandwidth(t) for t in location.tiers_mbps],
    }
