"""Idle sockets (issue 12, item 3): 1,000+ TCP connections that send nothing no longer make
every real request fail. A served process bounds connections per client address, closes
connections without a complete request head after the header timeout, counts only requests
in progress towards its concurrency limit, and answers overload as problem+json 503 with
Retry-After. Source addresses are taken from 127.0.0.0/8 (all of it is the loopback)."""

from __future__ import annotations

import json
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for
from tests.faults.conftest import BASE, report, size

IDLE = size(1050, 3000)
HEADER_TIMEOUT = 3.0
PER_ADDRESS = 64


@pytest.fixture(autouse=True)
def enough_files() -> Iterator[None]:
    """The test holds IDLE sockets, the server as many: both need the descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE * 2 + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _serve(tmp_path: Path, **settings: str) -> tuple[Server, dict[str, str]]:
    env = base_env(
        tmp_path,
        "sqlite",
        IOD_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        IOD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        **settings,
    )
    demo = json.loads(iod(env, "demo", "--json").stdout)
    return Server(env, tmp_path / "server.log").start(), demo


def _open_idle(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """`count` connections that never send a byte, spread over `sources` in turn."""
    sockets = []
    for n in range(count):
        sock = socket.socket()
        sock.bind((sources[n % len(sources)], 0))
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def _fates(sockets: list[socket.socket], timeout: float) -> dict[str, int]:
    """Waits until the server has answered or closed each socket: counts of 'refused' (a
    problem+json 429 with Retry-After), 'closed' (closed without a word) and 'open'."""
    fates = {"refused": 0, "closed": 0, "open": 0}
    pending = {sock.fileno(): sock for sock in sockets}
    deadline = time.monotonic() + timeout
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending and time.monotonic() < deadline:
        for fd, _event in poller.poll(200):
            sock = pending.pop(fd)
            poller.unregister(fd)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                assert head.startswith(b"http/1.1 429"), data
                assert b"application/problem+json" in head and b"retry-after: 1" in head
                fates["refused"] += 1
            else:
                fates["closed"] += 1
    fates["open"] = len(pending)
    return fates


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _served_meanwhile(server: Server, demo: dict[str, str]) -> None:
    """A real client: a health check, a token and a list of its connections, all answered."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        listed = client.get(BASE, headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200, listed.text


def test_idle_sockets_from_one_address_are_bounded_and_others_still_served(
    tmp_path: Path,
) -> None:
    server, demo = _serve(tmp_path)
    try:
        started = time.monotonic()
        idle = _open_idle(server.port, IDLE, ["127.0.0.2"])
        try:
            _served_meanwhile(server, demo)
            served_after = time.monotonic() - started
            fates = _fates(idle, timeout=HEADER_TIMEOUT + 15)
        finally:
            _close(idle)
        # One address holds at most PER_ADDRESS; the rest were refused at once, and the ones
        # held were closed when their header timeout ran out.
        assert fates["open"] == 0, fates
        assert fates["refused"] >= IDLE - 2 * PER_ADDRESS, fates
        assert fates["closed"] >= PER_ADDRESS, fates
        report("idle_sockets_one_address", idle=IDLE, served_after_s=round(served_after, 2),
               **fates)  # fmt: skip
    finally:
        server.stop()


def test_idle_sockets_from_many_addresses_do_not_block_requests_and_are_closed(
    tmp_path: Path,
) -> None:
    server, demo = _serve(tmp_path)
    sources = [f"127.0.1.{n}" for n in range(1, IDLE // (PER_ADDRESS // 2) + 2)]
    try:
        idle = _open_idle(server.port, IDLE, sources)  # under the per-address bound each
        try:
            time.sleep(0.5)  # accepted by the server, all of them
            started = time.monotonic()
            _served_meanwhile(server, demo)
            answered_in = time.monotonic() - started
            fates = _fates(idle, timeout=HEADER_TIMEOUT + 15)
        finally:
            _close(idle)
        assert fates == {"refused": 0, "closed": IDLE, "open": 0}
        report("idle_sockets_many_addresses", idle=IDLE, addresses=len(sources),
               answered_in_s=round(answered_in, 3))  # fmt: skip
    finally:
        server.stop()


def _post_head(token: str, length: int) -> bytes:
    return (
        f"POST {BASE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _refused(url: str) -> httpx.Response | None:
    answer = httpx.get(f"{url}/healthz", timeout=10)
    return answer if answer.status_code == 503 else None


def test_overload_is_problem_json_503_with_retry_after(tmp_path: Path) -> None:
    # The body timeout far above the waits below: only the clients' closing ends the two
    # requests in progress in time.
    server, demo = _serve(
        tmp_path, IOD_HTTP_MAX_CONCURRENCY="2", IOD_HTTP_BODY_TIMEOUT_SECONDS="120"
    )
    try:
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        # Two requests in progress: their bodies never come.
        busy = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(_post_head(token, 100))
            # Once the server has both requests in progress (a loaded machine takes a while).
            refused = wait_for(lambda: _refused(server.url), timeout=30)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["type"] == "/problems/service-unavailable"
        finally:
            _close(busy)
        # Served again once the server has seen them closed.
        wait_for(
            lambda: httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200, timeout=30
        )
    finally:
        server.stop()


def test_authentication_failures_are_answered_before_the_body(tmp_path: Path) -> None:
    server, _ = _serve(tmp_path, IOD_HTTP_BODY_TIMEOUT_SECONDS="20")
    try:
        for token in ("not-a-token", ""):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                head = _post_head(token, 60_000)
                if not token:
                    head = head.replace(b"Authorization: Bearer \r\n", b"")
                started = time.monotonic()
                sock.sendall(head)  # and not a byte of the announced body
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                elapsed = time.monotonic() - started
            head_part, _, body = answer.partition(b"\r\n\r\n")
            assert head_part.startswith(b"HTTP/1.1 401"), answer
            assert b"connection: close" in head_part.lower()
            assert b"www-authenticate: bearer" in head_part.lower()
            assert json.loads(body)["status"] == 401
            assert elapsed < 5, elapsed  # not the 20 s body timeout
    finally:
        server.stop()
