"""The SDK against `iod serve` in a subprocess: the flow, errors, tokens, retries."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from iod.client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RetryPolicy,
    TransportError,
    Unauthorized,
)
from tests.client.conftest import QUICK_RETRY, SMALL_SITE, Served, serve
from tests.client.proxy import DroppingProxy
from tests.e2e.conftest import free_port, token_for, wait_for

pytestmark = pytest.mark.e2e


def test_the_full_flow(served: Served) -> None:
    with served.client() as api:
        made = api.create_connection(served.location, "100 Mbps", "flow", wait=True)
        assert made.status == "active" and made.bandwidth == "100 Mbps"
        assert made.description == "flow" and made.location == served.location
        assert api.get_connection(made.id) == made
        assert made.id in [c.id for c in api.list_connections()]

        now = api.update_bandwidth(made.id, "1Gbps", wait=True)
        assert now.bandwidth == "1 Gbps" and now.pending_bandwidth_changes == []
        assert now.change.status == "applied" and now.change.bandwidth == "1 Gbps"

        later = datetime.now(UTC) + timedelta(hours=1)
        scheduled = api.update_bandwidth(made.id, "500 Mbps", later)
        assert scheduled.bandwidth == "1 Gbps" and scheduled.change.status == "scheduled"
        pending = api.get_connection(made.id).pending(scheduled.change.id)
        assert pending is not None and pending.bandwidth == "500 Mbps"
        assert abs((pending.effective_date - later).total_seconds()) < 1
        assert api.auth.token_requests == 1


def test_errors_carry_the_problem_details(served: Served) -> None:
    with served.client() as api:
        made = api.create_connection(served.location, "100 Mbps")
        with pytest.raises(InvalidRequest) as bad:
            api.update_bandwidth(made.id, "fast")
        assert bad.value.status == 400 and bad.value.type.endswith("/validation-error")
        assert bad.value.errors[0].pointer == "/bandwidth" and bad.value.request_id
        assert "Mbps or Gbps" in bad.value.detail
        with pytest.raises(NotFound, match="no connection"):
            api.get_connection("con_nonexistent")
        with suppress(Conflict):  # the site takes one 100 Mbps connection
            api.create_connection(SMALL_SITE, "100 Mbps")
        with pytest.raises(Conflict) as full:
            api.create_connection(SMALL_SITE, "100 Mbps")
        assert full.value.status == 409

    read_only = served.read_only
    with Client(served.url, read_only["client_id"], read_only["client_secret"]) as api:
        assert api.get_connection(made.id).id == made.id
        with pytest.raises(Forbidden) as denied:
            api.create_connection(served.location, "100 Mbps")
        assert denied.value.status == 403

    with Client(served.url, served.demo["client_id"], "wrong") as api:
        with pytest.raises(Unauthorized) as refused:
            api.get_connection(made.id)
        assert refused.value.oauth_error == "invalid_client"

    unused = f"http://127.0.0.1:{free_port()}"
    with Client(unused, "x", "y", retry=QUICK_RETRY) as api:
        with pytest.raises(TransportError) as unreachable:
            api.get_connection(made.id)
        assert unreachable.value.attempts == QUICK_RETRY.attempts


def test_the_async_client(served: Served) -> None:
    async def scenario() -> None:
        async with AsyncClient(
            served.url, served.demo["client_id"], served.demo["client_secret"]
        ) as api:
            made, other = await asyncio.gather(
                api.create_connection(served.location, "50 Mbps", wait=True),
                api.create_connection(served.location, "20 Mbps", wait=True),
            )
            assert made.status == other.status == "active"
            changed = await api.update_bandwidth(made.id, "200 Mbps", wait=True)
            assert changed.bandwidth == "200 Mbps"
            ids = [c.id async for c in api.list_connections()]
            assert {made.id, other.id} <= set(ids)
            with pytest.raises(NotFound):
                await api.get_connection("con_nonexistent")
            assert api.auth.token_requests == 1  # one token for the concurrent calls

    asyncio.run(scenario())


def test_a_token_that_expires_during_a_run_is_renewed(tmp_path: Path) -> None:
    running = serve(tmp_path, read_only=False, IOD_TOKEN_TTL="5")
    try:
        counts = {"401": 0}

        def count(response: httpx.Response) -> None:
            if response.status_code == 401:
                counts["401"] += 1

        ahead = running.client()  # renews before expiry
        late = Client(running.url, running.demo["client_id"], running.demo["client_secret"])
        late._http.event_hooks["response"] = [count]
        made = ahead.create_connection(running.location, "100 Mbps", wait=True)
        late.get_connection(made.id)
        late.auth._refresh_at = float("inf")  # as if its clock disagreed with the server's
        deadline = time.monotonic() + 15
        # Until both first tokens (5 s) have expired: `ahead` renews, `late` meets a 401.
        while ahead.auth.token_requests < 2 or late.auth.token_requests < 2:
            assert time.monotonic() < deadline, "the tokens were not renewed"
            assert ahead.get_connection(made.id).id == made.id
            assert late.get_connection(made.id).id == made.id
            time.sleep(0.25)
        for _ in range(3):
            assert late.get_connection(made.id).id == made.id
        assert ahead.auth.token_requests >= 2
        assert late.auth.token_requests == 2 and counts["401"] == 1
        ahead.close()
        late.close()
    finally:
        running.server.stop()


class Flaky(httpx.BaseTransport):
    """In front of the real transport: the next `fail` POSTs get a 503 without reaching
    the server."""

    def __init__(self, fail: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.fail = fail
        self.posts: list[str] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/internet-on-demand"):
            self.posts.append(request.headers.get("Idempotency-Key", ""))
            with self.lock:
                if self.fail > 0:
                    self.fail -= 1
                    return httpx.Response(503, headers={"Retry-After": "0"})
        return self.inner.handle_request(request)


def test_injected_503s_are_retried(served: Served) -> None:
    flaky = Flaky(fail=2)
    label = f"503-{uuid.uuid4()}"
    with served.client(transport=flaky) as api:
        made = api.create_connection(served.location, "10 Mbps", label)
        assert made.status in ("provisioning", "active")
        mine = [c for c in api.list_connections() if c.description == label]
    assert [c.id for c in mine] == [made.id]
    assert len(flaky.posts) == 3 and len(set(flaky.posts)) == 1


def test_dropped_connections_are_retried(served: Served) -> None:
    label = f"drop-{uuid.uuid4()}"
    with DroppingProxy("127.0.0.1", served.server.port) as proxy:
        retry = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)
        with Client(
            proxy.url, served.demo["client_id"], served.demo["client_secret"], retry=retry
        ) as api:
            proxy.drop(2)  # the token request, then its retry
            first = api.create_connection(served.location, "10 Mbps", label)
            proxy.drop(3)  # the create three times: the fourth attempt goes through
            second = api.create_connection(served.location, "10 Mbps", label, wait=True)
            assert second.status == "active" and proxy.dropped == 5
            mine = [c.id for c in api.list_connections() if c.description == label]
    assert sorted(mine) == sorted([first.id, second.id])
    token = token_for(served.url, served.demo["client_id"], served.demo["client_secret"])
    wait_for(
        lambda: (
            httpx.get(
                f"{served.url}/internet-on-demand/connections/{first.id}",
                headers={"Authorization": f"Bearer {token}"},
            ).json()["status"]
            == "active"
        )
    )


def test_a_create_retried_after_a_lost_response_makes_one_connection(served: Served) -> None:
    """The server did the work, the answer never arrived, the SDK retried with the same
    Idempotency-Key: the server replays its answer instead of ordering a second connection."""
    label = f"lost-{uuid.uuid4()}"
    with DroppingProxy("127.0.0.1", served.server.port) as proxy:
        retry = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)
        with Client(
            proxy.url, served.demo["client_id"], served.demo["client_secret"], retry=retry
        ) as api:
            api.authenticate()
            proxy.lose(1)
            made = api.create_connection(served.location, "10 Mbps", label)
            assert proxy.lost == 1
            mine = [c.id for c in api.list_connections() if c.description == label]
    assert mine == [made.id]
