"""Prometheus metrics at /metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from iod.app import Services
from tests.conftest import run_jobs


def test_metrics_count_requests_by_route_and_read_the_queue(
    api: TestClient, headers, services: Services
) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": "PL0001247634"}
    conn = api.post("/internet-on-demand/connections", json=body, headers=headers).json()
    api.get(f"/internet-on-demand/connections/{conn['id']}", headers=headers)
    before = api.get("/metrics")
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
    after = api.get("/metrics").text
    assert 'iod_jobs{state="queued"} 0.0' in after
    assert 'iod_bandwidth_change_lag_seconds{quantile="0.99"}' in after
    assert "iod_http_request_duration_seconds_bucket" in after
