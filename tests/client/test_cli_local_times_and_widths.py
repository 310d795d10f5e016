"""`iod` with a local time the clocks skip or repeat, and `connections list` on a terminal
too narrow for every pending change (the API is scripted: httpx.MockTransport)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from iod.client import Client, RetryPolicy
from iod.client import cli as customer


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_local_time_the_clocks_skip_is_refused(new_york: None) -> None:
    with pytest.raises(customer.typer.Exit) as refused:
        customer.parse_at("2027-03-14T02:30")  # 02:00 -> 03:00 that night
    assert refused.value.exit_code == customer.EXIT_USAGE
    assert customer.parse_at("2027-03-14T03:30").isoformat() == "2027-03-14T03:30:00-04:00"
    assert customer.parse_at("2027-03-14T01:59").isoformat() == "2027-03-14T01:59:00-05:00"


def test_a_repeated_local_time_is_its_first_occurrence(new_york: None) -> None:
    assert customer.parse_at("2027-11-07T01:30").isoformat() == "2027-11-07T01:30:00-04:00"
    assert customer.parse_at("2027-11-07T01:30-05:00").isoformat() == "2027-11-07T01:30:00-05:00"


def connection(number: int, pending: int) -> dict[str, Any]:
    return {
        "id": f"con_{number:026d}", "status": "active", "bandwidth": "100 Mbps",
        "location": "PL0001247634", "description": f"office number {number} " * 4,
        "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z",
        "pendingBandwidthChanges": [
            {"id": f"chg_{i}", "bandwidth": "20 Mbps", "status": "scheduled",
             "effectiveDate": f"2030-01-{i + 2:02d}T00:00:00Z"}
            for i in range(pending)
        ],
    }  # fmt: skip


def listing(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/oauth2/token":
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                         "expires_in": 3600})  # fmt: skip
    rows = [connection(1, 12), connection(2, 0)]
    return httpx.Response(200, json={"connections": rows, "nextCursor": None})


@pytest.mark.parametrize("width", [100, 140, 200])
def test_a_long_pending_list_is_cut_short_not_the_other_columns(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    def scripted() -> Client:
        return Client("http://iod.test", "me", "pw", transport=httpx.MockTransport(listing),
                      retry=RetryPolicy(attempts=1))  # fmt: skip

    monkeypatch.setattr(customer, "client", scripted)
    monkeypatch.setattr(customer.out, "width", width)
    result = CliRunner().invoke(customer.app, ["connections", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "id" in line.split())
    assert header.split() == ["id", "status", "bandwidth", "location", "pending", "description"]
    first = next(line for line in lines if "con_" in line and "…" in line)
    assert first.split()[1:4] == ["active", "100", "Mbps"]  # the status and bandwidth shown
    assert "PL0001247634" in first and "20 Mbps" in first
    assert all(len(line) <= width for line in lines)
