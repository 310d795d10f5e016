"""The SDK against a scripted API (httpx.MockTransport): retries, keys, tokens, pages, waits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from iod.client import (
    AsyncClient,
    ChangeNotApplied,
    Client,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    WaitFailed,
    WaitTimeout,
)
from iod.client._common import poll_delays
from iod.client.retry import parse_retry_after

URL = "http://iod.test"
CONNECTIONS = "/internet-on-demand/connections"
RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def connection(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "con_1",
        "status": "active",
        "bandwidth": "100 Mbps",
        "location": "PL1",
        "createdAt": "2030-01-01T00:00:00Z",
        "updatedAt": "2030-01-01T00:00:00Z",
        "pendingBandwidthChanges": [],
        "someFutureField": {"kept": True},
    }
    body.update(fields)
    return body


def problem(status: int, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "/problems/x", "title": "T", "status": status, "detail": detail, **extra}
    return httpx.Response(
        status, json=body, headers={"Content-Type": "application/problem+json", **{}}
    )


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Answers the token endpoint itself; API requests get the queued replies in turn (the
    last one repeats)."""

    def __init__(self, *replies: Reply, expires_in: int = 3600) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.authorizations: list[str] = []
        self.tokens = 0
        self.token_replies: list[httpx.Response] = []
        self.expires_in = expires_in
        self.revoked: set[str] = set()
        self.streams = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            if self.token_replies:
                return self.token_replies.pop(0)
            self.tokens += 1
            assert request.headers["Authorization"].startswith("Basic ")
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok{self.tokens}",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "scope": "read write",
                },
            )
        if request.url.path == "/internet-on-demand/events/stream":
            # A server without the event stream: the waits poll (the stream's tests are in
            # tests/client/test_sdk_events.py).
            self.streams += 1
            return problem(404, "no such path")
        self.requests.append(request)
        self.authorizations.append(request.headers.get("Authorization", ""))
        token = self.authorizations[-1].removeprefix("Bearer ")
        if token in self.revoked:
            return problem(401, "the access token expired")
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("retry", RETRY)
        made = Client(URL, "me", "s3cret:&+", transport=httpx.MockTransport(self), **kwargs)
        made._sleep = self.sleeps.append
        return made

    @property
    def sleeps(self) -> list[float]:
        if not hasattr(self, "_sleeps"):
            self._sleeps: list[float] = []
        return self._sleeps


def created() -> httpx.Response:
    return httpx.Response(201, json=connection(status="provisioning"))


def test_post_is_retried_on_503_with_one_idempotency_key_per_call() -> None:
    unavailable = httpx.Response(503, headers={"Retry-After": "0"})
    api = FakeApi(unavailable, unavailable, created(), created())
    with api.client() as client:
        first = client.create_connection("PL1", "100 Mbps", "office")
        second = client.create_connection("PL1", "100 Mbps")
    assert first.status == "provisioning" and second.id == "con_1"
    keys = [r.headers.get("Idempotency-Key") for r in api.requests]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] != keys[3]
    assert all(uuid.UUID(str(k)).version == 4 for k in keys)
    assert json.loads(api.requests[0].content) == {
        "locationId": "PL1",
        "bandwidth": "100 Mbps",
        "description": "office",
    }
    assert json.loads(api.requests[3].content) == {"locationId": "PL1", "bandwidth": "100 Mbps"}
    assert len(api.sleeps) == 2 and all(0 <= s <= 0.05 for s in api.sleeps)


