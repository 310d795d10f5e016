"""Surge benchmark (issue 14): the top of the hour. N clients, each with credentials of its own,
fetch a token and then change one connection's bandwidth, all at once and as fast as they can,
against `iod serve --workers 2 --no-worker` and one `iod worker` on PostgreSQL.

Reports the time until every change was accepted and until every one was applied (the
simulated network answering at once), errors by status for each step, and p50/p99 latency
per step. Run: `make bench-surge` (IOD_SURGE_DATABASE_URL, default a database
`iod_bench_surge` on the local PostgreSQL, created anew and dropped at the end).

The clients run in this process (uvloop and aiohttp, one connection each; `--client httpx`
for the SDK's library) on the same machine as the servers, so their CPU is taken from the
servers': on a shared 2-CPU machine the figures are a floor. The token endpoint's
per-address limits are raised (every client comes from 127.0.0.1, where in production they
come from many addresses); the per-client write limits stay as configured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_summary import summarise
from run import _tree, postgres_cpu_between, postgres_cpu_ticks

from iod.auth.passwords import open_hasher
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.clock import SystemClock
from iod.infra.db import Database, make_engine
from iod.infra.ids import new_id
from iod.models import BandwidthChange, Connection, Customer, Location

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench_surge"
PROTECTED = {"test", "iod_dev", "iod_helper_api", "postgres", "template0", "template1"}
LOCATION = "PL-SURGE"
PREFIX = "/internet-on-demand/connections"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Client:
    client_id: str
    secret: str
    connection_id: str
    token_status: int | str = 0
    put_status: int | str = 0
    token_ms: float = 0.0
    put_ms: float = 0.0
    answered_at: float = 0.0  # time.perf_counter() when the PUT was answered
    change_id: str | None = None
    retries: int = 0  # requests sent again after a transport error (`_sent`)
    problem: str | None = None  # the title and detail of a refusal


@dataclass
class Result:
    clients: list[Client] = field(default_factory=list)
    all_accepted_s: float | None = None
    all_applied_s: float | None = None
    applied: int = 0
    start: float = 0.0  # time.perf_counter() at the release of the clients
    # CPU seconds from the release of the clients to the last application, per party.
    cpu: dict[str, float] = field(default_factory=dict)


def refuse_unsafe(url: str) -> None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        sys.exit(f"not a PostgreSQL URL with a database: {parsed.render_as_string()}")
    if parsed.database in PROTECTED:
        sys.exit(f"refusing to drop the database {parsed.database!r}: it belongs to something else")
    if (parsed.host or "127.0.0.1") not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing a non-loopback PostgreSQL host {parsed.host!r}")


def recreate(url: str, *, drop_only: bool = False) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
            if not drop_only:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def seed(url: str, key_file: Path, count: int, locations: int = 1) -> list[Client]:
    """`count` customers, each with a client (through the service's code, so the secret gets
    the keyed hash of `key_file`) and one active 100 Mbps connection at a roomy location."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    db = Database(engine)
    clock = SystemClock()
    hasher = open_hasher(key_file)
    now = datetime.now(UTC)
    made: list[Client] = []
    try:
        with db.write() as session:
            # One location (the default: every change takes its counter's row lock in turn,
            # as at a busy site), or the connections spread over several.
            sites = [LOCATION] if locations == 1 else [f"{LOCATION}-{n}" for n in range(locations)]
            session.execute(
                insert(Location),
                [{"id": site, "name": "surge", "address": "-", "capacity_mbps": 10_000_000,
                  "tiers_mbps": [100, 200], "ipv4_pool": "10.0.0.0/8",
                  "committed_mbps": 100 * len(range(n, count, len(sites))),
                  "created_at": now, "updated_at": now}
                 for n, site in enumerate(sites)],
            )  # fmt: skip
            customer_ids = [new_id("cus") for _ in range(count)]
            session.execute(
                insert(Customer),
                [{"id": c, "name": f"surge {n}", "created_at": now}
                 for n, c in enumerate(customer_ids)],
            )  # fmt: skip
            connection_ids = [new_id("con") for _ in range(count)]
            session.execute(
                insert(Connection),
                [{"id": i, "customer_id": c, "location_id": sites[n % len(sites)],
                  "status": "active", "bandwidth_mbps": 100, "committed_mbps": 100,
                  "created_by": "surge", "created_at": now, "updated_at": now}
                 for n, (i, c) in enumerate(zip(connection_ids, customer_ids, strict=True))],
            )  # fmt: skip
            for customer_id, connection_id in zip(customer_ids, connection_ids, strict=True):
                new = customers.create_client(
                    session, clock, customer_id, "read write", hasher=hasher, name="surge"
                )
                made.append(Client(new.client_id, new.client_secret, connection_id))
    finally:
        db.dispose()
    return made


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a server process exited; see its log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s")


