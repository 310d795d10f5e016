"""API4 Unrestricted Resource Consumption and API2 (credential guessing): token buckets.

Guessing a client secret is throttled per client id and per source address; successful
token requests have a generous limit of their own; API requests are limited per client,
reads and writes apart, with RateLimit-* headers and 429 + Retry-After. The limiters run on
a clock the test moves (Ticker), so nothing here sleeps or depends on the machine's speed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from iod.infra.config import Settings
from tests.security.conftest import (
    BASE,
    GRANT,
    LOC,
    SECRET,
    TOKEN,
    Limited,
    World,
    add_client,
    assert_problem,
    mint,
    snapshot,
)

FAILURE_BURST = Settings.model_fields["token_failures_burst"].default
FAILURES_PER_MINUTE = Settings.model_fields["token_failures_per_minute"].default


def guess(api: Any, client_id: str, secret: str = "wrong-secret") -> Any:
    return api.post(TOKEN, data=GRANT, auth=(client_id, secret))


def assert_slow_down(response: Any) -> int:
    """429 in the token endpoint's own RFC 6749 style, with Retry-After in seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["error"] == "slow_down" and body["error_description"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


# --- secret guessing --------------------------------------------------------------------------


def test_secret_guessing_is_throttled_per_client_id(limited: Any) -> None:
    """From many addresses at one client id: after the burst, one guess per refill interval,
    and while throttled even the right secret waits (the client's current token still
    works; see docs/security.md)."""
    app: Limited = limited()
    victim = add_client(app.services)
    for n in range(FAILURE_BURST):
        attacker = app.client_from(f"198.51.100.{n}")
        assert guess(attacker, victim.client_id).status_code == 401
    fresh_address = app.client_from("203.0.113.7")
    retry_after = assert_slow_down(guess(fresh_address, victim.client_id))
    assert retry_after == round(60 / FAILURES_PER_MINUTE)
    assert_slow_down(guess(fresh_address, victim.client_id, SECRET))
    app.ticker.advance(retry_after)
    assert guess(fresh_address, victim.client_id).status_code == 401  # one more guess...
    assert_slow_down(guess(fresh_address, victim.client_id))  # ...and no second
    app.ticker.advance(retry_after)
    assert guess(fresh_address, victim.client_id, SECRET).status_code == 200


def test_secret_guessing_is_throttled_per_source_address(limited: Any) -> None:
    """From one address across many client ids (known or not): the address's bucket."""
    app: Limited = limited()
    clients = [add_client(app.services, name=f"C{n}") for n in range(3)]
    ids = [c.client_id for c in clients] + [f"cli_unknown{n}" for n in range(FAILURE_BURST)]
    for client_id in ids[:FAILURE_BURST]:
        assert guess(app.api, client_id).status_code == 401
    assert_slow_down(guess(app.api, ids[FAILURE_BURST]))
    # Another address is not affected, and neither is the right secret from it.
    other = app.client_from("192.0.2.10")
    assert guess(other, clients[0].client_id, SECRET).status_code == 200


def test_failed_guesses_by_form_post_are_counted_too(limited: Any) -> None:
    """Form-post credentials count like Basic ones."""
    app: Limited = limited()
    victim = add_client(app.services)
    form = {**GRANT, "client_id": victim.client_id, "client_secret": "nope"}
    for _ in range(FAILURE_BURST):
        assert app.api.post(TOKEN, data=form).status_code == 401
    assert_slow_down(app.api.post(TOKEN, data=form))


def test_successful_token_requests_do_not_count_as_failures(limited: Any) -> None:
    app: Limited = limited(token_requests_burst=1000)
    client = add_client(app.services)
    for _ in range(FAILURE_BURST * 3):
        assert guess(app.api, client.client_id, SECRET).status_code == 200
    assert guess(app.api, client.client_id).status_code == 401


def test_concurrent_successful_token_requests_are_not_taken_for_guesses(limited: Any) -> None:
    """Many good requests at once from one address and one client id (a scheduler at the top
    of the hour behind one proxy): the failure buckets are reserved for each check and given
    back, so the checks must not overlap; 5 times the failure burst at once all get tokens.
    Then the failure limit still holds: the burst of wrong guesses, and no more."""
    app: Limited = limited(token_requests_burst=1000)
    client = add_client(app.services)
    # The first success upgrades the secret's argon2 hash to the keyed one (a worker thread);
    # the checks after that run on the event loop.
    assert guess(app.api, client.client_id, SECRET).status_code == 200

    async def burst(count: int, secret: str) -> list[int]:
        transport = httpx.ASGITransport(app.api.app, client=("192.0.2.9", 4242))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *(http.post(TOKEN, data=GRANT, auth=(client.client_id, secret))
                  for _ in range(count))
            )  # fmt: skip
        return [r.status_code for r in responses]

    assert asyncio.run(burst(FAILURE_BURST * 5, SECRET)) == [200] * (FAILURE_BURST * 5)
    statuses = asyncio.run(burst(FAILURE_BURST * 2, "wrong-secret"))
    assert statuses.count(401) == FAILURE_BURST
    assert statuses.count(429) == FAILURE_BURST


