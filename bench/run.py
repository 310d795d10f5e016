"""The benchmark: the service and a bare Starlette baseline, measured with wrk in one run.

    make bench          # every row: SQLite, PostgreSQL 1 process (and 2 when serve can)
    make bench-quick    # one row of each kind, in about a minute
    .venv/bin/python bench/run.py --help

Each row starts from a server that was started for its database and seeded through the
service's own code (bench/seed.py): a reader and a writer customer with 100 connections each
at a roomy location, and a customer with 100,000 connections. `iod serve` runs as users run
it, with its job worker in-process, except that the simulated network answers at once
(IOD_SIMULATED_*_SECONDS=0). wrk drives it with the Lua scripts in bench/lua/ on 127.0.0.1
only, for a bounded time per row. The table gives requests/s, p50 and p99 latency, and the
ratio to the baseline measured in the same run; the header gives the machine and versions.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from events_latency import percentile
from events_latency import run as run_events
from portal import portal_customer
from profile_summary import summarise
from seed import BULK_LOCATION, Seeded, seed
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from webhooks import run as run_webhooks

from iod.infra.config import Settings
from iod.infra.db import Base, make_engine
from iod.models import Connection

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "lua"
VENV_BIN = Path(sys.executable).parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/iod_bench"
# Databases other people use on this machine: never created, migrated or wiped from here.
PROTECTED_DATABASES = {"test", "iod_dev", "iod_helper_api", "postgres", "template0", "template1"}
BULK_CONNECTIONS = 100_000
PAGE = 100
PREFIX = "/internet-on-demand/connections"
ROWS = ("get", "list", "list-latency", "token", "create", "bandwidth", "portal")
PORTAL_CONNECTIONS = 10_000  # issue 18: the connections page of a customer with this many
PORTAL_PAGE = 25
WRITE_ROWS = {"create": "POST …/connections", "bandwidth": "PUT …/{id}/bandwidth"}
# Rows measured by their own script rather than wrk: PostgreSQL only.
OWN_ROWS = ("webhooks", "events")
WEBHOOK_GOAL = 1000.0  # deliveries/s, issue 16
EVENTS_GOAL_P99_MS = 100.0  # commit to the stream and the feed, issue 16


# --- the machine and the versions ---------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def versions(wrk: str, loop_setting: str) -> dict[str, str]:
    found = {"iod": _code_under_test(), "python": platform.python_version()}
    for name in ("fastapi", "starlette", "pydantic", "uvicorn", "sqlalchemy", "psycopg"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    # IOD_HTTP_LOOP (auto by default: uvicorn picks uvloop when installed). The
    # HTTP parser is httptools (iod's guarded protocol).
    loop = (
        loop_setting
        if loop_setting != "auto"
        else ("uvloop" if _installed("uvloop") else "asyncio")
    )
    http = "httptools" if _installed("httptools") else "h11"
    found["uvicorn loop/http"] = f"{loop}/{http}"
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    found["wrk"] = first[0].split(" Copyright")[0] if first else "unknown"
    return found


def _code_under_test() -> str:
    """The commit of the `iod` that is imported and served, and whether it has local edits."""
    import iod.version
    from iod.version import __version__

    root = Path(iod.version.__file__).resolve().parents[2]
    out = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    commit = out.stdout.strip() if out.returncode == 0 else "no git"
    return f"{__version__} ({commit}, {root})"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), "traffic goes to the loopback only"
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class Server:
    """A server process on a free loopback port, its output kept in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if http("GET", self.url + path)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {path} in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rss_mib(self) -> float:
        """Resident memory of the server and its child processes (uvicorn --workers)."""
        return sum(_rss_kib(pid) for pid in _tree(self.process.pid)) / 1024

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server and its child processes so far."""
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_ticks(database: str | None) -> dict[int, int]:
    """CPU time, in clock ticks, of each PostgreSQL backend serving `database` (its process
    title reads "postgres: [CLUSTER:] USER DATABASE HOST(PORT) STATE"); none for None."""
    ticks: dict[int, int] = {}
    if database is None:
        return ticks
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: ") or f" {database} " not in title:
                continue
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            ticks[int(proc.name)] = int(fields[11]) + int(fields[12])
    return ticks


def postgres_cpu_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of CPU PostgreSQL used between two readings (backends come and go)."""
    used = sum(t - before.get(pid, 0) for pid, t in after.items() if t >= before.get(pid, 0))
    return used / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this script's finished children (wrk runs), from getrusage."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU time of process `root` and its children so far."""
    ticks = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- the load -----------------------------------------------------------------------------


@dataclass
class Load:
    duration: int
    warmup: int
    connections: int
    threads: int


