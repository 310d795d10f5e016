"""API1 Broken Object Level Authorization: one customer's ids in another customer's hands.

Every operation that takes an id answers 404 for another customer's connection or change,
the same 404 as for an id that does not exist, and changes nothing anywhere."""

from __future__ import annotations

from typing import Any

import pytest

from iod.infra.ids import new_id
from tests.security.conftest import BASE, World, assert_problem, snapshot

# (name, method, path template, JSON body or None)
BY_ID: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("get", "GET", "{c}", None),
    ("update-bandwidth", "PUT", "{c}/bandwidth", {"bandwidth": "1 Gbps"}),
    ("boost", "PUT", "{c}/bandwidth",
     {"bandwidth": "1 Gbps", "revertAt": "2030-01-02T00:00:00Z"}),
    ("suspend", "POST", "{c}/suspend", None),
    ("resume", "POST", "{c}/resume", None),
    ("terminate", "POST", "{c}/terminate", None),
    ("status-history", "GET", "{c}/status-history", None),
    ("list-changes", "GET", "{c}/bandwidth-changes", None),
    ("get-change", "GET", "{c}/bandwidth-changes/{x}", None),
    ("cancel-change", "POST", "{c}/bandwidth-changes/{x}/cancel", None),
]  # fmt: skip
OPERATIONS = [pytest.param(*op, id=op[0]) for op in BY_ID]


def call(world: World, method: str, template: str, body: Any, c: str, x: str) -> Any:
    url = f"{BASE}/" + template.format(c=c, x=x)
    return world.api.request(method, url, json=body, headers=world.mallory_headers)


@pytest.mark.parametrize(("name", "method", "template", "body"), OPERATIONS)
def test_bola_another_customers_ids_are_404_and_change_nothing(
    world: World, name: str, method: str, template: str, body: Any
) -> None:
    before = snapshot(world.services)
    response = call(world, method, template, body, world.connection_id, world.change_id)
    problem = assert_problem(response, 404, "not-found")
    assert snapshot(world.services) == before, f"{name} by another customer changed data"
    # Indistinguishable from an id that does not exist: nothing tells Mallory it does.
    unknown_c, unknown_x = new_id("con"), new_id("chg")
    missing = assert_problem(call(world, method, template, body, unknown_c, unknown_x), 404)
    assert missing["type"] == problem["type"] and missing["title"] == problem["title"]
    same = problem["detail"].replace(world.connection_id, "C").replace(world.change_id, "X")
    assert same == missing["detail"].replace(unknown_c, "C").replace(unknown_x, "X")
    assert world.acme.customer_id not in response.text


@pytest.mark.parametrize(
    ("name", "method", "template", "body"),
    [op for op in OPERATIONS if "{x}" in op.values[2]],
)
def test_bola_another_customers_change_under_ones_own_connection_is_404(
    world: World, name: str, method: str, template: str, body: Any
) -> None:
    """Mallory's connection in the path does not open Acme's change, nor the reverse."""
    before = snapshot(world.services)
    mixed = call(world, method, template, body, world.mallory_connection_id, world.change_id)
    assert_problem(mixed, 404, "not-found")
    reverse = call(world, method, template, body, world.connection_id, world.mallory_change_id)
    assert_problem(reverse, 404, "not-found")
    assert snapshot(world.services) == before


def test_bola_list_shows_only_ones_own_connections(world: World) -> None:
    listed = world.api.get(BASE, headers=world.mallory_headers, params={"status": "active"})
    assert [c["id"] for c in listed.json()["connections"]] == [world.mallory_connection_id]
    # A cursor is a position, not a key: Acme's id as cursor shows nothing of Acme's.
    paged = world.api.get(BASE, headers=world.mallory_headers, params={"cursor": "con_0"})
    assert world.connection_id not in paged.text
    by_location = world.api.get(BASE, headers=world.mallory_headers, params={"location": "x"})
    assert world.connection_id not in by_location.text


def test_bola_idempotency_keys_are_per_customer(world: World) -> None:
    """Mallory reusing Acme's Idempotency-Key gets her own answer, never Acme's replay."""
    key = {"Idempotency-Key": "shared-key-1"}
    acme = world.api.put(
        f"{BASE}/{world.connection_id}/bandwidth",
        json={"bandwidth": "200 Mbps"},
        headers={**world.acme_headers, **key},
    )
    assert acme.status_code == 200, acme.text
    before = snapshot(world.services)
    replay_attempt = world.api.put(
        f"{BASE}/{world.connection_id}/bandwidth",
        json={"bandwidth": "200 Mbps"},
        headers={**world.mallory_headers, **key},
    )
    assert_problem(replay_attempt, 404, "not-found")
    assert "idempotent-replayed" not in replay_attempt.headers
    # Only her own refusal is remembered under her key; Acme's rows are as they were.
    after = snapshot(world.services)
    assert {k: v for k, v in after.items() if k != "idempotency_keys"} == {
        k: v for k, v in before.items() if k != "idempotency_keys"
    }
