"""The data plane for real: network namespaces, veth pairs and HTB, as root.

Each test gets a driver with a prefix of its own (`t` + 4 hex digits), and a finaliser that
removes every namespace with that prefix, killing what runs inside first, whether the test
passed or failed. CI (IOD_REQUIRE_DATAPLANE=1) fails where a laptop would skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network

import pytest

from iod.domain.addressing import gateway
from iod.network.base import ConnectionSpec
from iod.network.linux.driver import LinuxDriver

REQUIRE = os.environ.get("IOD_REQUIRE_DATAPLANE") == "1"
TEST_PREFIX = re.compile(r"^t[0-9a-f]{4}-")

pytestmark = pytest.mark.dataplane


def _unavailable() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "data-plane tests need root (network namespaces, veth, tc)"
    probe = f"iodprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def require_dataplane() -> None:
    reason = _unavailable()
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"IOD_REQUIRE_DATAPLANE=1 but {reason}")
        pytest.skip(reason)


def require_iperf3() -> None:
    if shutil.which("iperf3") is None:
        if REQUIRE:
            pytest.fail("IOD_REQUIRE_DATAPLANE=1 but iperf3 is not installed")
        pytest.skip("throughput tests need iperf3 (Debian package iperf3)")


def remove_namespaces(match: re.Pattern[str] | str) -> None:
    """Remove matching namespaces, killing their processes first (a process would keep a
    namespace, and its links, alive after the name is gone)."""
    names = sorted(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else []
    for name in names:
        hit = match.match(name) if isinstance(match, re.Pattern) else name.startswith(match)
        if not hit:
            continue
        pids = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> Iterator[None]:
    """Namespaces of an earlier run that was killed before its finalisers ran."""
    if _unavailable() is None:
        remove_namespaces(TEST_PREFIX)
    yield


@pytest.fixture
def prefix() -> Iterator[str]:
    require_dataplane()
    name = f"t{secrets.token_hex(2)}"
    yield name
    remove_namespaces(f"{name}-")


@pytest.fixture
def netdriver(prefix: str) -> Iterator[LinuxDriver]:
    driver = LinuxDriver(prefix=prefix)
    yield driver
    driver.close()


def wait_listening(
    namespace: str, port: int, server: subprocess.Popen[bytes], timeout: float = 15
) -> None:
    """Returns once a TCP server listens on `port` in `namespace` (an iperf3 -s just started:
    a client that came first was refused); fails if `server` exits first or at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"the server exited with {server.returncode}"
        listening = subprocess.run(
            ["ip", "netns", "exec", namespace, "ss", "-Hltn", f"sport = :{port}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if listening.strip():
            return
        assert time.monotonic() < deadline, f"nothing listens on {port} in {namespace}"
        time.sleep(0.05)


@dataclass
class Measured:
    goodput_mbps: float
    wire_mbps: float


def namespaces_of(driver: LinuxDriver, spec: ConnectionSpec) -> tuple[str, str]:
    return driver.edge_namespace(spec.location_id), driver.customer_namespace(spec.connection_id)


def class_bytes(driver: LinuxDriver, spec: ConnectionSpec, download: bool) -> int:
    port = driver.port(spec)
    assert port is not None and port.down is not None and port.up is not None
    return (port.down if download else port.up).sent_bytes


class Iperf:
    """iperf3 between a connection's edge (server, on the gateway) and its customer side."""

    def __init__(self, driver: LinuxDriver, spec: ConnectionSpec, port: int = 5201) -> None:
        self.edge, self.customer = namespaces_of(driver, spec)
        self.gateway = str(gateway(IPv4Network(spec.ipv4_block or "")))
        self.port = port
        self.server: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Iperf:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.edge, "iperf3", "-s", "-B", self.gateway,
             "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_listening(self.edge, self.port, self.server)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()

    def client(self, seconds: float, *, download: bool, extra: tuple[str, ...] = ()) -> list[str]:
        args = ["ip", "netns", "exec", self.customer, "iperf3", "-c", self.gateway,
                "-p", str(self.port), "-t", str(seconds), "-J", *extra]  # fmt: skip
        return [*args, "-R"] if download else args

    def run(self, seconds: float, *, download: bool, extra: tuple[str, ...] = ()) -> dict:  # type: ignore[type-arg]
        done = subprocess.run(
            self.client(seconds, download=download, extra=extra),
            capture_output=True, text=True, timeout=seconds + 30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return json.loads(done.stdout)  # type: ignore[no-any-return]
