"""Signing key rotation and retirement, on SQLite and PostgreSQL: the new key is published
before it signs, the old one verifies until its tokens expire, retirement waits for that."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.auth import keys
from iod.auth.keys import KeyStore
from iod.auth.tokens import TokenInvalid, TokenService
from iod.infra.clock import FrozenClock
from iod.infra.errors import NotFound

CLIENT = "cli_0123456789abcdefghjkmnpqrst"
CUSTOMER = "cus_0123456789abcdefghjkmnpqrst"
TTL = 3600
SOON = timedelta(seconds=10)


def kid_of(token: str) -> str:
    import jwt

    return str(jwt.get_unverified_header(token)["kid"])


def rotate(services: Services, activate_in: timedelta = SOON) -> str:
    with services.db.write() as session:
        return keys.rotate(session, services.clock.now(), activate_in).kid


def states(services: Services) -> dict[str, str]:
    with services.db.read() as session:
        return {i.kid: i.state for i in keys.describe(session, services.clock.now(), TTL)}


def process(services: Services, refresh: float = 0.0) -> tuple[KeyStore, TokenService]:
    """Another API process on the same database: its own key cache and token cache."""
    store = KeyStore(services.db, services.clock, refresh_seconds=refresh)
    store.ensure()
    tokens = TokenService(store, services.clock, issuer="https://iod", audience="iod", ttl=TTL)
    return store, tokens


def test_rotation_publishes_first_then_signs_and_the_old_key_keeps_verifying(
    services: Services, clock: FrozenClock
) -> None:
    store, tokens = process(services)
    old_kid = store.signing_key.kid
    old_token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    new_kid = rotate(services)
    assert states(services) == {old_kid: "signing", new_kid: "next"}
    # Published at once (JWKS), not yet signing.
    assert [k["kid"] for k in store.jwks()["keys"]] == [old_kid, new_kid]
    assert kid_of(tokens.issue(CLIENT, CUSTOMER, ["read"])) == old_kid

    clock.advance(SOON)
    new_token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    assert kid_of(new_token) == new_kid
    assert states(services) == {old_kid: "verifying", new_kid: "signing"}
    _, other = process(services)
    assert other.verify(new_token).kid == new_kid
    assert other.verify(old_token).kid == old_kid
    assert tokens.verify(old_token).client_id == CLIENT


def test_retirement_waits_until_the_old_keys_tokens_have_expired(
    services: Services, clock: FrozenClock
) -> None:
    store, tokens = process(services)
    old_kid = store.signing_key.kid
    new_kid = rotate(services)
    with services.db.write() as session, pytest.raises(keys.KeyInUse, match="next key"):
        keys.retire(session, clock.now(), new_kid, TTL)
    with services.db.write() as session, pytest.raises(keys.KeyInUse, match="rotate"):
        keys.retire(session, clock.now(), old_kid, TTL)
    clock.advance(SOON - timedelta(seconds=1))
    last_old_token = tokens.issue(CLIENT, CUSTOMER, ["read"])  # the old key's last token
    assert kid_of(last_old_token) == old_kid
    clock.advance(timedelta(seconds=1))
    with services.db.write() as session, pytest.raises(keys.KeyInUse, match="may be valid"):
        keys.retire(session, clock.now(), old_kid, TTL)

    # Its last token expires one TTL after the switch; retirement allows clock skew on top.
    clock.advance(timedelta(seconds=TTL))
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(last_old_token)
    with services.db.write() as session, pytest.raises(keys.KeyInUse):
        keys.retire(session, clock.now(), old_kid, TTL)
    clock.advance(keys.CLOCK_LEEWAY)
    assert states(services)[old_kid] == "retirable"
    with services.db.write() as session:
        keys.retire(session, clock.now(), old_kid, TTL)
    assert states(services) == {new_kid: "signing"}
    assert [k["kid"] for k in process(services)[0].jwks()["keys"]] == [new_kid]
    with services.db.write() as session, pytest.raises(NotFound):
        keys.retire(session, clock.now(), old_kid, TTL)


def test_a_forced_retirement_ends_the_keys_tokens_even_cached_ones(
    services: Services, clock: FrozenClock
) -> None:
    store, tokens = process(services)
    old_kid = store.signing_key.kid
    old_token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    assert tokens.verify(old_token).kid == old_kid  # now in the verified-token cache
    clock.advance(timedelta(minutes=1))
    rotate(services, timedelta(0))  # a compromised key: the new one signs at once
    with services.db.write() as session:
        keys.retire(session, clock.now(), old_kid, TTL, force=True)
    # refresh_seconds=0: this process reloads on every use, so the retirement is seen at once.
    with pytest.raises(TokenInvalid, match="unknown key"):
        tokens.verify(old_token)
    assert kid_of(tokens.issue(CLIENT, CUSTOMER, ["read"])) != old_kid


def test_another_process_sees_a_rotation_within_its_refresh_interval(services: Services) -> None:
    """A process reloads the keys when its copy is older than refresh_seconds; a rotation
    activates two intervals later, so the process knows the key before any token uses it."""
    refresh = 0.2
    store, tokens = process(services, refresh=refresh)
    _, signer = process(services, refresh=refresh)
    before = store.signing_key.kid
    new_kid = rotate(services, timedelta(seconds=2 * refresh))
    time.sleep(refresh * 1.5)  # its copy is now older than the interval
    assert new_kid in {k["kid"] for k in store.jwks()["keys"]}
    assert store.signing_key.kid == before  # FrozenClock: the activation time has not come
    # Activation times are whole seconds, rounded up: 0.4 s after 00:00:00 is 00:00:01.
    services.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    token = signer.issue(CLIENT, CUSTOMER, ["read"])
    assert kid_of(token) == new_kid
    assert tokens.verify(token).kid == new_kid


def test_jwks_endpoint_and_tokens_follow_a_rotation(
    api: TestClient, services: Services, clock: FrozenClock, tenant
) -> None:
    from tests.conftest import get_token

    services.keys.refresh_seconds = 0  # this test moves a frozen clock, not real time
    old_token = get_token(api, tenant)
    new_kid = rotate(services)
    published = [k["kid"] for k in api.get("/.well-known/jwks.json").json()["keys"]]
    assert published == [kid_of(old_token), new_kid]
    clock.advance(SOON)
    new_token = get_token(api, tenant)
    assert kid_of(new_token) == new_kid
    for token in (old_token, new_token):
        response = api.get(
            "/internet-on-demand/connections", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text


def test_the_first_key_is_created_once_and_signs_from_creation(services: Services) -> None:
    first, _ = process(services)
    second, _ = process(services)
    assert first.signing_key.kid == second.signing_key.kid
    assert list(states(services).values()) == ["signing"]