class Transport:
    """The clients' HTTP library. `aiohttp` (the default) parses with a C parser and costs the
    servers' two CPUs about a fifth of what `httpx` does per request (docs/performance.md);
    `httpx`, the SDK's library, stays selectable (`--client httpx`) to compare with."""

    errors: tuple[type[BaseException], ...]

    async def open(self, base_url: str) -> None: ...
    async def close(self) -> None: ...

    async def token(self, client: Client) -> tuple[int, dict[str, Any] | None]:
        raise NotImplementedError

    async def put(self, client: Client, token: str, key: str) -> tuple[int, dict[str, Any] | None]:
        raise NotImplementedError


class HttpxTransport(Transport):
    errors = (httpx.HTTPError,)
    transport_errors = (httpx.TransportError,)

    async def open(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(60.0),
            verify=False,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def token(self, client: Client) -> tuple[int, dict[str, Any] | None]:
        response = await self.http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.secret),
        )
        return response.status_code, _json(response.content)

    async def put(self, client: Client, token: str, key: str) -> tuple[int, dict[str, Any] | None]:
        response = await self.http.put(
            f"{PREFIX}/{client.connection_id}/bandwidth",
            json={"bandwidth": "200 Mbps"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        )
        return response.status_code, _json(response.content)


class AiohttpTransport(Transport):
    errors = (aiohttp.ClientError, asyncio.TimeoutError)
    transport_errors = (aiohttp.ClientConnectionError,)

    async def open(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=60.0),
        )

    async def close(self) -> None:
        await self.http.close()

    async def token(self, client: Client) -> tuple[int, dict[str, Any] | None]:
        async with self.http.post(
            self.base_url + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=aiohttp.BasicAuth(client.client_id, client.secret),
        ) as response:
            body = await response.read()
        return response.status, _json(body)

    async def put(self, client: Client, token: str, key: str) -> tuple[int, dict[str, Any] | None]:
        async with self.http.put(
            f"{self.base_url}{PREFIX}/{client.connection_id}/bandwidth",
            json={"bandwidth": "200 Mbps"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        ) as response:
            body = await response.read()
        return response.status, _json(body)


TRANSPORTS: dict[str, type[HttpxTransport] | type[AiohttpTransport]] = {
    "aiohttp": AiohttpTransport,
    "httpx": HttpxTransport,
}


async def _sent(
    http: HttpxTransport | AiohttpTransport,
    client: Client,
    request: Callable[[], Awaitable[tuple[int, dict[str, Any] | None]]],
) -> tuple[int, dict[str, Any] | None]:
    """`request`, sent again once after a transport error, as the SDK does (the PUT with
    the same Idempotency-Key). On two CPUs shared with the servers the clients can be
    seconds late: one may send on a kept-alive connection the server closed when it had
    been idle `IOD_HTTP_KEEP_ALIVE_SECONDS` (the client not having read the server's FIN
    yet), and gets a reset, which any HTTP client meets and retries. Counted."""
    try:
        return await request()
    except http.transport_errors:
        client.retries += 1
        return await request()


def _json(body: bytes) -> dict[str, Any] | None:
    """The answer's JSON object; None for an empty or non-JSON body (a proxy's page)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _problem(body: dict[str, Any] | None) -> str:
    """What a refusal said (problem+json's title and detail), for the report."""
    if not body:
        return "(no body)"
    return f"{body.get('title')}: {str(body.get('detail'))[:120]}"


async def one_client(
    http: HttpxTransport | AiohttpTransport, client: Client, gate: asyncio.Event
) -> None:
    await gate.wait()
    began = time.perf_counter()
    try:
        status, body = await _sent(http, client, lambda: http.token(client))
        client.token_status = status
    except http.errors as exc:
        client.token_status = type(exc).__name__
        return
    finally:
        client.token_ms = (time.perf_counter() - began) * 1000
    if status != 200 or body is None:
        client.problem = _problem(body)
        return
    token = body["access_token"]
    began = time.perf_counter()
    key = new_id("key")  # the same on a retry, as the SDK does: the change is made once
    try:
        status, body = await _sent(http, client, lambda: http.put(client, token, key))
        client.put_status = status
        if status == 200 and body is not None:
            client.change_id = body["change"]["id"]
        else:
            client.problem = _problem(body)
    except http.errors as exc:
        client.put_status = type(exc).__name__
    finally:
        client.answered_at = time.perf_counter()
        client.put_ms = (client.answered_at - began) * 1000


async def surge(base_url: str, clients: list[Client], library: str = "aiohttp") -> float:
    """Each client has an HTTP client of its own, as 1,000 separate schedulers would: one
    shared httpx pool of 1,000 connections spends CPU in every request on the pool's
    bookkeeping (measured: 19 s of this process's CPU for 2,000 requests), which starved
    the servers on the same two CPUs. Plain HTTP, so no TLS context is loaded per client."""
    https = [TRANSPORTS[library]() for _ in clients]
    for http in https:
        await http.open(base_url)
    try:
        gate = asyncio.Event()
        tasks = [
            asyncio.create_task(one_client(h, c, gate)) for h, c in zip(https, clients, strict=True)
        ]
        await asyncio.sleep(0)  # every task is waiting at the gate
        start = time.perf_counter()
        gate.set()
        await asyncio.gather(*tasks)
        return start
    finally:
        for http in https:
            await http.close()


def applied_count(engine) -> int:  # type: ignore[no-untyped-def]
    """Changes applied: every change in this database is one of the surge's."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(BandwidthChange)
                .where(BandwidthChange.status == "applied")
            ).scalar_one()
        )


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU of a process and its children (uvicorn --workers) so far."""
    ticks = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_profiles(
    out: Path, api: subprocess.Popen[bytes], worker: subprocess.Popen[bytes]
) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    """py-spy on the first API process (a child of uvicorn's supervisor) and the worker,
    until they are sent SIGINT after the surge: collapsed stacks into `out`."""
    pyspy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if pyspy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    children = [
        pid for pid in _tree(api.pid) if pid != api.pid and b"resource_tracker" not in _cmdline(pid)
    ]
    targets = [("api", min(children) if children else api.pid), ("worker", worker.pid)]
    spies = []
    for name, pid in targets:
        stacks = out / f"surge-{name}.collapsed.txt"
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--format", "raw",
             "--output", str(stacks), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        spies.append((name, spy, stacks))
    time.sleep(1.0)  # py-spy attached
    return spies


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--locations", type=int, default=1,
                        help="spread the connections over this many locations")  # fmt: skip
    parser.add_argument("--apply-timeout", type=float, default=120.0,
                        help="seconds to wait for every change to be applied")  # fmt: skip
    parser.add_argument("--client", choices=sorted(TRANSPORTS), default="aiohttp",
                        help="the clients' HTTP library (default aiohttp: the cheaper on "
                        "the CPUs the servers share)")  # fmt: skip
    parser.add_argument("--http-threads", type=int, metavar="N",
                        help="IOD_HTTP_THREADS of the API processes (default: the "
                        "service's default)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database and the work directory")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy (--gil) one API process and the worker during the surge "
                        "into DIR (their CPU figures then include py-spy's pauses)")  # fmt: skip
    args = parser.parse_args()
    url = os.environ.get("IOD_SURGE_DATABASE_URL", DEFAULT_URL)
    refuse_unsafe(url)
    work = Path(tempfile.mkdtemp(prefix="iod-surge-"))
    print(f"work directory: {work}", flush=True)
    recreate(url)
    seeded_at = time.monotonic()
    clients = seed(url, work / "secret-hash.key", args.clients, args.locations)
    print(f"seeded {len(clients)} customers, clients and connections in "
          f"{time.monotonic() - seeded_at:.1f} s", flush=True)  # fmt: skip

    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(
        IOD_DATABASE_URL=url,
        IOD_DATA_DIR=str(work),
        IOD_SIMULATED_PROVISION_SECONDS="0",
        IOD_SIMULATED_CHANGE_SECONDS="0",
        IOD_LOG_LEVEL="WARNING",
        # Every client is on 127.0.0.1: the per-address token limits would see one client.
        IOD_TOKEN_REQUESTS_PER_MINUTE="1000000",
        IOD_TOKEN_REQUESTS_BURST="1000000",
        # 1,000 clients share the loopback address: the per-address connection bound (128)
        # would refuse most of them; the benchmark measures capacity, not that bound.
        IOD_HTTP_MAX_CONNECTIONS_PER_ADDRESS="0",
        # The kernel hands a new connection to whichever API process accepts first, so one
        # may hold most of the 1,000, and a request counts as in progress until its task
        # ends (a moment after its answer went out, when the client may have sent its
        # next one): the per-process bound (IOD_HTTP_MAX_CONCURRENCY, 1,000) then refuses
        # a few with 503. An operator expecting N clients at once sets it above N.
        IOD_HTTP_MAX_CONCURRENCY=str(2 * max(args.clients, 500)),
        **({"IOD_HTTP_THREADS": str(args.http_threads)} if args.http_threads else {}),
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (work / "servers.log").open("ab")
    api = subprocess.Popen(
        [str(VENV_BIN / "iod"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(args.api_processes), "--no-worker"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(VENV_BIN / "iod"), "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = make_engine(url)
    result = Result(clients=clients)
    accepted: list[Client] = []
    try:
        wait_ready(base_url, [api, worker])
        time.sleep(1.0)  # the worker's reconciliation at its start
        database = make_url(url).database
        spies = start_profiles(args.profile, api, worker) if args.profile else []
        before = (time.process_time(), tree_cpu_seconds(api.pid),
                  tree_cpu_seconds(worker.pid), postgres_cpu_ticks(database))  # fmt: skip
        start = result.start = uvloop.run(surge(base_url, clients, args.client))
        accepted = [c for c in clients if c.put_status == 200]
        if accepted:
            result.all_accepted_s = max(c.answered_at for c in accepted) - start
        deadline = time.perf_counter() + args.apply_timeout
        while time.perf_counter() < deadline:
            result.applied = applied_count(engine)
            if result.applied >= len(accepted):
                result.all_applied_s = time.perf_counter() - start
                break
            time.sleep(0.05)
        result.cpu = {
            "clients (this process)": time.process_time() - before[0],
            "API processes": tree_cpu_seconds(api.pid) - before[1],
            "worker": tree_cpu_seconds(worker.pid) - before[2],
            "PostgreSQL": postgres_cpu_between(before[3], postgres_cpu_ticks(database)),
        }
        for name, spy, stacks in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            if stacks.exists():
                summary = stacks.with_suffix("").with_suffix(".summary.md")
                summary.write_text(summarise(stacks) + "\n")
                print(f"profile of {name} (py-spy --gil): {summary}", flush=True)
    finally:
        for process in (api, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (api, worker):
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        engine.dispose()
        log.close()
        if not args.keep:
            recreate(url, drop_only=True)
    report(args, result, url)
    done = result.all_applied_s is not None and len(accepted) == len(clients)
    if done and not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # the servers' log and key; kept on a failure
    return 0 if done else 1


def timeline(clients: list[Client], start: float) -> str:
    """The accepted PUTs counted per second since the release: where the surge stalls."""
    seconds = Counter(int(c.answered_at - start) for c in clients if c.put_status == 200)
    return " ".join(str(seconds.get(n, 0)) for n in range(max(seconds, default=-1) + 1))


def report(args: argparse.Namespace, result: Result, url: str) -> None:
    clients = result.clients
    tokens = Counter(str(c.token_status) for c in clients)
    puts = Counter(str(c.put_status) for c in clients if c.token_status == 200)
    token_ms = [c.token_ms for c in clients]
    put_ms = [c.put_ms for c in clients if c.token_status == 200]
    accepted = sum(1 for c in clients if c.put_status == 200)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines = [
        f"machine: {len(os.sched_getaffinity(0))} CPUs, load average now {load}; PostgreSQL "
        f"{make_url(url).database}; {args.api_processes} API processes (--no-worker) and 1 "
        f"`iod worker`; the clients in this process (uvloop + {args.client}), one connection "
        "each",
        f"{len(clients)} clients: token, then PUT bandwidth (with an Idempotency-Key)",
        "",
        "| step | answers by status | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|",
        f"| POST /oauth2/token | {dict(sorted(tokens.items()))} | "
        f"{percentile(token_ms, 0.5):.0f} | {percentile(token_ms, 0.99):.0f} | "
        f"{max(token_ms, default=0):.0f} |",
        f"| PUT …/bandwidth | {dict(sorted(puts.items()))} | {percentile(put_ms, 0.5):.0f} | "
        f"{percentile(put_ms, 0.99):.0f} | {max(put_ms, default=0):.0f} |",
        "",
        f"sent again after a transport error (a reset of a kept-alive connection the "
        f"server had closed): {sum(c.retries for c in clients)}",
        f"accepted: {accepted} of {len(clients)}"
        + (f", the last {result.all_accepted_s:.2f} s after the start"
           if result.all_accepted_s is not None else ""),
        f"applied: {result.applied} of {accepted}"
        + (f", the last {result.all_applied_s:.2f} s after the start "
           f"({result.all_applied_s - (result.all_accepted_s or 0):.2f} s after the last "
           "acceptance)" if result.all_applied_s is not None else
           f" within {args.apply_timeout:.0f} s"),
        *(f"refused {n} times: {problem}" for problem, n in
          Counter(c.problem for c in clients if c.problem).most_common(5)),
        "changes accepted per second since the start: " + timeline(clients, result.start),
        "goal (issue 14): all accepted within 5 s, all applied within 5 s after that, no 5xx",
        "CPU seconds from the release to the last application: "
        + ", ".join(f"{who} {seconds:.1f}" for who, seconds in result.cpu.items()),
    ]  # fmt: skip
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "clients": len(clients),
                    "token_status": tokens,
                    "put_status": puts,
                    "retries": sum(c.retries for c in clients),
                    "token_ms": {"p50": percentile(token_ms, 0.5),
                                 "p99": percentile(token_ms, 0.99)},
                    "put_ms": {"p50": percentile(put_ms, 0.5), "p99": percentile(put_ms, 0.99)},
                    "all_accepted_s": result.all_accepted_s,
                    "all_applied_s": result.all_applied_s,
                    "applied": result.applied,
                    "cpu_seconds": result.cpu,
                },
                indent=2,
            )
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
