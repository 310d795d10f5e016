"""API3 Broken Object Property Level Authorization (mass assignment): fields the server owns
(`id`, `status`, `createdAt`, `updatedAt`, the customer, pending changes, a change's status
or author) cannot be set by a client. They are ignored, and the stored rows prove it."""

from __future__ import annotations

from iod.clock import rfc3339
from iod.ids import new_id
from iod.models import BandwidthChange, Connection
from tests.security.conftest import BASE, LOC, World

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


def test_mass_assignment_on_create_is_ignored(world: World) -> None:
    chosen = new_id("con")
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "id": chosen, **FORGED_CONNECTION}
    response = world.api.post(BASE, json=body, headers=world.acme_headers)
    assert response.status_code == 201, response.text
    got = response.json()
    now = rfc3339(world.services.clock.now())
    assert got["id"] != chosen and got["status"] == "provisioning"
    assert got["createdAt"] == got["updatedAt"] == now
    assert got["location"] == LOC and got["pendingBandwidthChanges"] == []
    assert "targetStatus" not in got
    with world.services.db.read() as session:
        assert session.get(Connection, chosen) is None
        row = session.get(Connection, got["id"])
        assert row is not None
        assert row.customer_id == world.acme.customer_id
        assert row.created_by == world.acme.client_id
        assert row.status == "provisioning" and row.target_status is None
        assert row.bandwidth_mbps == 100 and row.location_id == LOC
        assert rfc3339(row.created_at) == now
        assert session.query(BandwidthChange).filter_by(connection_id=row.id).count() == 0


def test_mass_assignment_on_bandwidth_update_is_ignored(world: World) -> None:
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
    response = world.api.put(url, json=body, headers=world.acme_headers)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["id"] == world.connection_id and got["status"] == "active"
    assert got["change"]["status"] == "scheduled"
    assert got["change"]["requestedBy"] == world.acme.client_id
    with world.services.db.read() as session:
        row = session.get(Connection, world.connection_id)
        assert row is not None and row.status == "active" and row.target_status is None
        assert row.customer_id == world.acme.customer_id and row.bandwidth_mbps == 100
        change = session.get(BandwidthChange, got["change"]["id"])
        assert change is not None and change.connection_id == world.connection_id
        assert change.status == "scheduled" and change.requested_by == world.acme.client_id
        assert change.from_mbps is None and change.applied_at is None
        assert session.get(BandwidthChange, "chg_forged") is None
        theirs = session.get(Connection, world.mallory_connection_id)
        assert theirs is not None and theirs.status == "active"
