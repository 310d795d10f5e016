"""API4 Unrestricted Resource Consumption: inputs too large or too slow are refused with
their documented status (problem+json), and nothing is stored.

| input | limit (setting) | answer |
|---|---|---|
| request body | 64 KiB (IOD_MAX_BODY_BYTES) | 413 /problems/payload-too-large |
| page size `limit` | 1000 | 400 /problems/validation-error |
| pending changes of a connection | 100 (IOD_MAX_PENDING_CHANGES) | 409 too-many-pending-changes |
| description | 255 characters | 400 |
| Idempotency-Key | 255 characters | 400 |
| request line and headers | 16 KiB (IOD_HTTP_MAX_HEADER_BYTES) | 431 /problems/headers-too-large |
| headers arriving slowly | 5 s (IOD_HTTP_HEADER_TIMEOUT_SECONDS) | 408 /problems/request-timeout |
| body arriving slowly | 30 s (IOD_HTTP_BODY_TIMEOUT_SECONDS) | 408 /problems/request-timeout |
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iod.infra.config import Settings
from tests.e2e.conftest import Server, base_env, iod, token_for
from tests.security.conftest import BASE, LOC, World, assert_problem, snapshot

MAX_BODY = Settings.model_fields["max_body_bytes"].default


def padded(size: int, **fields: Any) -> bytes:
    body = {**fields, "padding": ""}
    body["padding"] = "x" * (size - len(json.dumps(body).encode()))
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(world: World, chunked: bool) -> None:
    data = padded(MAX_BODY + 1, bandwidth="100 Mbps", locationId=LOC)
    content: Any = (
        iter([data[i : i + 4096] for i in range(0, len(data), 4096)]) if chunked else data
    )
    before = snapshot(world.services)
    response = world.api.post(
        BASE, content=content, headers={**world.acme_headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")
    assert snapshot(world.services) == before


def test_page_size_over_1000_is_400(world: World) -> None:
    assert_problem(world.api.get(BASE, params={"limit": 1001}, headers=world.acme_headers), 400)
    assert world.api.get(BASE, params={"limit": 1000}, headers=world.acme_headers).is_success


def test_too_many_pending_changes_is_409(world: World, limited: Any) -> None:
    app = limited(max_pending_changes=3, rate_limit_writes_per_second=0)
    url = f"{BASE}/{world.connection_id}/bandwidth"  # one change already pending
    later = "2030-03-01T00:00:00Z"
    for bandwidth in ("200 Mbps", "500 Mbps"):
        body = {"bandwidth": bandwidth, "effectiveDate": later}
        assert app.api.put(url, json=body, headers=world.acme_headers).status_code == 200
    before = snapshot(app.services)
    refused = app.api.put(
        url, json={"bandwidth": "1 Gbps", "effectiveDate": later}, headers=world.acme_headers
    )
    assert_problem(refused, 409, "too-many-pending-changes")
    assert snapshot(app.services) == before
    # Cancelling one makes room again; a boost needs two places.
    change_id = world.change_id
    cancel = app.api.post(f"{url}-changes/{change_id}/cancel", headers=world.acme_headers)
    assert cancel.status_code == 200, cancel.text
    boost = {"bandwidth": "1 Gbps", "effectiveDate": later, "revertAt": "2030-03-02T00:00:00Z"}
    assert_problem(app.api.put(url, json=boost, headers=world.acme_headers), 409)
    assert app.api.put(url, json={"bandwidth": "1 Gbps"}, headers=world.acme_headers).is_success


def test_long_description_is_400(world: World) -> None:
    before = snapshot(world.services)
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "description": "x" * 60_000}
    assert_problem(world.api.post(BASE, json=body, headers=world.acme_headers), 400)
    assert snapshot(world.services) == before


def test_long_idempotency_key_is_400(world: World) -> None:
    before = snapshot(world.services)
    headers = {**world.acme_headers, "Idempotency-Key": "k" * 256}
    body = {"bandwidth": "100 Mbps", "locationId": LOC}
    assert_problem(world.api.post(BASE, json=body, headers=headers), 400)
    assert snapshot(world.services) == before


# --- a served process: what uvicorn and iod/server.py guard ----------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("slow")
    env = base_env(
        tmp,
        "sqlite",
        IOD_HTTP_HEADER_TIMEOUT_SECONDS="1",
        IOD_HTTP_BODY_TIMEOUT_SECONDS="1",
        IOD_HTTP_MAX_HEADER_BYTES="8192",
    )
    demo = json.loads(iod(env, "demo", "--json").stdout)
    server = Server(env, tmp / "server.log").start()
    try:
        yield server, token_for(server.url, demo["client_id"], demo["client_secret"])
    finally:
        server.stop()


def exchange(server: Server, *parts: bytes, pause: float = 0.0, timeout: float = 20) -> bytes:
    """Sends `parts` (pausing between them) on one connection; returns all it answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        for n, part in enumerate(parts):
            if n and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:
                break  # the server closed it already
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def problem_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower(), head
    return status, json.loads(body)


@pytest.mark.e2e
def test_oversized_headers_are_431(served: tuple[Server, str], tmp_path: Path) -> None:
    server, token = served
    request = (
        f"GET {BASE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"X-Padding: {'a' * 10_000}\r\n\r\n"
    ).encode()
    status, body = problem_of(exchange(server, request))
    assert status == 431 and body["type"] == "/problems/headers-too-large"
    # Slowly, in pieces, the same: the partial header is not buffered without bound.
    pieces = [b"GET / HTTP/1.1\r\nX-Padding: "] + [b"a" * 4096] * 4
    status, _ = problem_of(exchange(server, *pieces, pause=0.05))
    assert status == 431


@pytest.mark.e2e
def test_a_request_the_http_parser_refuses_is_a_400_problem(served: tuple[Server, str]) -> None:
    """A DEL in a header value, or a broken request line: not uvicorn's plain text."""
    server, _ = served
    for request in (
        f"PUT {BASE}/x/bandwidth HTTP/1.1\r\nHost: x\r\nIf-Match: \x7f\x7f\r\n\r\n".encode(),
        b"GET / HTTP/9\r\n\r\n",
    ):
        status, body = problem_of(exchange(server, request))
        assert status == 400 and body["type"] == "/problems/bad-request", body
        assert body["detail"].startswith("the request is not valid HTTP/1.1")


@pytest.mark.e2e
def test_headers_sent_too_slowly_are_408(served: tuple[Server, str]) -> None:
    """Slowloris: a request whose headers never end is answered and closed."""
    server, _ = served
    started = time.monotonic()
    status, body = problem_of(exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"))
    assert status == 408 and body["type"] == "/problems/request-timeout"
    assert time.monotonic() - started < 15  # the timeout is 1 s; generous bound
    # A connection that never sends a byte is closed too.
    assert exchange(server) == b""


@pytest.mark.e2e
def test_body_sent_too_slowly_is_408(served: tuple[Server, str]) -> None:
    server, token = served
    body = json.dumps({"bandwidth": "100 Mbps", "locationId": LOC}).encode()
    head = (
        f"POST {BASE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = exchange(server, head + body[:5], body[5:], pause=3)
    status, problem = problem_of(answer)
    assert status == 408 and problem["type"] == "/problems/request-timeout"
    listed = exchange(
        server,
        f"GET {BASE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert b'"connections":[]' in listed  # nothing was ordered
