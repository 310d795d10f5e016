"""The durable-write baseline: bare Starlette endpoints that write what the service's create and
PUT bandwidth write, with the DB-API, in one transaction, on the same database and settings.

It stands for the durable work alone: no validation, no authentication, no ORM, no worker.
The service's write rows are reported as a ratio to it, measured in the same run (issue 14).
Rows written per request, as the service writes them (src/iod/connections/service.py):

- PUT .../{id}/bandwidth: the connection read and locked (`FOR UPDATE`; SQLite: `BEGIN
  IMMEDIATE`), its pending changes read, the change row, its job row, the connection's
  `updated_at` and `committed_mbps`, the location's capacity counter (the conditional UPDATE)
  when the commitment grows, the audit row; the idempotency record when the request has an
  `Idempotency-Key`.
- POST /connections: the location read, the connection row, its first status transition, its
  job row, the location's capacity counter and next IPv4 offset (the conditional UPDATE), the
  IPv4 block row, the audit row; the idempotency record when the request has a key.

SQLite connections get the service's pragmas (iod/db.py: WAL, synchronous=NORMAL, foreign
keys, busy timeout); PostgreSQL runs at its default isolation (read committed), as the
service. One connection per thread: Starlette runs these sync endpoints in its threadpool, as
the service runs its writes. Served by uvicorn with the settings `iod serve` uses.

    IOD_BENCH_BASELINE_DATABASE=sqlite:////tmp/x.sqlite3 python bench/baseline_writes.py --port 8098
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network
from typing import Any

import uvicorn
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iod.infra.ids import new_id

PREFIX = "/internet-on-demand/connections"
PENDING = ("scheduled", "applying")
BLOCK = 29  # the service's default prefix length
CLIENT = "baseline-client"
# The customer whose connections the PUT changes and the create adds to (the bench's writer).
CUSTOMER = os.environ.get("IOD_BENCH_BASELINE_CUSTOMER", "")


class Store:
    """One DB-API connection per thread; `?` placeholders, rewritten for psycopg."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        self._path = parsed.database or ""
        self._conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._local = threading.local()

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.sqlite:
                conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                               "busy_timeout=10000"):  # fmt: skip
                    conn.execute(f"PRAGMA {pragma}")
            else:
                import psycopg

                conn = psycopg.connect(self._conninfo)
            self._local.conn = conn
        return conn

    def sql(self, text: str) -> str:
        return text if self.sqlite else text.replace("?", "%s")

    def when(self, moment: datetime) -> Any:
        # SQLAlchemy's DateTime on SQLite: naive ISO text; on PostgreSQL: timestamptz.
        return moment.replace(tzinfo=None).isoformat(" ") if self.sqlite else moment


store: Store | None = None


def _transaction(work: Any) -> Any:
    assert store is not None
    conn = store.connection()
    cur = conn.cursor()
    if store.sqlite:
        cur.execute("BEGIN IMMEDIATE")
    try:
        result = work(cur, store)
    except BaseException:
        if store.sqlite:
            cur.execute("ROLLBACK")
        else:
            conn.rollback()
        raise
    if store.sqlite:
        cur.execute("COMMIT")
    else:
        conn.commit()
    return result


def _audit(cur: Any, s: Store, now: datetime, request: Request, action: str, target: str,
           customer: str, details: dict[str, Any]) -> None:  # fmt: skip
    cur.execute(
        s.sql("INSERT INTO audit_events (at, actor_type, actor_id, source, request_id, "
              "action, target_type, target_id, customer_id, details) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        (s.when(now), "client", CLIENT, request.client.host if request.client else "",
         new_id("req"), action, "connection", target, customer, json.dumps(details)),
    )  # fmt: skip


