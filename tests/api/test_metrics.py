"""Prometheus metrics at /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from structlog.testing import capture_logs

from iod.app import Services, build_services, create_app
from iod.infra.clock import FrozenClock
from iod.infra.db import Database
from iod.network.simulated import SimulatedDriver
from tests.conftest import run_jobs


def scrape(api: TestClient, **headers: str) -> Any:
    """/metrics as a scraper on the loopback sees it (the test client's own peer address,
    "testclient", is not the loopback)."""
    return TestClient(api.app, client=("127.0.0.1", 4242)).get("/metrics", headers=headers)


def test_metrics_count_requests_by_route_and_read_the_queue(
    api: TestClient, headers, services: Services
) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}
    conn = api.post("/internet-on-demand/connections", json=body, headers=headers).json()
    api.get(f"/internet-on-demand/connections/{conn['id']}", headers=headers)
    before = scrape(api)
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    text = before.text
    assert (
        'iod_http_requests_total{method="GET",route="/internet-on-demand/connections/'
        '{connectionId}",status="200"} 1.0' in text
    )
    assert 'iod_jobs{state="queued"} 1.0' in text
    run_jobs(services)
    api.put(
        f"/internet-on-demand/connections/{conn['id']}/bandwidth",
        json={"bandwidth": "1 Gbps"},
        headers=headers,
    )
    run_jobs(services)
    after = scrape(api).text
    assert 'iod_jobs{state="queued"} 0.0' in after
    assert 'iod_bandwidth_change_lag_seconds{quantile="0.99"}' in after
    assert "iod_http_request_duration_seconds_bucket" in after


def test_metrics_are_hidden_from_customers_without_a_token(api: TestClient) -> None:
    """Only the loopback is answered when no IOD_METRICS_TOKEN is set; anyone else sees
    nothing there (404), whatever they claim in X-Forwarded-For."""
    assert scrape(api).status_code == 200
    for peer in ("testclient", "203.0.113.5", "10.0.0.1"):
        outside = TestClient(api.app, client=(peer, 4242))
        refused = outside.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert refused.status_code == 404, peer
        assert refused.headers["content-type"] == "application/problem+json"
        assert "iod_" not in refused.text


@pytest.fixture
def token_app(
    database: Database, clock: FrozenClock, driver: SimulatedDriver, services: Services
) -> Any:
    settings = services.settings.model_copy(update={"metrics_token": SecretStr("scrape-me")})
    with TestClient(
        create_app(build_services(settings, db=database, clock=clock, driver=driver)),
        raise_server_exceptions=False,
    ) as client:
        yield client


def test_with_a_metrics_token_the_token_is_required_from_everywhere(token_app: Any) -> None:
    for peer in ("203.0.113.5", "127.0.0.1"):
        client = TestClient(token_app.app, client=(peer, 4242))
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401, (peer, headers)
            assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200 and "iod_http_requests_total" in scraped.text


def _hang_up_mid_body(api: TestClient, path: str, headers: list[tuple[bytes, bytes]]) -> list[Any]:
    """Runs one request through the app whose client sends part of the body, then hangs up
    (what uvicorn tells the app when the connection drops); returns what the app sent."""
    messages = [
        {"type": "http.request", "body": b'{"bandwidth": "10', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(30)  # pragma: no cover - the app must not wait for more

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-length", b"100"), *headers],
        "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(api.app(scope, receive, send), 10))
    return sent


@pytest.mark.parametrize("path", ["/oauth2/token", "/internet-on-demand/connections"])
def test_a_client_hanging_up_mid_body_is_a_disconnect_not_a_server_error(
    api: TestClient, headers: dict[str, str], path: str
) -> None:
    content_type = (
        b"application/x-www-form-urlencoded" if path == "/oauth2/token" else b"application/json"
    )
    asgi_headers = [
        (b"content-type", content_type),
        (b"authorization", headers["Authorization"].encode()),
    ]
    with capture_logs() as logs:
        _hang_up_mid_body(api, path, asgi_headers)
    events = [(e["event"], e["log_level"]) for e in logs]
    assert ("request.failed", "error") not in events
    access = [e for e in logs if e["event"] == "request"]
    assert [(e["status"], e["log_level"]) for e in access] == [(499, "info")]
    text = scrape(api).text
    assert 'status="499"' in text
    assert 'status="500"' not in text
