"""Seed a migrated database for the benchmark, through the service's own code.

Customers, clients and locations go through the same functions as the admin CLI
(`iod customers create`, `iod clients create`, `iod locations import`); the many connection
rows are inserted in bulk with SQLAlchemy Core into the `iod.models` tables, which is what a
year of `POST /connections` would have left behind, only faster.

Run alone (after `iod db upgrade`) to look at the data: `python bench/seed.py URL`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text, update

from iod.auth.passwords import SecretHasher, open_hasher
from iod.customers import service as customers
from iod.domain.status import ConnectionStatus
from iod.infra.clock import SystemClock
from iod.infra.db import Database, make_engine
from iod.infra.ids import new_id
from iod.locations import service as locations
from iod.models import Connection, Location

# A roomy location for writes (1000 Gbps, every default tier) and one that holds the bulk.
ROOMY_LOCATION = "BENCH-ROOMY-0001"
BULK_LOCATION = "BENCH-BULK-0001"
CATALOG = [
    {
        "id": ROOMY_LOCATION,
        "name": "Benchmark roomy site",
        "address": "1 Loopback Way, 127.0.0.1",
        "capacity": "1000 Gbps",
    },
    {
        "id": BULK_LOCATION,
        "name": "Benchmark bulk site",
        "address": "2 Loopback Way, 127.0.0.1",
        "capacity": "1000 Gbps",
    },
]

BATCH = 5_000


@dataclass
class Principal:
    customer_id: str
    client_id: str
    client_secret: str
    connection_ids: list[str] = field(default_factory=list)


@dataclass
class Seeded:
    """What the benchmark needs to know about the data it runs against."""

    location_id: str
    reader: Principal  # 100 connections: GET one, and the list while there is no pagination
    writer: Principal  # 100 connections to change; creates go here too
    bulk: Principal | None  # many connections: the list page once pagination exists
    bulk_count: int
    seconds: float


def _principal(db: Database, clock: SystemClock, name: str, hasher: SecretHasher) -> Principal:
    with db.write() as session:
        customer = customers.create_customer(session, clock, name)
        client = customers.create_client(
            session, clock, customer.id, "read write", hasher=hasher, name=name
        )
    return Principal(customer.id, client.client_id, client.client_secret)


def _insert_connections(
    db: Database, owner: Principal, client_id: str, location_id: str, count: int, mbps: int
) -> list[str]:
    now = datetime.now(UTC)
    ids: list[str] = []
    with db.engine.begin() as conn:
        for start in range(0, count, BATCH):
            rows = []
            for _ in range(start, min(start + BATCH, count)):
                connection_id = new_id("con")
                ids.append(connection_id)
                rows.append(
                    {
                        "id": connection_id,
                        "customer_id": owner.customer_id,
                        "location_id": location_id,
                        "status": ConnectionStatus.ACTIVE.value,
                        "bandwidth_mbps": mbps,
                        "committed_mbps": mbps,
                        "description": None,
                        "created_by": client_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            conn.execute(insert(Connection), rows)
        # What `capacity.recommit` would have counted, had they been ordered one by one.
        conn.execute(
            update(Location)
            .where(Location.id == location_id)
            .values(committed_mbps=Location.committed_mbps + mbps * count)
        )
    return ids


def seed(url: str, key_file: Path, *, bulk: int, small: int = 100) -> Seeded:
    """Seed the database at `url` (already migrated, with no benchmark data yet); client
    secrets are hashed with the key in `key_file`, the served processes' key."""
    started = time.monotonic()
    clock = SystemClock()
    hasher = open_hasher(key_file)
    db = Database(make_engine(url))
    try:
        with db.write() as session:
            locations.upsert(session, clock, locations.parse_catalog(CATALOG))
        reader = _principal(db, clock, "bench reader", hasher)
        writer = _principal(db, clock, "bench writer", hasher)
        for who in (reader, writer):
            who.connection_ids = _insert_connections(
                db, who, who.client_id, ROOMY_LOCATION, small, 100
            )
        owner = None
        if bulk:
            owner = _principal(db, clock, "bench bulk", hasher)
            # The bulk customer's ids are not needed by any request; keep just a few.
            owner.connection_ids = _insert_connections(
                db, owner, owner.client_id, BULK_LOCATION, bulk, 1
            )[:3]
        if not db.is_sqlite:
            # A database that grew to this size over time has been analysed by autovacuum;
            # one just bulk-loaded has not, and its planner would guess from empty tables.
            with db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    finally:
        db.dispose()
    return Seeded(ROOMY_LOCATION, reader, writer, owner, bulk, time.monotonic() - started)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python bench/seed.py DATABASE_URL KEY_FILE [BULK_CONNECTIONS]")
    result = seed(
        sys.argv[1], Path(sys.argv[2]), bulk=int(sys.argv[3]) if len(sys.argv) == 4 else 100_000
    )
    print(json.dumps(asdict(result), indent=2))