def test_token_requests_have_a_generous_limit(limited: Any) -> None:
    app: Limited = limited(token_requests_burst=5, token_requests_per_minute=60)
    client = add_client(app.services)
    for _ in range(5):
        assert guess(app.api, client.client_id, SECRET).status_code == 200
    assert assert_slow_down(guess(app.api, client.client_id, SECRET)) == 1
    app.ticker.advance(1)
    assert guess(app.api, client.client_id, SECRET).status_code == 200


def test_token_throttling_can_be_disabled(limited: Any) -> None:
    app: Limited = limited(token_failures_per_minute=0, token_requests_per_minute=0)
    client = add_client(app.services)
    for _ in range(FAILURE_BURST * 2):
        assert guess(app.api, client.client_id).status_code == 401


# --- API rate limits --------------------------------------------------------------------------


def rate_headers(response: Any) -> tuple[int, int, int]:
    h = response.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


def test_reads_over_the_limit_get_429_with_retry_after(limited: Any) -> None:
    app: Limited = limited(rate_limit_reads_per_second=2, rate_limit_reads_burst=4)
    headers = mint(app.services, add_client(app.services))
    seen = [rate_headers(app.api.get(BASE, headers=headers)) for _ in range(4)]
    assert seen == [(4, 3, 1), (4, 2, 1), (4, 1, 2), (4, 0, 2)]
    refused = app.api.get(BASE, headers=headers)
    assert_problem(refused, 429, "rate-limited")
    assert refused.headers["retry-after"] == "1"
    assert rate_headers(refused)[1] == 0
    app.ticker.advance(0.5)
    assert app.api.get(BASE, headers=headers).status_code == 200


def test_writes_over_the_limit_get_429_and_write_nothing(limited: Any) -> None:
    app: Limited = limited(rate_limit_writes_per_second=1, rate_limit_writes_burst=2)
    headers = mint(app.services, add_client(app.services))
    order = {"bandwidth": "1 Mbps", "locationId": LOC}
    for _ in range(2):
        assert app.api.post(BASE, json=order, headers=headers).status_code == 201
    before = snapshot(app.services)
    refused = app.api.post(BASE, json=order, headers=headers)
    assert_problem(refused, 429, "rate-limited")
    assert int(refused.headers["retry-after"]) == 1
    assert snapshot(app.services) == before
    # Reads have their own bucket: polling still works while writes wait.
    assert app.api.get(BASE, headers=headers).status_code == 200


def test_rate_limits_are_per_client(limited: Any) -> None:
    app: Limited = limited(rate_limit_reads_per_second=1, rate_limit_reads_burst=1)
    first = mint(app.services, add_client(app.services, name="First"))
    second = mint(app.services, add_client(app.services, name="Second"))
    assert app.api.get(BASE, headers=first).status_code == 200
    assert app.api.get(BASE, headers=first).status_code == 429
    assert app.api.get(BASE, headers=second).status_code == 200


def test_rate_limit_headers_are_on_refusals_after_authentication(
    world: World, limited: Any
) -> None:
    """A 404 or 403 costs the server too: it counts and says so."""
    app: Limited = limited()
    headers = mint(app.services, world.acme, "read")
    missing = app.api.get(f"{BASE}/{world.mallory_connection_id}", headers=headers)
    assert missing.status_code == 404 and rate_headers(missing)[0] > 0
    forbidden = app.api.post(BASE, json={}, headers=headers)
    assert forbidden.status_code == 403 and rate_headers(forbidden)[0] > 0
    anonymous = app.api.get(BASE)
    assert anonymous.status_code == 401 and "ratelimit-limit" not in anonymous.headers


def test_rate_limits_can_be_disabled(limited: Any) -> None:
    app: Limited = limited(rate_limit_reads_per_second=0, rate_limit_writes_per_second=0)
    headers = mint(app.services, add_client(app.services))
    response = app.api.get(BASE, headers=headers)
    assert response.status_code == 200 and "ratelimit-limit" not in response.headers
