"""Schedules through `iod serve`, the SDK and the `iod schedules` commands: a rule applies
and reverts on time (seconds ahead, in UTC, so the test waits seconds, not hours);
deleting the schedule cancels its future changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from iod.client import Client
from tests.e2e.conftest import Server, iod, wait_for


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


# One backend: the served process's schedules are the same code on both, and the API and
# planning tests run on both databases (tests/api, tests/integration); this waits seconds.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_rule_applies_and_reverts_on_time_and_delete_cleans_up(
    served: tuple[Server, dict[str, Any]],
) -> None:
    server, demo = served
    with Client(server.url, demo["client_id"], demo["client_secret"]) as api:
        conn = api.create_connection(demo["location_id"], "100 Mbps", wait=True, timeout=30)
        # Far enough ahead that the schedule is created before its window, on a loaded
        # machine too.
        start = (datetime.now(UTC) + timedelta(seconds=10)).replace(microsecond=0)
        end = start + timedelta(seconds=3)
        rule = {"bandwidth": "1 Gbps", "start": _clock(start), "end": _clock(end),
                "recurrence": "FREQ=DAILY"}  # fmt: skip
        schedule = api.create_schedule(conn.id, "UTC", "100 Mbps", [rule])
        pending = api.get_connection(conn.id).pending_bandwidth_changes
        # Now (100 Mbps), today's window, and the next days' within the 48 h horizon.
        assert [p.bandwidth for p in pending[:3]] == ["100 Mbps", "1 Gbps", "100 Mbps"]
        assert {p.schedule_id for p in pending} == {schedule.id}
        assert pending[1].effective_date == start and pending[2].effective_date == end

        opening, closing = pending[1].id, pending[2].id

        def window_applied() -> list[Any] | None:
            changes = {c.id: c for c in api.list_bandwidth_changes(conn.id)}
            both = [changes[opening], changes[closing]]
            return both if all(c.status == "applied" for c in both) else None

        # The window's two changes applied, each on time: seen in the change list, not by
        # catching 1 Gbps in between (a worker late by the window's 3 s applies both at once).
        opened, closed = wait_for(window_applied, timeout=60)
        assert opened.applied_at is not None and opened.applied_at >= start
        assert closed.applied_at is not None and closed.applied_at >= end
        assert closed.applied_at >= opened.applied_at and closed.from_bandwidth == "1 Gbps"
        assert api.get_connection(conn.id).bandwidth == "100 Mbps"
        applied = [c for c in api.list_bandwidth_changes(conn.id) if c.status == "applied"]
        window = [c for c in applied if c.bandwidth == "1 Gbps"]
        assert len(window) == 1 and window[0].schedule_id == schedule.id
        assert window[0].applied_at is not None and window[0].applied_at >= start

        future = api.get_connection(conn.id).pending_bandwidth_changes
        assert len(future) >= 2  # tomorrow's window at least
        env = {
            **server.env,
            "IOD_URL": server.url,
            "IOD_CLIENT_ID": demo["client_id"],
            "IOD_CLIENT_SECRET": demo["client_secret"],
            # The week grid (25 columns) needs a wide terminal: without a tty Rich assumes 80
            # and shortens the cells ("10…" for 100M), whatever width the CI's shell has.
            "COLUMNS": "160",
        }
        grid = iod(env, "schedules", "preview", conn.id).stdout  # the table, then the grid
        assert "1G" in grid and "100M" in grid and "(from)" in grid

        iod(env, "schedules", "delete", conn.id)
        assert api.get_connection(conn.id).pending_bandwidth_changes == []
        cancelled = {c.id for c in api.list_bandwidth_changes(conn.id) if c.status == "cancelled"}
        assert {p.id for p in future} <= cancelled
        assert api.list_schedules(conn.id) == []

        # The CLI's short rules on another connection.
        other = api.create_connection(demo["location_id"], "100 Mbps", wait=True, timeout=30)
        created = iod(env, "schedules", "create", other.id, "--tz", "America/New_York",
                      "--default", "100 Mbps", "--rule", "1 Gbps MO-FR 08:00-18:00",
                      "--except", "2030-12-25", "--json")  # fmt: skip
        document = json.loads(created.stdout)
        assert document["rules"][0]["recurrence"] == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
        paused = json.loads(iod(env, "schedules", "pause", other.id, "--json").stdout)
        assert paused["paused"] is True
        assert api.get_connection(other.id).pending_bandwidth_changes == []
        assert {s.id for s in api.list_schedules()} == {document["id"]}
