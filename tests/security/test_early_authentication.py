"""API4: a request with a body and no valid token is answered 401 before its body is read,
so nobody without a token makes the server wait for or buffer a body (issue 12, item 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

BASE = "/internet-on-demand/connections"


def _call(
    api: TestClient, headers: list[tuple[bytes, bytes]], timeout: float = 10
) -> tuple[list[Any], int]:
    """Runs a POST whose body never arrives; returns what was sent and how often the
    application asked for the body."""
    asked = 0
    sent: list[Any] = []

    async def receive() -> Any:
        nonlocal asked
        asked += 1
        await asyncio.sleep(30)  # the body never comes

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": BASE, "raw_path": BASE.encode(), "query_string": b"",
        "root_path": "", "client": ("198.51.100.1", 5555), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"60000"),
                    *headers],
        "state": {},
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(api.app(scope, receive, send), timeout))
    return sent, asked


@pytest.mark.parametrize(
    "authorization",
    [None, b"Basic abc", b"Bearer not-a-token", b"Bearer eyJhbGciOiJub25lIn0.e30."],
    ids=["none", "basic", "garbage", "alg-none"],
)
def test_a_body_without_a_valid_token_is_refused_before_it_is_read(
    api: TestClient, authorization: bytes | None
) -> None:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    sent, asked = _call(api, headers)
    assert asked == 0
    start = sent[0]
    assert start["status"] == 401
    names = dict(start["headers"])
    assert names[b"content-type"] == b"application/problem+json"
    assert names[b"www-authenticate"].startswith(b"Bearer")
    assert names[b"connection"] == b"close"  # the unread body must not be taken as a request


def test_a_valid_token_goes_on_to_read_the_body(api: TestClient, headers: dict[str, str]) -> None:
    with pytest.raises(TimeoutError):  # it waits for the body, as it should
        _call(api, [(b"authorization", headers["Authorization"].encode())], timeout=1)
