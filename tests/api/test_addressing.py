"""Each connection gets an IPv4 block from its location's pool (an extension property)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.locations import service as locations
from tests.conftest import nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def create(api: TestClient, headers: dict[str, str], **extra: object) -> dict[str, object]:
    response = api.post(
        BASE, json={"bandwidth": "100 Mbps", "locationId": LOC, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_blocks_are_distinct_aligned_and_sized(api, headers, services) -> None:
    pool = IPv4Network(_pool(services, LOC))
    made = [create(api, headers) for _ in range(3)]
    made.append(create(api, headers, ipv4PrefixLength=29))
    made.append(create(api, headers, ipv4PrefixLength=28))
    blocks = [IPv4Network(str(c["ipv4Block"])) for c in made]
    assert [b.prefixlen for b in blocks] == [30, 30, 30, 29, 28]
    for index, block in enumerate(blocks):
        assert block.subnet_of(pool)
        assert not any(block.overlaps(other) for other in blocks[:index])
    got = api.get(f"{BASE}/{made[3]['id']}", headers=headers).json()
    assert got["ipv4Block"] == str(blocks[3])


def _pool(services: Services, location_id: str) -> str:
    with services.db.read() as session:
        return str(locations.describe(locations.repository.get(session, location_id))["ipv4Pool"])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [27, 31, "30", True, None, 30.0])
def test_bad_prefix_length_is_a_400_with_a_pointer(api, headers, services, bad) -> None:
    with nothing_written(services):
        response = api.post(
            BASE,
            json={"bandwidth": "100 Mbps", "locationId": LOC, "ipv4PrefixLength": bad},
            headers=headers,
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(e["pointer"] == "/ipv4PrefixLength" for e in response.json()["errors"])


def test_terminated_connections_free_their_block(api, headers, services) -> None:
    first = create(api, headers)
    run_jobs(services)
    assert api.post(f"{BASE}/{first['id']}/terminate", headers=headers).status_code == 202
    run_jobs(services)
    again = create(api, headers)
    assert again["ipv4Block"] == first["ipv4Block"]  # reused once the network let it go
    # The terminated record keeps its block, for history.
    assert api.get(f"{BASE}/{first['id']}", headers=headers).json()["ipv4Block"]


def test_an_exhausted_pool_is_a_409_and_writes_nothing(api, headers, services) -> None:
    with services.db.write() as session:
        locations.upsert(
            session,
            services.clock,
            locations.parse_catalog(
                [{"id": "TINY", "name": "Tiny", "address": "1 Main St", "capacity": "10 Gbps",
                  "ipv4Pool": "192.168.7.0/29"}]
            ),
        )  # fmt: skip
    body = {"bandwidth": "100 Mbps", "locationId": "TINY"}
    assert api.post(BASE, json=body, headers=headers).status_code == 201
    assert api.post(BASE, json=body, headers=headers).status_code == 201
    with nothing_written(services):
        refused = api.post(BASE, json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/problems/address-pool-exhausted")
    assert "192.168.7.0/29" in refused.json()["detail"]


def _place(id_: str, pool: str | None = None) -> dict[str, str]:
    entry = {"id": id_, "name": id_, "address": "1 Main St", "capacity": "10 Gbps"}
    return entry | ({"ipv4Pool": pool} if pool else {})


@pytest.mark.parametrize(
    ("entries", "pointer"),
    [
        ([_place("T2", "0.0.0.0/0")], "/0/ipv4Pool"),
        ([_place("T2", "172.16.0.0/24"), _place("T3", "172.16.0.128/25")], "/1/ipv4Pool"),
        ([_place("PL0001247634", "172.31.0.0/24")], "/0/ipv4Pool"),  # a pool cannot change
    ],
)
def test_a_pool_that_overlaps_another_or_changes_is_refused(
    services: Services, entries: list[dict[str, str]], pointer: str
) -> None:
    with pytest.raises(locations.ValidationFailed) as refused, services.db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog(entries))
    assert [e.pointer for e in refused.value.errors] == [pointer]
    with services.db.read() as session:
        assert {row.id for row in locations.repository.list_all(session)}.isdisjoint({"T2", "T3"})


def test_the_pool_of_another_location_is_refused(services: Services) -> None:
    with services.db.read() as session:
        taken = next(r.ipv4_pool for r in locations.repository.list_all(session) if r.id == LOC)
    with pytest.raises(locations.ValidationFailed) as refused, services.db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog([_place("T2", taken)]))
    assert f"overlaps the pool of {LOC}" in refused.value.errors[0].detail


def test_a_default_pool_avoids_the_explicit_pools_of_the_same_import(services: Services) -> None:
    with services.db.read() as session:
        first_free = locations._next_pool(session, [])
    with services.db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog(
            [_place("T4"), _place("T5", str(first_free))]
        ))  # fmt: skip
    with services.db.read() as session:
        pools = {
            row.id: IPv4Network(row.ipv4_pool) for row in locations.repository.list_all(session)
        }
    assert pools["T5"] == first_free and not pools["T4"].overlaps(first_free)


def test_a_pool_given_to_a_location_named_twice_in_an_import_is_not_ignored(
    services: Services,
) -> None:
    """The first entry makes the location (a default pool), the second asks for another
    pool: refused as a change of the pool, not dropped silently."""
    with pytest.raises(locations.ValidationFailed) as refused, services.db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog(
            [_place("T6"), _place("T6", "172.20.0.0/24")]
        ))  # fmt: skip
    assert [e.pointer for e in refused.value.errors] == ["/1/ipv4Pool"]


def test_a_location_kept_with_its_pool_is_not_refused_for_an_overlap_stored_before(
    services: Services,
) -> None:
    """Two locations whose pools overlap (stored before imports checked it): importing them
    again unchanged but for a name changes no pool, so it is not refused."""
    with services.db.write() as session:
        for id_ in ("T7", "T8"):
            session.add(locations.Location(
                id=id_, name=id_, address="1 Main St", capacity_mbps=10_000,
                tiers_mbps=[100], ipv4_pool="172.21.0.0/24", ipv4_next=0,
                created_at=services.clock.now(), updated_at=services.clock.now(),
            ))  # fmt: skip
    with services.db.write() as session:
        locations.upsert(session, services.clock, locations.parse_catalog(
            [_place("T7", "172.21.0.0/24") | {"name": "renamed"}]
        ))  # fmt: skip
    with services.db.read() as session:
        names = {row.id: row.name for row in locations.repository.list_all(session)}
    assert names["T7"] == "renamed"