@dataclass
class Row:
    name: str
    database: str
    processes: str
    result: dict[str, Any] | None = None
    # CPU over the measured run, in cores (1.0 = one core busy): the server, PostgreSQL's
    # processes, wrk, and all else on the machine (other work makes a row noisy).
    cpu: float = 0.0
    db_cpu: float = 0.0
    wrk_cpu: float = 0.0
    other_cpu: float = 0.0
    # With --separate-worker: the `iod worker` process's CPU, in cores (not in `cpu`).
    worker_cpu: float | None = None
    connections: int = 0
    note: str = ""
    # Write rows: requests/s over the durable-write baseline's of the same kind, database and
    # run (bench/baseline_writes.py); None where there is none.
    write_ratio: float | None = None
    # A row measured by its own script (OWN_ROWS): its rate per second, and the goal's.
    rate: float | None = None
    goal_ratio: float | None = None
    # ... and the CPU its processes spent per unit (the workers' ms per delivery).
    rate_cpu_ms: float | None = None
    # A latency row of its own script (the events row): p50 and p99 in ms, and p99 over the
    # goal's p99 (below 1 meets it).
    latency_ms: tuple[float, float] | None = None
    latency_goal_ratio: float | None = None

    @property
    def rps(self) -> float:
        if self.rate is not None:
            return self.rate
        if not self.result:
            return 0.0
        return float(self.result["requests"]) / (float(self.result["duration_us"]) / 1e6)

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU per request: steadier than requests/s when the machine is shared."""
        return 1000 * self.cpu / self.rps if self.rps else 0.0

    @property
    def errors(self) -> int:
        if not self.result:
            return 0
        return sum(int(v) for k, v in self.result.items() if k.startswith("errors_"))


def wrk(
    wrk_path: str,
    url: str,
    script: str,
    env: dict[str, str],
    seconds: int,
    load: Load,
    connections: int | None = None,
) -> dict[str, Any]:
    assert url.startswith("http://127.0.0.1:"), "traffic goes to the loopback only"
    connections = connections or load.connections
    argv = [
        wrk_path, f"-t{min(load.threads, connections)}", f"-c{connections}", f"-d{seconds}s",
        "--timeout", "5s", "-s", str(LUA / script), url,
    ]  # fmt: skip
    out = subprocess.run(
        argv,
        env={**os.environ, **env, "IOD_BENCH_LUA_DIR": str(LUA)},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


@dataclass
class Case:
    """One row: a request checked once by hand, then driven by wrk."""

    key: str
    name: str
    script: str
    path: str
    env: dict[str, str]
    check: Callable[[str], None]
    connections: int | None = None  # None: the load's


@dataclass
class Target:
    """A way to run the service: a database and a number of processes."""

    database: str
    processes: int
    url: str = ""
    rows: list[str] = field(default_factory=list)


# --- the service under test ---------------------------------------------------------------


def list_has_limit() -> bool:
    """Does GET /connections take a `limit` query parameter yet? Read from the routes of
    src/iod/connections/endpoints.py, as they are when the benchmark runs."""
    from iod.connections.endpoints import router

    def names(dependant: Any) -> set[str]:
        found = {p.alias for p in dependant.query_params}
        for sub in dependant.dependencies:
            found |= names(sub)
        return found

    for route in router.routes:
        if getattr(route, "path", None) == PREFIX and "GET" in getattr(route, "methods", ()):
            return "limit" in names(route.dependant)
    return False


def serve_supports_workers() -> bool:
    out = subprocess.run(
        [str(VENV_BIN / "iod"), "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        timeout=60,
        check=False,
    )
    return re.search(r"--workers\b", out.stdout) is not None


def server_env(database_url: str, data_dir: Path, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(
        IOD_DATA_DIR=str(data_dir),
        IOD_DATABASE_URL=database_url,
        IOD_SIMULATED_PROVISION_SECONDS="0",
        IOD_SIMULATED_CHANGE_SECONDS="0",
        # The per-client rate limits stay on, so their cost is measured, but far above what
        # wrk sends through one client: the benchmark measures capacity, not the limit.
        IOD_RATE_LIMIT_READS_PER_SECOND="1000000",
        IOD_RATE_LIMIT_READS_BURST="1000000",
        IOD_RATE_LIMIT_WRITES_PER_SECOND="1000000",
        IOD_RATE_LIMIT_WRITES_BURST="1000000",
        IOD_TOKEN_REQUESTS_PER_MINUTE="1000000",
        IOD_TOKEN_REQUESTS_BURST="1000000",
    )
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def iod_cli(env: dict[str, str], *args: str) -> None:
    out = subprocess.run(
        [str(VENV_BIN / "iod"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"iod {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")


def prepare_postgres(url: str) -> str | None:
    """Create the benchmark database if missing and empty it of the service's tables.
    Returns why PostgreSQL cannot be used, or None."""
    parsed = make_url(url)
    name = parsed.database
    if not parsed.drivername.startswith("postgresql") or not name:
        return f"not a PostgreSQL URL with a database: {parsed.render_as_string()}"
    if name in PROTECTED_DATABASES:
        return f"refusing to use the database {name!r}: it belongs to something else"
    host = parsed.host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"refusing a non-loopback PostgreSQL host {host!r}"
    psql = shutil.which("psql")
    base = [psql or "psql", "-h", host, "-p", str(parsed.port or 5432),
            "-U", parsed.username or "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip
    pg_env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    if psql is None:
        return "psql is not installed"
    exists = subprocess.run(
        [*base, "-d", "postgres", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True, text=True, env=pg_env, timeout=30, check=False,
    )  # fmt: skip
    if exists.returncode != 0:
        return f"PostgreSQL is not reachable: {exists.stderr.strip().splitlines()[:1]}"
    if exists.stdout.strip() != "1":
        created = subprocess.run(
            [*base, "-d", "postgres", "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True, text=True, env=pg_env, timeout=30, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            return f"cannot create {name}: {created.stderr.strip()}"
    engine = make_engine(url)
    try:
        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()
    return None


def postgres_version(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def stored_connections(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Connection)).scalar() or 0)
    finally:
        engine.dispose()


def token_for(base_url: str, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    status, body = http(
        "POST",
        base_url + "/oauth2/token",
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=b"grant_type=client_credentials",
    )
    if status != 200:
        raise RuntimeError(f"token request answered {status}: {body[:300]!r}")
    return str(json.loads(body)["access_token"])


def expect(
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: bytes | None = None,
    shape: Callable[[Any], bool] = lambda _: True,
) -> Callable[[str], None]:
    """One request as the Lua script sends it, so a row never measures a stream of errors."""

    def check(base_url: str) -> None:
        got, data = http(method, base_url + path, headers=headers, body=body)
        if got != status or not shape(json.loads(data)):
            raise RuntimeError(f"{method} {path} answered {got}, not {status}: {data[:300]!r}")

    return check


def page_check(path: str, session: str, rows: int) -> Callable[[str], None]:
    """A portal page, signed in with the session cookie: 200 and a table of `rows` rows."""

    def check(base_url: str) -> None:
        got, data = http("GET", base_url + path, headers={"Cookie": f"iod_portal={session}"})
        page = data.decode(errors="replace")
        found = page.count('<td><a href="/portal/connections/con_')
        if got != 200 or found != rows:
            raise RuntimeError(f"GET {path} answered {got} with {found} rows: {page[:300]!r}")

    return check


def cases(seeded: Seeded, tokens: dict[str, str], paginated: bool) -> dict[str, Case]:
    reader, writer = seeded.reader, seeded.writer
    read_auth = {"Authorization": f"Bearer {tokens['reader']}"}
    write_auth = {"Authorization": f"Bearer {tokens['writer']}"}
    json_type = {"Content-Type": "application/json"}
    basic = base64.b64encode(f"{reader.client_id}:{reader.client_secret}".encode()).decode()
    first = reader.connection_ids[0]
    if paginated and seeded.bulk is not None:
        list_name = f"GET {PREFIX}?limit={PAGE} (a page of {seeded.bulk_count:,} connections)"
        list_path, list_token, want = f"{PREFIX}?limit={PAGE}", tokens["bulk"], PAGE
    else:
        list_name = f"list ({len(reader.connection_ids)} connections; pagination not yet available)"
        list_path, list_token, want = PREFIX, tokens["reader"], len(reader.connection_ids)
    list_check = expect(
        "GET",
        list_path,
        200,
        {"Authorization": f"Bearer {list_token}"},
        shape=lambda d: len(d["connections"]) == want,
    )
    create_body = json.dumps(
        {"bandwidth": "1 Mbps", "locationId": seeded.location_id, "description": "benchmark"}
    ).encode()
    portal: dict[str, Case] = {}
    if "portal" in tokens:
        portal["portal"] = Case(
            "portal",
            f"GET /portal/connections (HTML page of {PORTAL_PAGE} of a customer's "
            f"{PORTAL_CONNECTIONS:,} connections); 1 connection",
            "cookie.lua",
            "/portal/connections",
            {"IOD_BENCH_COOKIE": f"iod_portal={tokens['portal']}"},
            page_check("/portal/connections", tokens["portal"], PORTAL_PAGE),
            connections=1,
        )
    return portal | {
        "get": Case(
            "get",
            f"GET {PREFIX}/{{id}}",
            "get_by_id.lua",
            PREFIX + "/" + first,
            {"IOD_BENCH_IDS": ",".join(reader.connection_ids), "IOD_BENCH_TOKEN": tokens["reader"]},
            expect("GET", f"{PREFIX}/{first}", 200, read_auth, shape=lambda d: d["id"] == first),
        ),
        "list": Case(
            "list",
            list_name,
            "get_bearer.lua",
            list_path,
            {"IOD_BENCH_TOKEN": list_token},
            list_check,
        ),
        # The same page, one request at a time: its latency without queueing. At 32
        # connections on one process each request waits for the 31 ahead of it, so the
        # row above measures throughput and its latency is mostly the queue.
        "list-latency": Case(
            "list-latency",
            list_name + "; 1 connection",
            "get_bearer.lua",
            list_path,
            {"IOD_BENCH_TOKEN": list_token},
            list_check,
            connections=1,
        ),
        "token": Case(
            "token",
            "POST /oauth2/token (client_credentials, Basic)",
            "token.lua",
            "/oauth2/token",
            {"IOD_BENCH_BASIC": basic},
            # Each request looks the client up and verifies its secret's keyed hash
            # (HMAC-SHA-256; argon2 before issue 14, ~130 CPU ms, measured at 4 connections).
            check=expect(
                "POST",
                "/oauth2/token",
                200,
                {
                    "Authorization": f"Basic {basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                b"grant_type=client_credentials",
            ),
        ),
        "create": Case(
            "create",
            f"POST {PREFIX} (create)",
            "create.lua",
            PREFIX,
            {"IOD_BENCH_TOKEN": tokens["writer"], "IOD_BENCH_LOCATION": seeded.location_id},
            expect("POST", PREFIX, 201, {**write_auth, **json_type}, create_body),
        ),
        "bandwidth": Case(
            "bandwidth",
            f"PUT {PREFIX}/{{id}}/bandwidth",
            "bandwidth.lua",
            PREFIX,
            {"IOD_BENCH_IDS": ",".join(writer.connection_ids), "IOD_BENCH_TOKEN": tokens["writer"]},
            expect(
                "PUT",
                f"{PREFIX}/{writer.connection_ids[-1]}/bandwidth",
                200,
                {**write_auth, **json_type},
                b'{"bandwidth": "200 Mbps"}',
            ),
        ),
    }


# --- the run ------------------------------------------------------------------------------


def measure(
    wrk_path: str,
    server: Server,
    case: Case,
    load: Load,
    row: Row,
    log: Callable[[str], None],
    database: str | None = None,
    worker: int | None = None,
) -> None:
    """One row: a warm-up, then the measured run. `database`: the PostgreSQL database whose
    backends' CPU is the row's "postgres" share; `worker`: the pid of a separate `iod
    worker`, whose CPU is the row's "worker" share (out of "other")."""
    case.check(server.url)
    url = server.url + case.path
    if load.warmup:
        wrk(wrk_path, url, case.script, case.env, load.warmup, load, case.connections)

    def sample() -> tuple[float, float, float]:
        return server.cpu_seconds(), children_cpu_seconds(), machine_busy_seconds()

    def worker_seconds() -> float:
        return tree_cpu_seconds(worker) if worker is not None else 0.0

    before, pg_before, worker_before = sample(), postgres_cpu_ticks(database), worker_seconds()
    row.result = wrk(wrk_path, url, case.script, case.env, load.duration, load, case.connections)
    after, pg_after, worker_after = sample(), postgres_cpu_ticks(database), worker_seconds()
    seconds = row.result["duration_us"] / 1e6
    row.cpu, row.wrk_cpu, busy = ((a - b) / seconds for a, b in zip(after, before, strict=True))
    row.db_cpu = postgres_cpu_between(pg_before, pg_after) / seconds
    worker_cpu = (worker_after - worker_before) / seconds
    row.worker_cpu = worker_cpu if worker is not None else None
    row.other_cpu = max(busy - row.cpu - row.db_cpu - row.wrk_cpu - worker_cpu, 0.0)
    row.connections = case.connections or load.connections
    separate = (
        f"worker {worker_cpu:.2f} ({1000 * worker_cpu / row.rps:.2f} CPU ms/request) "
        if worker is not None and row.rps
        else ""
    )
    log(
        f"  {row.name} [{row.database}, {row.processes}]: {row.rps:,.0f} req/s, "
        f"p99 {row.result['p99_us'] / 1000:.2f} ms, {row.cpu_ms_per_request:.2f} CPU ms/request, "
        f"cores: server {row.cpu:.2f} postgres {row.db_cpu:.2f} wrk {row.wrk_cpu:.2f} "
        f"{separate}other {row.other_cpu:.2f}, errors {_errors(row)}"
    )


