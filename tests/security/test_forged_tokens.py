"""API2 Broken Authentication: forged, altered, stale or revoked access tokens.

Each forgery is its own test. Every one is refused with 401 `invalid_token` on a read and on
a write, and the write changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iod.customers import service as customers
from iod.infra.ids import new_id
from tests.security.conftest import BASE, World, assert_problem, bearer, snapshot


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def claims(world: World, **changes: Any) -> dict[str, Any]:
    """What the token endpoint would put in Acme's token, with `changes`."""
    now = int(world.services.clock.now().timestamp())
    base = {
        "iss": world.services.tokens.issuer,
        "aud": world.services.tokens.audience,
        "sub": world.acme.client_id,
        "client_id": world.acme.client_id,
        "customer_id": world.acme.customer_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": new_id("jti"),
        "scope": "read write",
    }
    return {**base, **changes}


def sign(world: World, payload: dict[str, Any], **header: Any) -> str:
    """Signed with the service's real key: only the claims are wrong."""
    key = world.services.keys.signing_key
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(payload, key.private_key, algorithm="ES256", headers=headers)


def assert_refused(world: World, token: str) -> None:
    headers = bearer(token)
    before = snapshot(world.services)
    read = world.api.get(f"{BASE}/{world.connection_id}", headers=headers)
    write = world.api.put(
        f"{BASE}/{world.connection_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers
    )
    for response in (read, write):
        assert_problem(response, 401, "unauthorized")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert world.acme.customer_id not in response.text
    assert snapshot(world.services) == before


def test_the_genuine_token_works(world: World) -> None:
    """The control: the same claims, properly signed, are accepted."""
    token = sign(world, claims(world))
    assert world.api.get(f"{BASE}/{world.connection_id}", headers=bearer(token)).status_code == 200


def test_alg_none_is_refused(world: World) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": world.services.keys.signing_key.kid}
    assert_refused(world, f"{b64json(header)}.{b64json(claims(world))}.")


def test_hs256_signed_with_the_public_key_is_refused(world: World) -> None:
    """Algorithm confusion: an HMAC keyed with the published public key."""
    kid = world.services.keys.signing_key.kid
    public = world.services.keys.public_key(kid)
    assert public is not None
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}."
    signing_input += b64json(claims(world))
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert_refused(world, f"{signing_input}.{b64url(mac)}")


def test_unknown_kid_is_refused(world: World) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        claims(world), stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": "kid-x"}
    )
    assert_refused(world, token)


def test_another_key_under_the_real_kid_is_refused(world: World) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    kid = world.services.keys.signing_key.kid
    token = jwt.encode(
        claims(world), stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": kid}
    )
    assert_refused(world, token)


def test_expired_token_is_refused(world: World) -> None:
    now = int(world.services.clock.now().timestamp())
    assert_refused(world, sign(world, claims(world, iat=now - 7200, nbf=now - 7200, exp=now)))


def test_future_nbf_is_refused(world: World) -> None:
    now = int(world.services.clock.now().timestamp())
    assert_refused(world, sign(world, claims(world, nbf=now + 3600, exp=now + 7200)))


def test_wrong_issuer_is_refused(world: World) -> None:
    assert_refused(world, sign(world, claims(world, iss="https://evil.example")))


def test_wrong_audience_is_refused(world: World) -> None:
    assert_refused(world, sign(world, claims(world, aud="another-api")))


def test_tampered_payload_is_refused(world: World) -> None:
    """Mallory's genuine read token, with her customer swapped for Acme's and `write` added:
    the signature no longer matches."""
    genuine = sign(
        world,
        claims(
            world,
            sub=world.mallory.client_id,
            client_id=world.mallory.client_id,
            customer_id=world.mallory.customer_id,
            scope="read",
        ),
    )
    head, _, signature = genuine.split(".")
    forged_claims = jwt.decode(genuine, options={"verify_signature": False})
    forged_claims.update(customer_id=world.acme.customer_id, scope="read write")
    assert_refused(world, f"{head}.{b64json(forged_claims)}.{signature}")


@pytest.mark.parametrize("typ", ["JWT", "id_token"])
def test_token_that_is_not_an_access_token_is_refused(world: World, typ: str) -> None:
    assert_refused(world, sign(world, claims(world), typ=typ))


def test_disabled_clients_token_is_refused(world: World) -> None:
    token = sign(world, claims(world))
    assert world.api.get(BASE, headers=bearer(token)).status_code == 200
    with world.services.db.write() as session:
        customers.set_client_enabled(
            session, world.services.clock, world.acme.client_id, enabled=False
        )
    assert_refused(world, token)