def _idempotency(cur: Any, s: Store, now: datetime, request: Request, customer: str,
                 status: int, body: str, headers: dict[str, str]) -> None:  # fmt: skip
    key = request.headers.get("idempotency-key")
    if key is None:
        return
    cur.execute(
        s.sql("INSERT INTO idempotency_keys (customer_id, key, fingerprint, state, status_code, "
              "body, headers, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        (customer, key, "0" * 64, "done", status, body, json.dumps(headers), s.when(now),
         s.when(now + timedelta(hours=24))),
    )  # fmt: skip


def update_bandwidth(request: Request) -> JSONResponse:
    connection_id = request.path_params["connection_id"]
    mbps = int(json.loads(request.scope["body"])["bandwidth"].split()[0])

    def work(cur: Any, s: Store) -> tuple[int, dict[str, Any]]:
        now = datetime.now(UTC)
        cur.execute(
            s.sql("SELECT customer_id, location_id, bandwidth_mbps, committed_mbps, status "
                  "FROM connections WHERE id = ?" + ("" if s.sqlite else " FOR UPDATE")),
            (connection_id,),
        )  # fmt: skip
        row = cur.fetchone()
        if row is None:
            return 404, {"detail": "no such connection"}
        customer, location, bandwidth, committed, status = row
        cur.execute(
            s.sql("SELECT to_mbps FROM bandwidth_changes WHERE connection_id = ? "
                  "AND status IN (?, ?)"),
            (connection_id, *PENDING),
        )  # fmt: skip
        pending = [r[0] for r in cur.fetchall()]
        change_id = new_id("chg")
        cur.execute(
            s.sql("INSERT INTO bandwidth_changes (id, connection_id, from_mbps, to_mbps, "
                  "effective_at, status, requested_by, requested_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            (change_id, connection_id, None, mbps, s.when(now), "scheduled", CLIENT, s.when(now)),
        )  # fmt: skip
        cur.execute(
            s.sql("INSERT INTO jobs (kind, connection_id, change_id, state, run_at, "
                  "scheduled_at, attempts, max_attempts, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            ("apply_bandwidth", connection_id, change_id, "queued", s.when(now), s.when(now), 0,
             5, s.when(now)),
        )  # fmt: skip
        commits = max([bandwidth, *pending, mbps])
        cur.execute(
            s.sql("UPDATE connections SET updated_at = ?, committed_mbps = ? WHERE id = ?"),
            (s.when(now), commits, connection_id),
        )
        if commits > committed:
            grow = commits - committed
            cur.execute(
                s.sql("UPDATE locations SET committed_mbps = committed_mbps + ? "
                      "WHERE id = ? AND committed_mbps + ? <= capacity_mbps"),
                (grow, location, grow),
            )  # fmt: skip
            if cur.rowcount != 1:
                raise RuntimeError("over capacity")
        stamp = now.isoformat().replace("+00:00", "Z")
        details = {"bandwidth": f"{mbps} Mbps", "changeId": change_id, "effectiveDate": stamp}
        _audit(cur, s, now, request, "bandwidth.change", connection_id, customer, details)
        document = {
            "id": connection_id, "status": status, "bandwidth": f"{bandwidth} Mbps",
            "location": location, "updatedAt": stamp,
            "change": {"id": change_id, "bandwidth": f"{mbps} Mbps", "effectiveDate": stamp,
                       "status": "scheduled", "requestedAt": stamp},
            "pendingBandwidthChanges": [{"id": change_id, "bandwidth": f"{mbps} Mbps",
                                         "effectiveDate": stamp, "status": "scheduled"}],
        }  # fmt: skip
        _idempotency(cur, s, now, request, customer, 200, json.dumps(document), {"ETag": '"x"'})
        return 200, document

    status, document = _transaction(work)
    return JSONResponse(document, status_code=status)


_offsets = iter(range(0, 1 << 40, 1 << (32 - BLOCK)))
_offsets_lock = threading.Lock()


def create_connection(request: Request) -> JSONResponse:
    body = json.loads(request.scope["body"])
    mbps = int(body["bandwidth"].split()[0])
    location = body["locationId"]
    customer = CUSTOMER

    def work(cur: Any, s: Store) -> tuple[int, dict[str, Any]]:
        now = datetime.now(UTC)
        cur.execute(s.sql("SELECT ipv4_pool, ipv4_next FROM locations WHERE id = ?"), (location,))
        pool, _next = cur.fetchone()
        connection_id = new_id("con")
        cur.execute(
            s.sql("INSERT INTO connections (id, customer_id, location_id, status, bandwidth_mbps, "
                  "committed_mbps, description, created_by, created_at, updated_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (connection_id, customer, location, "provisioning", mbps, mbps,
             body.get("description"), CLIENT, s.when(now), s.when(now)),
        )  # fmt: skip
        cur.execute(
            s.sql("INSERT INTO status_transitions (connection_id, from_status, to_status, reason, "
                  "at) VALUES (?, ?, ?, ?, ?)"),
            (connection_id, None, "provisioning", f"ordered by client {CLIENT}", s.when(now)),
        )  # fmt: skip
        cur.execute(
            s.sql("INSERT INTO jobs (kind, connection_id, change_id, state, run_at, "
                  "scheduled_at, attempts, max_attempts, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            ("provision", connection_id, None, "queued", s.when(now), s.when(now), 0, 5,
             s.when(now)),
        )  # fmt: skip
        with _offsets_lock:
            offset = next(_offsets)
        size = 1 << (32 - BLOCK)
        cur.execute(
            s.sql("UPDATE locations SET committed_mbps = committed_mbps + ?, ipv4_next = ? "
                  "WHERE id = ? AND committed_mbps + ? <= capacity_mbps"),
            (mbps, offset + size, location, mbps),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise RuntimeError("over capacity")
        network = IPv4Network(pool)
        block = f"{network.network_address + offset % network.num_addresses}/{BLOCK}"
        cur.execute(
            s.sql("INSERT INTO ipv4_blocks (location_id, \"offset\", prefix_length, network, "
                  "connection_id) VALUES (?, ?, ?, ?, ?)"),
            (location, offset, BLOCK, block, connection_id),
        )  # fmt: skip
        _audit(cur, s, now, request, "connection.create", connection_id, customer,
               {"bandwidth": body["bandwidth"], "locationId": location,
                "description": body.get("description")})  # fmt: skip
        stamp = now.isoformat().replace("+00:00", "Z")
        document = {
            "id": connection_id, "status": "provisioning", "bandwidth": f"{mbps} Mbps",
            "location": location, "description": body.get("description"), "ipv4Block": block,
            "createdAt": stamp, "updatedAt": stamp, "pendingBandwidthChanges": [],
        }  # fmt: skip
        _idempotency(cur, s, now, request, customer, 201, json.dumps(document), {"ETag": '"x"'})
        return 201, document

    status, document = _transaction(work)
    return JSONResponse(document, status_code=status)


async def post_connection(request: Request) -> JSONResponse:
    # The body is read on the event loop, the transaction runs in the threadpool: as FastAPI
    # runs the service's sync write endpoints.
    request.scope["body"] = await request.body()
    response: JSONResponse = await run_in_threadpool(create_connection, request)
    return response


async def put_bandwidth(request: Request) -> JSONResponse:
    request.scope["body"] = await request.body()
    response: JSONResponse = await run_in_threadpool(update_bandwidth, request)
    return response


async def ready(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


app = Starlette(
    routes=[
        Route(PREFIX, post_connection, methods=["POST"]),
        Route(PREFIX + "/{connection_id}/bandwidth", put_bandwidth, methods=["PUT"]),
        Route("/readyz", ready),
    ]
)


def main() -> None:
    global store
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    args = parser.parse_args()
    store = Store(os.environ["IOD_BENCH_BASELINE_DATABASE"])
    # Keep in step with `iod serve` (src/iod/cli/) and bench/baseline_app.py.
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_level="warning",
        server_header=False, timeout_graceful_shutdown=10,
        loop=os.environ.get("IOD_HTTP_LOOP", "auto"),
    )  # fmt: skip


if __name__ == "__main__":
    main()
