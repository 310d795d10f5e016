"""Importing and describing locations."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from iod.domain.addressing import next_default_pool, parse_pool
from iod.domain.bandwidth import BandwidthError, format_bandwidth, parse_bandwidth
from iod.domain.tiers import DEFAULT_TIERS_MBPS, tiers_up_to
from iod.infra.clock import Clock
from iod.infra.errors import FieldError, ValidationFailed
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
    # Where connections' IPv4 blocks come from; absent: the next free /16 of 10.0.0.0/8.
    ipv4Pool: str | None = None

    @field_validator("ipv4Pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_pool(value))

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
        except ValidationError as exc:
            for problem in exc.errors():
                where = "/".join(str(part) for part in problem["loc"])
                errors.append(FieldError(f"/{index}/{where}".rstrip("/"), problem["msg"]))
        except BandwidthError as exc:
            errors.append(FieldError(f"/{index}", str(exc).splitlines()[0]))
    if errors:
        raise ValidationFailed("the catalog has invalid entries", errors=errors)
    return entries


def upsert(session: Session, clock: Clock, entries: list[LocationIn]) -> tuple[int, int]:
    """Create or update locations by id; returns (created, updated). An explicit pool must
    overlap no other location's (their connections' blocks would collide), and a location's
    pool cannot change once it exists (its blocks were given from it): ValidationFailed,
    nothing written, naming each such entry."""
    created = updated = 0
    now = clock.now()
    explicit = _check_pools(session, entries)
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
                    ipv4_pool=entry.ipv4Pool or str(_next_pool(session, explicit)),
                    ipv4_next=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            session.flush()
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


def _check_pools(session: Session, entries: list[LocationIn]) -> list[IPv4Network]:
    """The entries' explicit pools, checked (`upsert`)."""
    pools = {row.id: IPv4Network(row.ipv4_pool) for row in repository.list_all(session)}
    stored = set(pools)
    defaulted: set[str] = set()  # made by an earlier entry of the import, with a default pool
    errors = []
    for index, entry in enumerate(entries):
        if entry.ipv4Pool is None:
            if entry.id not in pools:
                defaulted.add(entry.id)
            continue
        pool = IPv4Network(entry.ipv4Pool)
        if entry.id in defaulted or (entry.id in pools and pools[entry.id] != pool):
            given = "a default one" if entry.id in defaulted else str(pools[entry.id])
            errors.append(FieldError(
                f"/{index}/ipv4Pool",
                f"the location's pool is {given} and cannot change (its connections' "
                "blocks are given from it)",
            ))  # fmt: skip
            continue
        if entry.id in stored:
            continue  # its own pool, unchanged: no new overlap (one stored before is kept)
        clash = next((i for i, p in pools.items() if i != entry.id and p.overlaps(pool)), None)
        if clash is not None:
            errors.append(FieldError(
                f"/{index}/ipv4Pool", f"overlaps the pool of {clash} ({pools[clash]})"
            ))  # fmt: skip
            continue
        pools[entry.id] = pool  # later entries of the file are checked against it too
    if errors:
        raise ValidationFailed("the catalog has invalid entries", errors=errors)
    return [IPv4Network(e.ipv4Pool) for e in entries if e.ipv4Pool is not None]


def _next_pool(session: Session, reserved: list[IPv4Network]) -> IPv4Network:
    """The first free default pool, besides the explicit pools of the same import."""
    taken = [IPv4Network(row.ipv4_pool) for row in repository.list_all(session)]
    return next_default_pool(taken + reserved)


def describe(location: Location) -> dict[str, Any]:
    return {
        "id": location.id,
        "name": location.name,
        "address": location.address,
        "capacity": format_bandwidth(location.capacity_mbps),
        "tiers": [format_bandwidth(t) for t in location.tiers_mbps],
        "ipv4Pool": location.ipv4_pool,
    }