def test_put_carries_a_key_and_get_does_not() -> None:
    change = {
        "id": "chg_1",
        "bandwidth": "1 Gbps",
        "effectiveDate": "2030-01-01T00:00:00Z",
        "status": "scheduled",
        "requestedAt": "2030-01-01T00:00:00Z",
    }
    api = FakeApi(
        httpx.Response(200, json=connection()),
        httpx.Response(200, json=connection(change=change)),
    )
    with api.client() as client:
        client.get_connection("con_1")
        when = datetime(2030, 1, 1, 9, tzinfo=UTC)
        result = client.update_bandwidth("con/1", "1Gbps", effective_date=when)
        with pytest.raises(ValueError, match="time zone"):
            client.update_bandwidth("con_1", "1 Gbps", datetime(2030, 1, 1))
    get, put = api.requests
    assert "Idempotency-Key" not in get.headers
    assert put.headers["Idempotency-Key"]
    assert put.url.raw_path == f"{CONNECTIONS}/con%2F1/bandwidth".encode()
    assert json.loads(put.content) == {
        "bandwidth": "1Gbps",
        "effectiveDate": "2030-01-01T09:00:00+00:00",
    }
    assert result.change.id == "chg_1" and result.change.status == "scheduled"


def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for() -> None:
    api = FakeApi(
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(200, json=connection()),
    )
    with api.client() as client:
        client.get_connection("con_1")
    assert api.sleeps == [3.0]

    api = FakeApi(httpx.Response(429, headers={"Retry-After": "3600"}))
    with api.client() as client, pytest.raises(RateLimited) as caught:
        client.get_connection("con_1")
    assert len(api.requests) == 1 and caught.value.retry_after == 3600


def test_retries_end_with_the_typed_error() -> None:
    api = FakeApi(problem(503, "database unreachable", requestId="r-1"))
    with api.client() as client, pytest.raises(ServiceUnavailable) as caught:
        client.get_connection("con_1")
    assert len(api.requests) == RETRY.attempts
    assert isinstance(caught.value, ServerError) and caught.value.request_id == "r-1"
    assert caught.value.detail == "database unreachable"


def test_connection_errors_are_retried_then_raised_as_transport_error() -> None:
    refused = httpx.ConnectError("connection refused")
    api = FakeApi(refused, httpx.RemoteProtocolError("dropped"), created())
    with api.client() as client:
        assert client.create_connection("PL1", "100 Mbps").id == "con_1"
    keys = {r.headers["Idempotency-Key"] for r in api.requests}
    assert len(api.requests) == 3 and len(keys) == 1

    api = FakeApi(refused)
    with api.client() as client, pytest.raises(TransportError) as caught:
        client.get_connection("con_1")
    assert caught.value.attempts == RETRY.attempts
    assert "cannot reach http://iod.test: connection refused" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            problem(
                400,
                "/bandwidth: bad",
                errors=[{"pointer": "/bandwidth", "detail": "bad"}],
                requestId="req-9",
            ),
            InvalidRequest,
        ),
        (problem(404, "no connection 'x'"), NotFound),
        (problem(409, "capacity"), Conflict),
        (httpx.Response(500, text="<html>oops</html>"), ServerError),
    ],
)
def test_other_errors_are_not_retried(reply: httpx.Response, error: type[Exception]) -> None:
    api = FakeApi(reply)
    with api.client() as client, pytest.raises(error) as caught:
        client.get_connection("x")
    assert len(api.requests) == 1
    if isinstance(caught.value, InvalidRequest):
        assert caught.value.errors[0].pointer == "/bandwidth"
        assert caught.value.request_id == "req-9" and caught.value.type == "/problems/x"
    if isinstance(caught.value, ServerError):
        assert str(caught.value) == f"HTTP 500 Internal Server Error from GET {URL}{CONNECTIONS}/x"


def test_a_token_is_reused_and_fetched_again_once_on_401() -> None:
    api = FakeApi(httpx.Response(200, json=connection()))
    with api.client() as client:
        client.get_connection("con_1")
        client.get_connection("con_1")
        assert api.tokens == 1 and client.auth.token_requests == 1
        api.revoked.add("tok1")  # e.g. the server's keys were rotated
        client.get_connection("con_1")
        assert api.tokens == 2
        assert api.authorizations == [
            "Bearer tok1", "Bearer tok1", "Bearer tok1", "Bearer tok2"
        ]  # fmt: skip
        api.revoked.update({"tok2", "tok3"})  # a second 401 is the caller's
        with pytest.raises(Unauthorized, match="expired"):
            client.get_connection("con_1")
        assert api.tokens == 3


