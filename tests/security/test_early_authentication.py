"""API4: a request with a body and no valid token is answered 401 before its body is read,
so nobody without a token makes the server wait for or buffer a body (issue 12, item 3)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.auth.tokens import Principal
from iod.infra.clock import FrozenClock

BASE = "/internet-on-demand/connections"


def _post(headers: list[tuple[bytes, bytes]], length: bytes) -> dict[str, Any]:
    """The ASGI scope of a JSON POST to the connections, of that Content-Length."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": BASE, "raw_path": BASE.encode(), "query_string": b"",
        "root_path": "", "client": ("198.51.100.1", 5555), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", length),
                    *headers],
        "state": {},
    }  # fmt: skip


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

    scope = _post(headers, b"60000")
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


ORDER = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}


def _counted_checks(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens `services.tokens.verify` is asked about, in order."""
    asked: list[str] = []
    verify = services.tokens.verify

    def counted(token: str) -> Principal:
        asked.append(token)
        return verify(token)

    monkeypatch.setattr(services.tokens, "verify", counted)
    return asked


@pytest.mark.parametrize("fast", [True, False], ids=["fast-layer", "route"])
def test_a_write_with_a_body_checks_its_token_once(
    api: TestClient,
    services: Services,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    fast: bool,
) -> None:
    # An Idempotency-Key the fast layer refuses (too long) sends the request to the route.
    extra = {} if fast else {"Idempotency-Key": "k" * 300}
    asked = _counted_checks(services, monkeypatch)
    made = api.post(BASE, json=ORDER, headers={**headers, **extra})
    assert made.status_code == (201 if fast else 400), made.text
    assert len(asked) == 1  # by the middleware, before the body was read


def test_a_write_without_a_body_checks_its_token_as_it_arrives(
    api: TestClient, services: Services, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _counted_checks(services, monkeypatch)
    assert api.get(BASE, headers=headers).status_code == 200
    assert len(asked) == 1  # no early check: the route's


def test_a_token_that_expires_while_its_body_arrives_is_refused(
    api: TestClient, services: Services, clock: FrozenClock, headers: dict[str, str]
) -> None:
    body = json.dumps(ORDER).encode()
    asked = 0

    async def receive() -> Any:
        nonlocal asked
        asked += 1
        if asked == 1:  # the token is checked before this: it expires while the body comes
            clock.advance(timedelta(seconds=services.settings.token_ttl + 1))
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(30)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    authorization = (b"authorization", headers["Authorization"].encode())
    scope = _post([authorization], str(len(body)).encode())
    asyncio.run(asyncio.wait_for(api.app(scope, receive, send), 10))
    assert asked >= 1
    assert sent[0]["status"] == 401
    assert b"expired" in b"".join(m.get("body", b"") for m in sent[1:])
