"""`iod jobs list` and `iod jobs periodic` against a served process's database, and a served
worker that scheduled the retention tasks by itself."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.e2e.conftest import Server, iod, token_for, wait_for

BASE = "/internet-on-demand/connections"


def test_jobs_and_periodic_tasks_are_visible(served: tuple[Server, dict[str, Any]]) -> None:
    server, demo = served
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    h = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{server.url}{BASE}",
        json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]},
        headers=h,
        timeout=10,
    ).json()
    conn = created["id"]
    wait_for(
        lambda: (
            httpx.get(f"{server.url}{BASE}/{conn}", headers=h, timeout=10).json()["status"]
            == "active"
        )
    )

    def provision_done() -> dict[str, Any] | None:
        listed = json.loads(iod(server.env, "jobs", "list", "--json", "--task", "provision").stdout)
        mine = [j for j in listed["jobs"] if j["lockKey"] == f"connection:{conn}"]
        return mine[0] if mine and mine[0]["state"] == "done" else None

    job = wait_for(provision_done)
    assert job["args"] == {"connectionId": conn} and job["attempts"] == 1

    def periodic() -> list[dict[str, Any]] | None:
        rows = json.loads(iod(server.env, "jobs", "periodic", "--json").stdout)["periodic"]
        return rows if all(r["lastPeriod"] for r in rows) else None

    rows = wait_for(periodic)
    names = {r["task"] for r in rows}
    assert {"retention.idempotency_keys", "retention.events", "retention.jobs"} <= names
    assert all(r["schedule"] == "every 1h" for r in rows if r["task"].startswith("retention."))
    # The human table, and a refused filter named as such.
    assert "retention.events" in iod(server.env, "jobs", "periodic").stdout
    refused = iod(server.env, "jobs", "list", "--state", "bogus", check=False)
    assert refused.returncode == 2 and "bogus" in refused.stderr