def test_a_token_is_renewed_shortly_before_it_expires() -> None:
    now = [1000.0]
    api = FakeApi(httpx.Response(200, json=connection()), expires_in=10)
    with api.client() as client:
        client.auth._clock = lambda: now[0]
        client.get_connection("con_1")
        now[0] += 7.9  # a fifth of the lifetime is the margin: renewed after 8 s
        client.get_connection("con_1")
        assert api.tokens == 1
        now[0] += 0.2
        client.get_connection("con_1")
        assert api.tokens == 2


def test_token_endpoint_errors() -> None:
    api = FakeApi(httpx.Response(200, json=connection()))
    api.token_replies = [
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(401, json={"error": "invalid_client", "error_description": "wrong"}),
    ]
    with api.client() as client, pytest.raises(Unauthorized) as caught:
        client.get_connection("con_1")
    assert caught.value.oauth_error == "invalid_client" and caught.value.detail == "wrong"
    assert api.requests == []

    api.token_replies = [httpx.Response(503)]
    with api.client() as client:
        assert client.authenticate().scope == "read write"
        assert client.get_connection("con_1").id == "con_1"
    assert api.tokens == 1  # authenticate() cached the token


def test_list_follows_next_cursor() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        nxt = {None: "c1", "c1": "c2", "c2": None}[cursor]
        body: dict[str, Any] = {"connections": [connection(id=f"con_{cursor}")]}
        if nxt:
            body["nextCursor"] = nxt
        return httpx.Response(200, json=body)

    api = FakeApi(page)
    with api.client() as client:
        ids = [c.id for c in client.list_connections(page_size=1)]
    assert ids == ["con_None", "con_c1", "con_c2"]
    assert [r.url.params.get("limit") for r in api.requests] == ["1", "1", "1"]

    api = FakeApi(httpx.Response(200, json={"connections": [connection()]}))
    with api.client() as client:
        assert [c.id for c in client.list_connections()] == ["con_1"]
    assert "limit" not in api.requests[0].url.params

    api = FakeApi(httpx.Response(200, json={"connections": [], "nextCursor": "same"}))
    with api.client() as client, pytest.raises(UnexpectedResponse, match="twice"):
        list(client.list_connections())


def test_change_list_follows_next_cursor() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        nxt = {None: "chg_a", "chg_a": "chg_b", "chg_b": None}[cursor]
        change = {"id": nxt or "chg_c", "bandwidth": "100 Mbps", "status": "applied",
                  "effectiveDate": "2030-01-01T00:00:00Z"}  # fmt: skip
        body: dict[str, Any] = {"bandwidthChanges": [change]}
        if nxt:
            body["nextCursor"] = nxt
        return httpx.Response(200, json=body)

    api = FakeApi(page)
    with api.client() as client:
        ids = [c.id for c in client.list_bandwidth_changes("con_1")]
    assert ids == ["chg_a", "chg_b", "chg_c"]
    assert [r.url.params.get("cursor") for r in api.requests] == [None, "chg_a", "chg_b"]

    async def listed() -> list[str]:
        transport = httpx.MockTransport(FakeApi(page))
        async with AsyncClient(URL, "me", "pw", transport=transport) as client:
            return [c.id for c in await client.list_bandwidth_changes("con_1")]

    assert asyncio.run(listed()) == ["chg_a", "chg_b", "chg_c"]

    api = FakeApi(httpx.Response(200, json={"bandwidthChanges": [], "nextCursor": "same"}))
    with api.client() as client, pytest.raises(UnexpectedResponse, match="twice"):
        client.list_bandwidth_changes("con_1")


