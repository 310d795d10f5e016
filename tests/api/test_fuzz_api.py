"""Fuzzing PUT …/bandwidth through the ASGI app on both databases: whatever the bandwidth,
effectiveDate and revertAt, the answer is 200, 400 or 409, never a 500, and a refusal writes
nothing. 50 examples under `make test`, IOD_FUZZ_API_EXAMPLES (2,000) under `make fuzz`."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iod.app import Services
from iod.infra.clock import FrozenClock, rfc3339
from tests.conftest import audit_count, counts, run_jobs
from tests.unit.test_fuzz import json_values, near_bandwidth, rfc3339_spellings

FUZZING = os.environ.get("IOD_HYPOTHESIS_PROFILE") == "fuzz"
EXAMPLES = int(os.environ.get("IOD_FUZZ_API_EXAMPLES", "2000")) if FUZZING else 50

bandwidths = st.sampled_from(["100 Mbps", "1 Gbps", "1.5 Gbps", "10 Mbps"]) | near_bandwidth
dates = rfc3339_spellings().map(lambda case: case[0]) | json_values
# Days from now, both sides of the one-year limit, turned into a date-time by the test.
days = st.integers(-400, 400).map(lambda n: timedelta(days=n))


@pytest.fixture
def connection(api: TestClient, headers: dict[str, str], services: Services) -> str:
    """An active connection, shared by all examples of a test (fixtures are set up once)."""
    created = api.post(
        "/internet-on-demand/connections",
        json={"bandwidth": "100 Mbps", "locationId": "PL0001247634"},
        headers=headers,
    )
    assert created.status_code == 201
    run_jobs(services)
    return str(created.json()["id"])


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bandwidth=bandwidths | json_values,
    effective=st.none() | dates | days,
    revert=st.none() | dates | days,
)
def test_fuzz_bandwidth_update_never_fails_on_the_server(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    connection: str,
    bandwidth: Any,
    effective: Any,
    revert: Any,
) -> None:
    body: dict[str, Any] = {"bandwidth": bandwidth}
    for field, value in (("effectiveDate", effective), ("revertAt", revert)):
        if isinstance(value, timedelta):
            body[field] = rfc3339(clock.now() + value)
        elif value is not None:
            body[field] = value
    before = counts(services), audit_count(services)
    response = api.put(
        f"/internet-on-demand/connections/{connection}/bandwidth", json=body, headers=headers
    )
    assert response.status_code in (200, 400, 409), (body, response.text)
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"
        assert (counts(services), audit_count(services)) == before, "a refusal wrote rows"
