"""API5 Broken Function Level Authorization: scopes are enforced on every operation.

A token with only `read` gets 403 `insufficient_scope` on every write, and nothing is
written; a token with only `write` gets 403 on every read; no token is 401 everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from iod.app import Services
from tests.security.conftest import BASE, LOC, World, add_client, assert_problem, mint, snapshot

WRITES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("create", "POST", "", {"bandwidth": "100 Mbps", "locationId": LOC}),
    ("update-bandwidth", "PUT", "/{c}/bandwidth", {"bandwidth": "1 Gbps"}),
    ("suspend", "POST", "/{c}/suspend", None),
    ("resume", "POST", "/{c}/resume", None),
    ("terminate", "POST", "/{c}/terminate", None),
    ("cancel-change", "POST", "/{c}/bandwidth-changes/{x}/cancel", None),
]
READS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("list", "GET", "", None),
    ("get", "GET", "/{c}", None),
    ("status-history", "GET", "/{c}/status-history", None),
    ("list-changes", "GET", "/{c}/bandwidth-changes", None),
    ("get-change", "GET", "/{c}/bandwidth-changes/{x}", None),
]


def request(world: World, op: tuple[str, str, str, Any], headers: dict[str, str]) -> Any:
    _, method, template, body = op
    url = BASE + template.format(c=world.connection_id, x=world.change_id)
    return world.api.request(method, url, json=body, headers=headers)


def assert_insufficient_scope(response: Any, scope: str) -> None:
    assert_problem(response, 403, "insufficient-scope")
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and f'scope="{scope}"' in challenge


@pytest.mark.parametrize("op", [pytest.param(op, id=op[0]) for op in WRITES])
@pytest.mark.parametrize("how", ["token-scope", "client-scope"])
def test_read_only_token_gets_403_on_every_write(world: World, op: Any, how: str) -> None:
    services: Services = world.services
    if how == "token-scope":  # a read-write client that asked for `read` only
        headers = mint(services, world.acme, "read")
    else:  # a client of the same customer that may only read
        reader = add_client(services, scopes="read", customer_id=world.acme.customer_id)
        headers = mint(services, reader, "read")
    before = snapshot(services)
    assert_insufficient_scope(request(world, op, headers), "write")
    assert snapshot(services) == before


@pytest.mark.parametrize("op", [pytest.param(op, id=op[0]) for op in READS])
def test_write_only_token_gets_403_on_every_read(world: World, op: Any) -> None:
    response = request(world, op, mint(world.services, world.acme, "write"))
    assert_insufficient_scope(response, "read")
    assert world.connection_id not in response.text.replace(response.json()["instance"], "")


@pytest.mark.parametrize("op", [pytest.param(op, id=op[0]) for op in READS + WRITES])
def test_no_token_is_401_on_every_operation(world: World, op: Any) -> None:
    before = snapshot(world.services)
    response = request(world, op, {})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert snapshot(world.services) == before


def test_scope_is_checked_before_the_body(world: World) -> None:
    """A reader learns nothing about what a write would say: 403 even for a bad body."""
    headers = mint(world.services, world.acme, "read")
    before = snapshot(world.services)
    bad = world.api.put(
        f"{BASE}/{world.connection_id}/bandwidth", json={"bandwidth": "fast"}, headers=headers
    )
    assert_insufficient_scope(bad, "write")
    assert snapshot(world.services) == before
