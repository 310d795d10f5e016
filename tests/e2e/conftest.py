"""A served process: `iod serve` in a subprocess on a free port, on SQLite or PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _prepare_postgres

pytestmark = pytest.mark.e2e


# Ports for served processes: each xdist worker (and a run without xdist) draws from a range
# of its own, below the kernel's ephemeral ports (32768 up), so that neither another worker's
# server nor an outgoing connection can take a port between free_port() and the bind.
PORTS_BASE = 20000
PORTS_PER_WORKER = 1000
PORT_RANGES = 12


def _port_order() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    slot = int(worker[2:]) + 1 if worker[:2] == "gw" and worker[2:].isdigit() else 0
    base = PORTS_BASE + slot % PORT_RANGES * PORTS_PER_WORKER
    ports = list(range(base, base + PORTS_PER_WORKER))
    random.shuffle(ports)  # two runs at once on one machine rarely meet
    while True:
        yield from ports  # a port is handed out again only after all the others


_ports = _port_order()


def free_port() -> int:
    """A port nothing listens on now, of this worker's range (see PORTS_BASE)."""
    for _ in range(PORTS_PER_WORKER):
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the range is full: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iod(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the `iod` command as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "iod", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"iod {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
    return result


class PortTaken(AssertionError):
    """The server could not bind its port: another process took it first."""


class Server:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False  # a restart keeps the port (the URL its clients know)

    def start(self, timeout: float = 30) -> Server:
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                # free_port() is a guess that another xdist worker's process may have taken
                # since: a first start tries another port.
                if self.started or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> Server:
        seen = self.log.stat().st_size if self.log.exists() else 0
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iod", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                output = self.log.read_bytes()[seen:].decode(errors="replace")
                if "address already in use" in output.lower():
                    raise PortTaken(f"port {self.port} taken: {output[-3000:]}")
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.started = True
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """A crash: no graceful shutdown."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def base_env(tmp_path: Path, backend: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(
        IOD_DATA_DIR=str(tmp_path / "data"),
        IOD_SIMULATED_PROVISION_SECONDS="0.2",
        IOD_SIMULATED_CHANGE_SECONDS="0.1",
        IOD_WORKER_POLL_SECONDS="0.2",
        IOD_LOG_LEVEL="INFO",
        # On, so their headers are served and checked, but far above what these tests send
        # through one client at machine speed; tests/security tests the limits themselves.
        IOD_RATE_LIMIT_READS_PER_SECOND="100000",
        IOD_RATE_LIMIT_READS_BURST="100000",
        IOD_RATE_LIMIT_WRITES_PER_SECOND="100000",
        IOD_RATE_LIMIT_WRITES_BURST="100000",
        IOD_TOKEN_REQUESTS_BURST="10000",
    )
    if backend == "postgres":
        db = _prepare_postgres()
        db.dispose()
        env["IOD_DATABASE_URL"] = os.environ["IOD_TEST_DATABASE_URL"]
    env.update(extra)
    return env


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        from tests.conftest import postgres_url

        postgres_url()
    return str(request.param)


@pytest.fixture
def served(tmp_path: Path, backend: str) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A running server with the demo data; yields it and the demo credentials."""
    env = base_env(tmp_path, backend)
    demo = json.loads(iod(env, "demo", "--json").stdout)
    server = Server(env, tmp_path / "server.log").start()
    try:
        yield server, demo
    finally:
        server.stop()


def token_for(url: str, client_id: str, secret: str, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    response = httpx.post(f"{url}/oauth2/token", data=form, auth=(client_id, secret), timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def start_worker(
    env: dict[str, str], log: Path, *args: str, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """`iod worker` in its own process, returned once it has logged `worker.started` (a
    start costs seconds of CPU on a loaded machine: waits after it should not pay for it)."""
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "iod", "worker", *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )

    def started() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited with {worker.returncode}: see {log}")
        with log.open("rb") as handle:
            handle.seek(offset)
            return b"worker.started" in handle.read()

    wait_for(started, timeout=timeout)
    return worker
