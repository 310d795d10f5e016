"""An optional field that may not be null (`X | SkipJsonSchema[None]`) points at the value
itself when it is invalid, as the same field of a POST does: no union tag in the pointer
(`/rules/list[ScheduleRule]/0/...`) and no error for the `None` member (`/rules/none`)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from tests.conftest import run_jobs

BASE = "/internet-on-demand/connections"
RULE = {"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00", "recurrence": "FREQ=DAILY"}


@pytest.fixture
def schedule(api: TestClient, headers: dict[str, str], services: Services) -> str:
    made = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": "PL0001247634"},
                    headers=headers)  # fmt: skip
    assert made.status_code == 201, made.text
    run_jobs(services)
    conn = made.json()["id"]
    body = {"timeZone": "UTC", "defaultBandwidth": "100 Mbps", "rules": [RULE]}
    created = api.post(f"{BASE}/{conn}/schedules", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return f"{BASE}/{conn}/schedules/{created.json()['id']}"


@pytest.mark.parametrize(
    ("patch", "pointers"),
    [
        ({"rules": [{**RULE, "recurrence": "FREQ=MINUTELY"}]}, ["/rules/0/recurrence"]),
        ({"rules": [{**RULE, "priority": 1}]}, ["/rules/0/priority"]),
        ({"rules": "x"}, ["/rules"]),
        ({"exceptions": [{"date": "not a date"}]}, ["/exceptions/0/date"]),
    ],
)
def test_patch_points_at_the_bad_value(
    api: TestClient, headers: dict[str, str], schedule: str, patch: dict[str, Any],
    pointers: list[str],
) -> None:  # fmt: skip
    response = api.patch(schedule, json=patch, headers=headers)
    assert response.status_code == 400, response.text
    assert [e["pointer"] for e in response.json()["errors"]] == pointers
    assert "none" not in response.json()["detail"].lower()
