"""What the Lumen service-id subscriber (issue 19) costs an order: N creates through the
connections service (no HTTP) on a fresh SQLite file, alternately without and with the
subscriber that gives each new connection its 11-digit service id (one SELECT and one
INSERT in the order's transaction).

    .venv/bin/python bench/lumen_service_ids.py 300
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from iod import events, features
from iod.auth.tokens import Principal
from iod.connections import service
from iod.connections.schemas import ConnectionRequest
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.clock import FrozenClock
from iod.infra.db import Database, make_engine
from iod.locations import catalog
from iod.locations import service as locations
from iod.lumen import subscribers

SITE = {**catalog.DEMO_LOCATIONS[1], "capacity": "1000 Gbps"}


def creates(count: int, with_subscriber: bool) -> list[float]:
    path = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    db, clock = Database(engine), FrozenClock()
    with db.write() as session:
        locations.upsert(session, clock, locations.parse_catalog([SITE]))
        customer = customers.create_customer(session, clock, "bench").id
    principal = Principal("cli_bench", customer, frozenset({"read", "write"}), 1e12)
    request = ConnectionRequest(bandwidth="50 Mbps", locationId=str(SITE["id"]))
    if not with_subscriber:
        events._subscribers.remove(subscribers.give_service_ids)
    try:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            with db.write() as session:
                service.create_connection(session, clock, principal, request, service.Policy())
            times.append(time.perf_counter() - started)
        return times
    finally:
        if not with_subscriber:
            events.subscribe(subscribers.give_service_ids)
        db.dispose()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    features.load()
    for with_subscriber in (False, True, False, True):
        times = sorted(creates(count, with_subscriber))
        label = "with" if with_subscriber else "without"
        print(
            f"{label:>7} the subscriber: median {statistics.median(times) * 1000:.2f} ms, "
            f"p90 {times[int(count * 0.9)] * 1000:.2f} ms per create (n={count})"
        )


if __name__ == "__main__":
    main()