def fake_time(client: Client) -> list[float]:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client._sleep = sleep
    client._clock = lambda: now[0]
    return slept


def test_wait_until_polls_with_short_backoff() -> None:
    api = FakeApi(
        *[httpx.Response(200, json=connection(status="provisioning"))] * 3,
        httpx.Response(200, json=connection()),
    )
    seen: list[str] = []
    with api.client() as client:
        slept = fake_time(client)
        result = client.wait_until("con_1", on_poll=lambda c: seen.append(c.status))
    assert result.status == "active" and seen == ["provisioning"] * 3 + ["active"]
    assert slept == pytest.approx([0.2, 0.3, 0.45])
    assert api.streams == 1  # the stream was tried first: unavailable (404), so it polled
    delays = poll_delays()
    assert max(next(delays) for _ in range(50)) == 2.0


def test_wait_until_fails_on_termination_and_times_out() -> None:
    api = FakeApi(httpx.Response(200, json=connection(status="terminated")))
    with api.client() as client, pytest.raises(WaitFailed, match="terminated"):
        client.wait_until("con_1", "active")

    api = FakeApi(httpx.Response(200, json=connection(status="provisioning")))
    with api.client() as client:
        slept = fake_time(client)
        with pytest.raises(WaitTimeout) as caught:
            client.wait_until("con_1", timeout=10)
    assert sum(slept) == pytest.approx(10) and max(slept) == 2.0
    assert caught.value.connection is not None and "provisioning" in str(caught.value)


def test_waiting_for_a_change() -> None:
    pending = {
        "id": "chg_1",
        "bandwidth": "1 Gbps",
        "status": "applying",
        "effectiveDate": "2030-01-01T00:00:00Z",
    }
    api = FakeApi(
        httpx.Response(200, json=connection(pendingBandwidthChanges=[pending])),
        httpx.Response(200, json=connection(bandwidth="1 Gbps")),
    )
    with api.client() as client:
        fake_time(client)
        assert client.wait_for_change("con_1", "chg_1", "1 Gbps").bandwidth == "1 Gbps"

    api = FakeApi(httpx.Response(200, json=connection(bandwidth="100 Mbps")))
    with api.client() as client, pytest.raises(ChangeNotApplied, match="no longer pending"):
        client.wait_for_change("con_1", "chg_1", "1 Gbps")


def test_waiting_for_a_scheduled_change_sleeps_until_its_time() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=90)
    pending = {
        "id": "chg_1",
        "bandwidth": "1 Gbps",
        "status": "scheduled",
        "effectiveDate": soon.isoformat(),
    }
    api = FakeApi(
        *[httpx.Response(200, json=connection(pendingBandwidthChanges=[pending]))] * 3,
        httpx.Response(200, json=connection(bandwidth="1 Gbps")),
    )
    with api.client() as client:
        slept = fake_time(client)
        client.wait_for_change("con_1", "chg_1", "1 Gbps", effective_date=soon)
    assert slept[0] == 60 and 29 < slept[1] <= 30 and slept[2] == pytest.approx(0.2)


def test_configuration_from_arguments_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOD_URL", "IOD_CLIENT_ID", "IOD_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="IOD_URL, IOD_CLIENT_ID, IOD_CLIENT_SECRET"):
        Client()
    monkeypatch.setenv("IOD_URL", "http://env.test/")
    monkeypatch.setenv("IOD_CLIENT_ID", "env-id")
    monkeypatch.setenv("IOD_CLIENT_SECRET", "env-secret")
    with Client() as client:
        assert client.url == "http://env.test" and client.client_id == "env-id"
    with Client("https://arg.test", "arg-id") as client:
        assert client.url == "https://arg.test" and client.client_id == "arg-id"
    assert "env-secret" not in repr(client) + repr(client.auth)
    with pytest.raises(ConfigurationError, match="must look like"):
        Client("iod.example.com")


