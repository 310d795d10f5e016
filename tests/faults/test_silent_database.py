"""A PostgreSQL server that silently stops answering on an open connection (a cable pulled,
a firewall dropping packets, a host frozen): a pooled connection gives up within the
engine's `tcp_timeout` (`IOD_DATABASE_TCP_TIMEOUT`) and the error is one the service
answers 503, instead of waiting out the kernel's retransmissions (about 15 minutes on
Linux, during which a request, or the event loop on a cached read, is held).

The client runs in a network namespace of the test's own and reaches PostgreSQL through a
relay on the root side of a veth pair; taking the root side's link down drops the client's
packets without a reset, as a dead network does. Needs root, as the data-plane tests do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import postgres_url
from tests.dataplane.conftest import require_dataplane

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
NS = f"iodsilent{os.getpid() % 100000}"
HOST_SIDE, NS_SIDE = f"sil{os.getpid() % 100000}h", "sil0"
HOST_ADDRESS, NS_ADDRESS = "10.231.0.1", "10.231.0.2"

CLIENT = """
import sys, time
from sqlalchemy import text
from iod.infra.db import is_unavailable, make_engine

engine = make_engine(sys.argv[1], tcp_timeout=float(sys.argv[2]), connect_timeout=2,
                     pool_size=1, max_overflow=0)
with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
try:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    print("answered", flush=True)
except Exception as error:
    print(f"failed unavailable={is_unavailable(error)} after={time.monotonic() - started:.1f}",
          flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Relay(threading.Thread):
    """TCP from HOST_ADDRESS:port to PostgreSQL, both ways, a thread per direction."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.server = socket.create_server((HOST_ADDRESS, 0))
        self.port = self.server.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


@pytest.fixture
def namespace() -> Iterator[str]:
    require_dataplane()
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", HOST_SIDE, "type", "veth", "peer", "name", NS_SIDE, "netns", NS)
        _ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_SIDE)
        _ip("link", "set", HOST_SIDE, "up")
        _ip("-n", NS, "addr", "add", f"{NS_ADDRESS}/30", "dev", NS_SIDE)
        _ip("-n", NS, "link", "set", NS_SIDE, "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", HOST_SIDE], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)


def test_a_silent_server_is_given_up_within_the_tcp_timeout(namespace: str) -> None:
    url = make_url(postgres_url())
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relay.start()
    through_relay = url.set(host=HOST_ADDRESS, port=relay.port)
    client = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", CLIENT,
         through_relay.render_as_string(hide_password=False), "3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "ready", client.stderr.read()  # type: ignore[union-attr]
        _ip("link", "set", HOST_SIDE, "down")  # the client's packets now go nowhere, no reset
        started = time.monotonic()
        client.stdin.write("go\n")
        client.stdin.flush()
        # 3 s of tcp_timeout for the pre-ping, then 2 s of connect_timeout for the new
        # connection the pool tries; without the TCP options this waits ~15 minutes.
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
        relay.server.close()
    waited = time.monotonic() - started
    assert out.strip().startswith("failed unavailable=True"), (out, err)
    assert waited < 45, waited
