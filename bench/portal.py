"""The portal's connections page for a customer with 10,000 connections, rendered on the
server by `iod serve`, one request at a time (goal: p99 under 50 ms).

Seeds a fresh database (bench/seed.py's bulk insert: the rows a year of orders would leave),
makes a portal user and a session for the bulk customer with the service's own functions,
starts `iod serve --no-worker` and times GETs of the first page, a page deep in the list (a
cursor) and a filtered page, client-side on the loopback.

    .venv/bin/python bench/portal.py [-n 1000] [--connections 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed import _insert_connections, _principal

from iod.auth.passwords import open_hasher
from iod.infra import migrate
from iod.infra.clock import SystemClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.locations import service as locations
from iod.models import PortalUser
from iod.portal import service as people

LOCATION = "BENCH-BULK-0001"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def portal_customer(
    url: str, settings: Settings, location_id: str, count: int
) -> tuple[str, list[str]]:
    """A customer with `count` active connections at `location_id` (bench/seed.py's bulk
    insert), an admin portal user of it and a session: the session cookie's value and the
    connections' ids. `settings` names the data directory whose secret hash key the served
    process uses (session ids are stored as their keyed hash)."""
    db = Database(make_engine(url))
    clock = SystemClock()
    hasher = open_hasher(settings.effective_secret_hash_key_file)
    owner = _principal(db, clock, "bench portal", hasher)
    ids = _insert_connections(db, owner, owner.client_id, location_id, count, 100)
    with db.write() as session:
        user = people.create_user(session, clock, owner.customer_id, "bench@example.com", "admin")
        row = session.get(PortalUser, user.id)
        assert row is not None
        cookie = people.start_session(
            session, clock, hasher, row, people.PortalPolicy.of(settings), "bench"
        ).session_id
    db.dispose()
    return cookie, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per page measured")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="iod-bench-portal-"))
    url = args.database_url or f"sqlite:///{data / 'iod.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(IOD_DATA_DIR=str(data), IOD_DATABASE_URL=url, IOD_LOG_LEVEL="WARNING")
    engine = make_engine(url)
    migrate.upgrade(engine)
    db = Database(engine)
    clock = SystemClock()
    settings = Settings(data_dir=data, database_url=url)
    with db.write() as session:
        locations.upsert(
            session,
            clock,
            locations.parse_catalog(
                [{"id": LOCATION, "name": "Bench", "address": "-", "capacity": "1000 Gbps"}]
            ),
        )
    db.dispose()
    started = time.monotonic()
    cookie, ids = portal_customer(url, settings, LOCATION, args.connections)
    print(f"seeded {len(ids):,} connections in {time.monotonic() - started:.1f} s")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    iod = [sys.executable, "-m", "iod"]
    server = subprocess.Popen(
        [*iod, "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        deep = sorted(ids)[len(ids) // 2]
        pages = {
            "first page": "/portal/connections",
            "a page in the middle (cursor)": f"/portal/connections?cursor={deep}",
            "filtered (status, location)": f"/portal/connections?status=active&location={LOCATION}",
        }
        with httpx.Client(base_url=base, cookies={"iod_portal": cookie}) as client:
            print(f"{'page':34} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            for name, path in pages.items():
                for _ in range(50):  # warm-up
                    answer = client.get(path)
                    assert answer.status_code == 200 and "<table" in answer.text, answer.text
                times = []
                for _ in range(args.n):
                    start = time.perf_counter()
                    answer = client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200
                print(
                    f"{name:34} {percentile(times, 0.5):8.2f} {percentile(times, 0.9):8.2f} "
                    f"{percentile(times, 0.99):8.2f} {max(times):8.2f}"
                )
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