def profile(
    wrk_path: str, server: Server, base_url: str, case: Case, load: Load, out: Path
) -> Path:
    """py-spy over one more wrk run of the same row (profiling takes CPU from the measured
    run, so it is not measured): collapsed stacks and their summary into `out`."""
    pyspy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if pyspy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    stacks = out / f"{case.key}.collapsed.txt"
    spy = subprocess.Popen(
        [pyspy, "record", "--pid", str(server.process.pid), "--duration", str(load.duration),
         "--rate", "250", "--gil", "--format", "raw", "--output", str(stacks), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)
    wrk(wrk_path, base_url + case.path, case.script, case.env, load.duration, load,
        case.connections)  # fmt: skip
    _, err = spy.communicate(timeout=load.duration + 60)
    if spy.returncode != 0 or not stacks.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    summary = out / f"{case.key}.summary.md"
    summary.write_text(summarise(stacks) + "\n")
    return summary


def write_baseline(
    target: Target,
    keys: list[str],
    *,
    wrk_path: str,
    load: Load,
    data_dir: Path,
    extra_env: list[str],
    rows: list[Row],
    notes: list[str],
    log: Callable[[str], None],
) -> dict[str, float]:
    """The durable-write baseline (bench/baseline_writes.py) for the write rows among `keys`,
    on a database of its own with the same engine and settings, seeded as the service's:
    requests/s by row key."""
    wanted = [key for key in keys if key in WRITE_ROWS]
    if not wanted:
        return {}
    pg = target.database == "postgres"
    label = "PostgreSQL" if pg else "SQLite"
    base_dir = data_dir / "write-baseline"
    base_dir.mkdir(parents=True, exist_ok=True)
    if pg:
        parsed = make_url(target.url)
        url = parsed.set(database=f"{parsed.database}_writes").render_as_string(hide_password=False)
        problem = prepare_postgres(url)
        if problem:
            notes.append(f"{label} write baseline: {problem}")
            return {}
    else:
        url = f"sqlite:///{base_dir / 'iod.sqlite3'}"
    env = server_env(url, base_dir, extra_env)
    iod_cli(env, "db", "upgrade")
    seeded = seed(url, base_dir / "secret-hash.key", bulk=0)
    env.update(
        IOD_BENCH_BASELINE_DATABASE=url, IOD_BENCH_BASELINE_CUSTOMER=seeded.writer.customer_id
    )
    server = Server(
        f"write baseline ({label})",
        [sys.executable, str(BENCH / "baseline_writes.py")],
        env,
        base_dir / "server.log",
    )
    found: dict[str, float] = {}
    try:
        server.wait_ready("/readyz")
        # The same requests as the service's rows; the baseline ignores the bearer token.
        table = cases(seeded, {"reader": "baseline", "writer": "baseline"}, False)
        for key in wanted:
            row = Row(
                f"baseline: bare Starlette {WRITE_ROWS[key]} writing the same rows "
                "(DB-API, one transaction)",
                label,
                "1 process",
            )
            rows.append(row)
            measure(wrk_path, server, table[key], load, row, log,
                    make_url(url).database if pg else None)  # fmt: skip
            found[key] = row.rps
    except Exception:
        log(f"write baseline log ({server.log}):\n{server.tail()}")
        raise
    finally:
        server.stop()
    return found


def run_target(
    target: Target,
    keys: list[str],
    *,
    wrk_path: str,
    load: Load,
    work: Path,
    paginated: bool,
    bulk: int,
    extra_env: list[str],
    profile_dir: Path | None,
    rows: list[Row],
    notes: list[str],
    log: Callable[[str], None],
    separate_worker: bool = False,
    no_worker: bool = False,
) -> None:
    pg = target.database == "postgres"
    label = "PostgreSQL" if pg else "SQLite"
    procs = f"{target.processes} process" + ("es" if target.processes > 1 else "")
    data_dir = work / f"{target.database}-{target.processes}"
    data_dir.mkdir(parents=True, exist_ok=True)
    if target.database == "sqlite":
        url = f"sqlite:///{data_dir / 'iod.sqlite3'}"
    else:
        url = target.url
        problem = prepare_postgres(url)
        if problem:
            rows.extend(Row(k, label, procs, note=problem) for k in keys)
            return
    baselines = (
        write_baseline(target, keys, wrk_path=wrk_path, load=load, data_dir=data_dir,
                       extra_env=extra_env, rows=rows, notes=notes, log=log)
        if target.processes == 1 else {}
    )  # fmt: skip
    env = server_env(url, data_dir, extra_env)
    log(f"{label}, {procs}: migrating and seeding")
    iod_cli(env, "db", "upgrade")
    seeded = seed(url, data_dir / "secret-hash.key", bulk=bulk)
    log(f"  seeded {2 * 100 + seeded.bulk_count:,} connections in {seeded.seconds:.1f} s")
    argv = [str(VENV_BIN / "iod"), "serve"]
    if target.processes > 1:
        argv += ["--workers", str(target.processes)]
    worker: subprocess.Popen[bytes] | None = None
    if no_worker:  # the API's own work alone: jobs wait in the queue, nothing runs them
        argv.append("--no-worker")
    elif separate_worker:  # the production layout: API processes alone, one `iod worker`
        argv.append("--no-worker")
        with (data_dir / "worker.log").open("ab") as handle:
            worker = subprocess.Popen([str(VENV_BIN / "iod"), "worker"], env=env,
                                      stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
    server = Server(f"iod serve ({label})", argv, env, data_dir / "server.log")
    try:
        server.wait_ready("/readyz")
        tokens = {
            "reader": token_for(server.url, seeded.reader.client_id, seeded.reader.client_secret),
            "writer": token_for(server.url, seeded.writer.client_id, seeded.writer.client_secret),
        }
        if seeded.bulk is not None:
            tokens["bulk"] = token_for(server.url, seeded.bulk.client_id, seeded.bulk.client_secret)
        if "portal" in keys:
            started = time.monotonic()
            settings = Settings(data_dir=data_dir, database_url=url)
            tokens["portal"], _ = portal_customer(url, settings, BULK_LOCATION, PORTAL_CONNECTIONS)
            log(f"  seeded a portal customer of {PORTAL_CONNECTIONS:,} connections "
                f"in {time.monotonic() - started:.1f} s")  # fmt: skip
        table = cases(seeded, tokens, paginated)
        for key in keys:
            case = table[key]
            row = Row(case.name, label, procs)
            rows.append(row)
            measure(wrk_path, server, case, load, row, log, make_url(url).database if pg else None,
                    worker.pid if worker is not None else None)  # fmt: skip
            if baselines.get(key):
                row.write_ratio = row.rps / baselines[key]
            if profile_dir is not None and target.database == "sqlite":
                summary = profile(wrk_path, server, server.url, case, load, profile_dir)
                log(f"  profile of {case.name} (py-spy --gil): {summary}")
        stored = stored_connections(url)
        notes.append(
            f"{label}, {procs}: server RSS {server.rss_mib():.0f} MiB after its rows, "
            f"{stored:,} connections stored"
        )
    except Exception:
        log(f"server log ({server.log}):\n{server.tail()}")
        raise
    finally:
        server.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)


def _errors(row: Row) -> str:
    """The count, and by kind when there are any: status (a non-2xx answer), timeout, ..."""
    if not row.errors or row.result is None:
        return str(row.errors)
    kinds = [f"{k.removeprefix('errors_')} {v}" for k, v in row.result.items()
             if k.startswith("errors_") and v]  # fmt: skip
    return f"{row.errors} ({', '.join(kinds)})"


def render(
    rows: list[Row], baseline: float, info: dict[str, str], vers: dict[str, str], load: Load
) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} memory, "
        f"Linux {info['kernel']}; load average at the start {info['loadavg']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"load: wrk -t{load.threads} -c{load.connections} -d{load.duration}s per row "
        f"(after a {load.warmup} s warm-up), on 127.0.0.1",
        "server CPU ms/request: the server's CPU time per request (steadier than requests/s "
        "on a shared machine); cores: CPU in use during the row (1.00 = one core) by the "
        "server, the PostgreSQL backends of the benchmark database, wrk, and everything else "
        "(near 0 on a quiet machine)",
        "",
        "ratio to write baseline: a write row's requests/s over the bare Starlette endpoint "
        "that writes the same rows in one transaction on the same database (bench/"
        "baseline_writes.py), measured in the same run",
        "",
        "| row | database | processes | requests/s | p50 ms | p99 ms | ratio to baseline "
        "| ratio to write baseline | server CPU ms/request "
        "| cores: server / postgres / wrk / other | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        if row.latency_ms is not None:
            p50, p99 = row.latency_ms
            ratio = f"p99 {row.latency_goal_ratio:.3f} of the goal's"
            cells = [row.name, row.database, row.processes, "", f"{p50:.2f}", f"{p99:.2f}",
                     ratio, "", "", row.note, "0"]  # fmt: skip
        elif row.rate is not None:
            ratio = f"{row.goal_ratio:.3f} of the goal" if row.goal_ratio is not None else ""
            cpu = f"{row.rate_cpu_ms:.3f}" if row.rate_cpu_ms is not None else ""
            cells = [row.name, row.database, row.processes, f"{row.rate:,.0f}", "", "",
                     ratio, "", cpu, row.note, "0"]  # fmt: skip
        elif row.result is None:
            cells = [row.name, row.database, row.processes, row.note or "not run",
                     *[""] * 7]  # fmt: skip
        else:
            cells = [
                row.name,
                row.database,
                row.processes,
                f"{row.rps:,.0f}",
                f"{row.result['p50_us'] / 1000:.2f}",
                f"{row.result['p99_us'] / 1000:.2f}",
                f"{row.rps / baseline:.3f}" if baseline else "",
                f"{row.write_ratio:.3f}" if row.write_ratio is not None else "",
                f"{row.cpu_ms_per_request:.3f}",
                f"{row.cpu:.2f} / {row.db_cpu:.2f} / {row.wrk_cpu:.2f} / {row.other_cpu:.2f}"
                + (f" (+ worker {row.worker_cpu:.2f})" if row.worker_cpu is not None else ""),
                _errors(row),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    noisy = [row for row in rows if row.result and row.other_cpu > 0.25]
    if noisy:
        worst = max(row.other_cpu for row in noisy)
        lines += [
            "",
            f"warning: other work used up to {worst:.2f} cores during {len(noisy)} of the rows; "
            "requests/s and ratios are low and noisy there (CPU ms/request much less so): "
            "rerun on a quiet machine for figures to quote",
        ]
    return "\n".join(lines)


def webhooks_row(pg_url: str, quick: bool, log: Callable[[str], None]) -> Row:
    """Webhook deliveries per second to a local receiver, two `iod worker` on PostgreSQL
    (bench/webhooks.py, on a database of its own, `<database>_webhooks`, wiped)."""
    parsed = make_url(pg_url)
    url = parsed.set(database=f"{parsed.database}_webhooks").render_as_string(hide_password=False)
    n = 1000 if quick else 5000
    row = Row(f"webhook deliveries/s to a local receiver ({n:,} events, one endpoint; "
              f"goal ≥ {WEBHOOK_GOAL:,.0f}/s)", "PostgreSQL", "2 `iod worker`")  # fmt: skip
    problem = prepare_postgres(url)
    if problem:
        row.note = f"skipped: {problem}"
        return row
    log(f"webhooks: {n:,} deliveries, 2 workers ({make_url(url).database})")
    result = run_webhooks(url, n, workers=2)
    if result.delivered < n:
        row.note = f"only {result.delivered:,} of {n:,} delivered within 600 s"
        return row
    row.rate = result.per_second
    row.goal_ratio = result.per_second / WEBHOOK_GOAL
    row.rate_cpu_ms = result.worker_cpu_ms
    row.note = (
        f"workers' CPU per delivery; PostgreSQL {result.postgres_cpu_ms:.2f} ms per delivery; "
        f"load average {result.loadavg:.1f} at the end"
    )
    log(f"  {result.per_second:,.0f} deliveries/s")
    return row


def events_rows(pg_url: str, quick: bool, log: Callable[[str], None]) -> list[Row]:
    """How soon a committed event is on the stream and in a long-polled feed: events
    committed one at a time by another process, as a worker commits them, on PostgreSQL
    (NOTIFY; bench/events_latency.py, on a database of its own, `<database>_events`, wiped)."""
    parsed = make_url(pg_url)
    url = parsed.set(database=f"{parsed.database}_events").render_as_string(hide_password=False)
    n = 100 if quick else 300
    names = {"stream": "GET …/events/stream (SSE)", "feed": "GET …/events?wait=30"}
    rows = [
        Row(f"event visible on {names[key]} after its commit ({n} events one at a time; "
            f"goal p99 < {EVENTS_GOAL_P99_MS:.0f} ms)", "PostgreSQL", "1 (`--no-worker`)")
        for key in names
    ]  # fmt: skip
    problem = prepare_postgres(url)
    if problem:
        for row in rows:
            row.note = f"skipped: {problem}"
        return rows
    log(f"events: {n} events one at a time ({make_url(url).database})")
    lags = run_events(url, n)
    for row, key in zip(rows, names, strict=True):
        seen = lags[key]
        if len(seen) < n:
            row.note = f"only {len(seen)} of {n} arrived"
            continue
        p99 = percentile(seen, 0.99)
        row.latency_ms = (percentile(seen, 0.5), p99)
        row.latency_goal_ratio = p99 / EVENTS_GOAL_P99_MS
        row.note = f"max {max(seen):.1f} ms; load average {os.getloadavg()[0]:.1f} at the end"
        log(f"  {key}: p99 {p99:.1f} ms")
    return rows


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="iod-bench-"))
        print(f"work directory (kept): {path}", flush=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="iod-bench-") as name:
        yield Path(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one row of each kind, shorter runs (about a minute)")  # fmt: skip
    parser.add_argument("--duration", type=int, help="seconds per row (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds per row (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--rows",
        default=",".join(ROWS + OWN_ROWS),
        help=f"which rows, of {','.join(ROWS + OWN_ROWS)} (the baseline always runs; "
        "webhooks and events: PostgreSQL only)",
    )
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="sqlite, postgres or both (default)")  # fmt: skip
    parser.add_argument("--server-env", action="append", default=[], metavar="IOD_X=VALUE",
                        help="an extra setting for the served process (repeatable)")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also profile each SQLite row with py-spy into DIR")  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--idempotency-keys", action="store_true",
                        help="write rows send a new Idempotency-Key with each request, as the "
                             "SDK does (the service and the write baseline then store the "
                             "idempotency record too)")  # fmt: skip
    parser.add_argument("--separate-worker", action="store_true",
                        help="API processes with --no-worker and one `iod worker` beside them "
                             "(the production layout) instead of a worker in each")  # fmt: skip
    parser.add_argument("--no-worker", action="store_true",
                        help="API processes with --no-worker and no worker at all: what the "
                             "API's requests cost alone, jobs left queued")  # fmt: skip
    args = parser.parse_args()

    started = time.monotonic()
    if args.idempotency_keys:
        os.environ["IOD_BENCH_IDEMPOTENCY"] = "1"  # read by bench/lua/common.lua
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        print("wrk is not installed: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2
    load = Load(
        duration=args.duration or (3 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        connections=args.connections,
        threads=args.threads,
    )
    if not 1 <= load.duration <= 60 or not 0 <= load.warmup <= 30:
        parser.error("--duration is 1 to 60 seconds, --warmup 0 to 30")

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {message}", flush=True)

    loop_setting = server_env("", Path("."), args.server_env).get("IOD_HTTP_LOOP", "auto")
    info, vers = machine(), versions(wrk_path, loop_setting)
    pg_url = os.environ.get("IOD_BENCH_DATABASE_URL") or DEFAULT_PG_URL
    paginated = list_has_limit()
    workers = serve_supports_workers()
    chosen = [key for key in ROWS if key in args.rows.split(",")]
    own = [key for key in OWN_ROWS if key in args.rows.split(",")]
    databases = args.databases.split(",")
    if not (chosen or own) or not set(databases) <= {"sqlite", "postgres"}:
        parser.error(
            f"--rows takes some of {','.join(ROWS + OWN_ROWS)}; --databases sqlite and/or postgres"
        )
    targets = []
    if "sqlite" in databases and chosen:
        targets.append(Target("sqlite", 1, rows=chosen))
    if "postgres" in databases and chosen:
        # Quick: one PostgreSQL row; the rows of each kind ran on SQLite.
        quick_pg = ["get"] if "get" in chosen else chosen[:1]
        targets.append(Target("postgres", 1, pg_url, rows=quick_pg if args.quick else chosen))
        if not args.quick:
            targets.append(Target("postgres", 2, pg_url, rows=chosen))
    # The 100,000 connections are what the list page is about; a quick run without
    # pagination does not need them.
    bulk = BULK_CONNECTIONS if paginated or not args.quick else 0
    log(f"list pagination (limit): {'yes' if paginated else 'not yet'}; "
        f"iod serve --workers: {'yes' if workers else 'not yet'}")  # fmt: skip

    rows: list[Row] = []
    notes: list[str] = []
    with workdir(args.keep) as work:
        baseline_row = Row(
            "baseline: bare Starlette GET (same uvicorn settings)", "none", "1 process"
        )
        server = Server(
            "baseline",
            [sys.executable, str(BENCH / "baseline_app.py")],
            # The service's environment: the same event loop when --server-env names one.
            server_env("", work, args.server_env),
            work / "baseline.log",
        )
        try:
            ids = [f"con_{i:029d}" for i in range(100)]
            server.wait_ready(f"{PREFIX}/{ids[0]}")
            case = Case(
                "baseline",
                baseline_row.name,
                "get_by_id.lua",
                f"{PREFIX}/{ids[0]}",
                {"IOD_BENCH_IDS": ",".join(ids), "IOD_BENCH_TOKEN": "baseline"},
                expect("GET", f"{PREFIX}/{ids[0]}", 200, {}, shape=lambda d: d["id"] == ids[0]),
            )
            measure(wrk_path, server, case, load, baseline_row, log)
            notes.append(f"baseline: server RSS {server.rss_mib():.0f} MiB after its row")
        finally:
            server.stop()
        rows.append(baseline_row)

        for target in targets:
            if target.processes > 1 and not workers:
                note = "not available yet: `iod serve` has no --workers"
                rows.append(Row("every row", "PostgreSQL", "2 processes", note=note))
                continue
            run_target(
                target,
                target.rows,
                wrk_path=wrk_path,
                load=load,
                work=work,
                paginated=paginated,
                bulk=bulk,
                extra_env=args.server_env,
                profile_dir=args.profile,
                rows=rows,
                notes=notes,
                log=log,
                separate_worker=args.separate_worker,
                no_worker=args.no_worker,
            )
        if "webhooks" in own and "postgres" in databases:
            rows.append(webhooks_row(pg_url, args.quick, log))
        if "events" in own and "postgres" in databases:
            rows.extend(events_rows(pg_url, args.quick, log))
        if "postgres" in databases:
            with contextlib.suppress(Exception):
                vers["postgresql"] = postgres_version(pg_url)

    print()
    print(render(rows, baseline_row.rps, info, vers, load))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- total time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "versions": vers,
                    "load": load.__dict__,
                    "baseline_rps": baseline_row.rps,
                    "rows": [row.__dict__ | {"rps": row.rps} for row in rows],
                    "notes": notes,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
