"""API3 Broken Object Property Level Authorization (mass assignment): fields the server owns
(`id`, `status`, `createdAt`, `updatedAt`, the customer, pending changes, a change's status
or author) cannot be set by a client. A body naming any of them is refused (400, each one
named), and the unchanged tables prove nothing was stored."""

from __future__ import annotations

from typing import Any

from iod.infra.ids import new_id
from iod.models import BandwidthChange, Connection
from tests.security.conftest import BASE, LOC, World, assert_problem, snapshot

FORGED_CONNECTION = {
    "status": "active",
    "targetStatus": "terminated",
    "createdAt": "2000-01-01T00:00:00Z",
    "updatedAt": "2000-01-01T00:00:00Z",
    "location": "PL0000381920",
    "customer": "cus_mallory",
    "customerId": "cus_mallory",
    "customer_id": "cus_mallory",
    "createdBy": "cli_mallory",
    "created_by": "cli_mallory",
    "bandwidth_mbps": 100000,
    "pendingBandwidthChanges": [
        {"id": "chg_x", "bandwidth": "10 Gbps", "effectiveDate": "2030-01-01T00:00:00Z"}
    ],
}


def _refused_naming_each(response: Any, body: dict[str, Any], allowed: set[str]) -> None:
    got = assert_problem(response, 400, "validation-error")
    named = {e["pointer"] for e in got["errors"]}
    assert named == {f"/{k}" for k in body if k not in allowed}, got
    assert all("unknown field" in e["detail"] for e in got["errors"])


def test_mass_assignment_on_create_is_refused(world: World) -> None:
    chosen = new_id("con")
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "id": chosen, **FORGED_CONNECTION}
    before = snapshot(world.services)
    response = world.api.post(BASE, json=body, headers=world.acme_headers)
    _refused_naming_each(response, body, {"bandwidth", "locationId"})
    assert snapshot(world.services) == before
    with world.services.db.read() as session:
        assert session.get(Connection, chosen) is None


def test_mass_assignment_on_bandwidth_update_is_refused(world: World) -> None:
    body = {
        "bandwidth": "200 Mbps",
        "id": world.mallory_connection_id,
        "connectionId": world.mallory_connection_id,
        "status": "terminated",
        "requestedBy": "cli_mallory",
        "fromBandwidth": "10 Gbps",
        "appliedAt": "2000-01-01T00:00:00Z",
        "change": {"id": "chg_forged", "status": "applied"},
        **{k: v for k, v in FORGED_CONNECTION.items() if k != "status"},
    }
    url = f"{BASE}/{world.connection_id}/bandwidth"
    before = snapshot(world.services)
    response = world.api.put(url, json=body, headers=world.acme_headers)
    _refused_naming_each(response, body, {"bandwidth"})
    assert snapshot(world.services) == before
    with world.services.db.read() as session:
        assert session.get(BandwidthChange, "chg_forged") is None
        theirs = session.get(Connection, world.mallory_connection_id)
        assert theirs is not None and theirs.status == "active"