def test_models_keep_fields_the_server_adds() -> None:
    api = FakeApi(httpx.Response(200, json=connection()))
    with api.client() as client:
        got = client.get_connection("con_1")
    assert got.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert got.to_json()["someFutureField"] == {"kept": True}
    assert got.to_json()["pendingBandwidthChanges"] == []


def test_retry_after_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5
    assert parse_retry_after("7") == 7 and parse_retry_after("soon") is None
    assert RetryPolicy(attempts=2).delay(2, None) is None


def test_async_client_retries_with_one_key_and_follows_pages() -> None:
    unavailable = httpx.Response(503, headers={"Retry-After": "0"})
    api = FakeApi(
        unavailable,
        httpx.ConnectError("refused"),
        created(),
        httpx.Response(200, json=connection()),
        httpx.Response(200, json={"connections": [connection()], "nextCursor": "c1"}),
        httpx.Response(200, json={"connections": [connection(id="con_2")]}),
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> tuple[str, list[str], str]:
        async with AsyncClient(
            URL, "me", "pw", transport=httpx.MockTransport(api), retry=RETRY
        ) as client:
            client._sleep = sleep
            made = await client.create_connection("PL1", "100 Mbps", wait=True)
            ids = [c.id async for c in client.list_connections()]
            return made.status, ids, (await client.authenticate()).scope

    status, ids, scope = asyncio.run(scenario())
    assert status == "active" and ids == ["con_1", "con_2"] and scope == "read write"
    posts = [r for r in api.requests if r.method == "POST"]
    assert len(posts) == 3 and len({r.headers["Idempotency-Key"] for r in posts}) == 1
    assert len(slept) == 2


def test_the_sdk_imports_no_server_code() -> None:
    code = (
        "import sys, iod.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('iod', 'fastapi', 'sqlalchemy', 'starlette', 'alembic')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = eval(result.stdout)
    assert all(m == "iod" or m.startswith("iod.client") for m in loaded), loaded


def test_events_on_open_before_polling_when_the_stream_is_unavailable() -> None:
    order: list[str] = []

    def feed(request: httpx.Request) -> httpx.Response:
        order.append(f"poll after={request.url.params.get('after')}")
        return httpx.Response(200, json={"events": [{"id": "7"}], "nextCursor": "7"})

    api = FakeApi(feed)
    with api.client() as client:
        events = client.events(on_open=lambda: order.append("open"))
        assert next(events)["id"] == "7" and next(events)["id"] == "7"
        events.close()
    assert order == ["open", "poll after=now", "poll after=7"]  # announced once
    assert api.streams == 1


def test_events_on_open_once_the_stream_answers() -> None:
    order: list[str] = []

    def stream(request: httpx.Request) -> httpx.Response:
        order.append("stream")
        body = b': hello\n\nid: 5\ndata: {"id": "5", "type": "connection.activated"}\n\n'
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/internet-on-demand/events/stream":
            return stream(request)
        return api(request)

    api = FakeApi(httpx.Response(200, json={"events": [], "nextCursor": "5"}))
    client = Client(URL, "me", "pw", transport=httpx.MockTransport(handler), retry=RETRY)
    with client:
        events = client.events(on_open=lambda: order.append("open"))
        first = next(events)
        events.close()
    assert first["type"] == "connection.activated"
    assert order == ["stream", "open"]


def test_usage_months_are_checked_before_any_request() -> None:
    from iod.client.money import usage_params

    assert usage_params(None, None, None, "day", "2026-12") == {
        "granularity": "day", "from": "2026-12-01T00:00:00Z", "to": "2027-01-01T00:00:00Z",
    }  # fmt: skip
    for month in ("2026", "2026-1-1", "2026-13", "2026-00", "garbage"):
        with pytest.raises(ValueError, match=r"e\.g\. 2026-11"):
            usage_params(None, None, None, "day", month)
