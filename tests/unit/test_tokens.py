"""RFC 9068 access tokens: issued, verified, and everything verify must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iod.auth.keys import KeyStore
from iod.auth.tokens import Principal, TokenInvalid, TokenService
from iod.infra.clock import FrozenClock
from iod.infra.db import Database
from iod.infra.ids import looks_like_id
from tests.conftest import thorough

ISSUER = "https://iod.example"
AUDIENCE = "https://iod.example/internet-on-demand"
TTL = 3600
CLIENT = "cli_0123456789abcdefghjkmnpqrst"
CUSTOMER = "cus_0123456789abcdefghjkmnpqrst"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def keys(sqlite_database: Database, clock: FrozenClock) -> KeyStore:
    store = KeyStore(sqlite_database, clock)
    store.ensure()
    return store


@pytest.fixture
def tokens(keys: KeyStore, clock: FrozenClock) -> TokenService:
    return TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)


@pytest.fixture
def token(tokens: TokenService) -> str:
    return tokens.issue(CLIENT, CUSTOMER, ["read", "write"])


def good_claims(clock: FrozenClock, **overrides: Any) -> dict[str, Any]:
    iat = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": CLIENT,
        "client_id": CLIENT,
        "customer_id": CUSTOMER,
        "iat": iat,
        "nbf": iat,
        "exp": iat + TTL,
        "jti": "jti_0123456789abcdefghjkmnpqrst",
        "scope": "read write",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(keys: KeyStore, claims: dict[str, Any], **header: Any) -> str:
    """Signed with the service's own key: only the content under test is wrong."""
    key = keys.signing_key
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)


# -- issue and verify ---------------------------------------------------------------------


def test_issue_then_verify(tokens: TokenService, token: str, clock: FrozenClock) -> None:
    principal = tokens.verify(token)
    assert principal == Principal(
        client_id=CLIENT,
        customer_id=CUSTOMER,
        scopes=frozenset({"read", "write"}),
        expires_at=float(int(clock.now().timestamp()) + TTL),
    )


@pytest.mark.parametrize("scopes", [[], ["read"], ["write"], ["read", "write"]])
def test_scopes_round_trip(tokens: TokenService, scopes: list[str]) -> None:
    principal = tokens.verify(tokens.issue(CLIENT, CUSTOMER, scopes))
    assert principal.scopes == frozenset(scopes)


def test_principal_is_per_token(tokens: TokenService) -> None:
    a = tokens.verify(tokens.issue("cli_a", "cus_a", ["read"]))
    b = tokens.verify(tokens.issue("cli_b", "cus_b", ["write"]))
    assert (a.client_id, a.customer_id, a.scopes) == ("cli_a", "cus_a", frozenset({"read"}))
    assert (b.client_id, b.customer_id, b.scopes) == ("cli_b", "cus_b", frozenset({"write"}))


def test_header_is_an_rfc9068_access_token_header(token: str, keys: KeyStore) -> None:
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    kids = [k["kid"] for k in keys.jwks()["keys"]]
    assert header["kid"] in kids


def test_jwks_publishes_only_public_ec_keys(keys: KeyStore) -> None:
    published = keys.jwks()["keys"]
    assert len(published) >= 1
    for jwk in published:
        assert jwk["kty"] == "EC"
        assert jwk["crv"] == "P-256"
        assert jwk["alg"] == "ES256"
        assert jwk["use"] == "sig"
        assert {"x", "y", "kid"} <= set(jwk)
        assert "d" not in jwk  # never the private part


def test_claims_are_rfc9068(token: str, clock: FrozenClock) -> None:
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(clock.now().timestamp())
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == CLIENT
    assert claims["client_id"] == CLIENT
    assert claims["customer_id"] == CUSTOMER
    assert claims["iat"] == now
    assert claims["exp"] == now + TTL
    assert claims["scope"] == "read write"
    assert isinstance(claims["jti"], str) and looks_like_id(claims["jti"])
    assert {"iss", "aud", "sub", "client_id", "iat", "exp", "jti", "scope"} <= set(claims)


def test_each_token_has_its_own_jti(tokens: TokenService) -> None:
    jtis = {
        jwt.decode(tokens.issue(CLIENT, CUSTOMER, ["read"]), options={"verify_signature": False})[
            "jti"
        ]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_published_jwks_verifies_the_token(token: str, keys: KeyStore) -> None:
    """A resource server with only the JWKS can check the signature."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys.jwks()["keys"] if k["kid"] == kid)
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == CLIENT


def test_typ_application_at_jwt_is_accepted(keys: KeyStore, tokens: TokenService, clock) -> None:
    token = sign(keys, good_claims(clock), typ="application/at+jwt")
    assert tokens.verify(token).client_id == CLIENT


def test_a_second_service_over_the_same_keys_verifies(
    keys: KeyStore, clock: FrozenClock, token: str
) -> None:
    other = TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=60)
    assert other.verify(token).customer_id == CUSTOMER


# -- time ---------------------------------------------------------------------------------


def test_token_expires(tokens: TokenService, token: str, clock: FrozenClock) -> None:
    clock.advance(timedelta(seconds=TTL + 1))
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(token)


def test_token_valid_until_exp(tokens: TokenService, clock: FrozenClock) -> None:
    token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    clock.advance(timedelta(seconds=TTL - 1))
    assert tokens.verify(token).client_id == CLIENT
    clock.advance(timedelta(seconds=1))  # now == exp
    with pytest.raises(TokenInvalid):
        tokens.verify(token)


def test_token_expired_exactly_at_exp_when_not_cached(
    tokens: TokenService, clock: FrozenClock
) -> None:
    token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    clock.advance(timedelta(seconds=TTL))
    with pytest.raises(TokenInvalid):
        tokens.verify(token)


def test_cached_token_still_expires_by_the_clock(
    tokens: TokenService, token: str, clock: FrozenClock
) -> None:
    first = tokens.verify(token)
    assert tokens.verify(token) == first  # served again, from the cache or not
    clock.advance(timedelta(seconds=TTL + 1))
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(token)
    # And it stays refused.
    with pytest.raises(TokenInvalid):
        tokens.verify(token)


def test_cache_eviction_keeps_answers_right(keys: KeyStore, clock: FrozenClock) -> None:
    small = TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=TTL, cache_size=2)
    issued = [small.issue(f"cli_{i}", CUSTOMER, ["read"]) for i in range(5)]
    for _ in range(2):
        for i, token in enumerate(issued):
            assert small.verify(token).client_id == f"cli_{i}"
    clock.advance(timedelta(seconds=TTL))
    for token in issued:
        with pytest.raises(TokenInvalid):
            small.verify(token)
    fresh = small.issue("cli_new", CUSTOMER, ["write"])
    assert small.verify(fresh).scopes == frozenset({"write"})


def test_token_from_the_future_is_refused(keys: KeyStore, clock: FrozenClock) -> None:
    ahead = FrozenClock(clock.now() + timedelta(minutes=5))
    issuer = TokenService(keys, ahead, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    verifier = TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    with pytest.raises(TokenInvalid, match="future"):
        verifier.verify(issuer.issue(CLIENT, CUSTOMER, ["read"]))


def test_small_clock_skew_is_tolerated(keys: KeyStore, clock: FrozenClock) -> None:
    ahead = FrozenClock(clock.now() + timedelta(seconds=30))
    issuer = TokenService(keys, ahead, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    verifier = TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    assert verifier.verify(issuer.issue(CLIENT, CUSTOMER, ["read"])).client_id == CLIENT


# -- who issued it, for whom --------------------------------------------------------------


def test_wrong_audience(keys: KeyStore, clock: FrozenClock, tokens: TokenService) -> None:
    other = TokenService(keys, clock, issuer=ISSUER, audience="https://elsewhere", ttl=TTL)
    with pytest.raises(TokenInvalid):
        tokens.verify(other.issue(CLIENT, CUSTOMER, ["read"]))


def test_wrong_issuer(keys: KeyStore, clock: FrozenClock, tokens: TokenService) -> None:
    other = TokenService(keys, clock, issuer="https://evil.example", audience=AUDIENCE, ttl=TTL)
    with pytest.raises(TokenInvalid):
        tokens.verify(other.issue(CLIENT, CUSTOMER, ["read"]))


def test_cache_is_not_shared_across_audiences(
    keys: KeyStore, clock: FrozenClock, tokens: TokenService, token: str
) -> None:
    tokens.verify(token)  # cached by the first service
    other = TokenService(keys, clock, issuer=ISSUER, audience="https://elsewhere", ttl=TTL)
    with pytest.raises(TokenInvalid):
        other.verify(token)


# -- tampering and forgery ----------------------------------------------------------------


def test_tampered_signature(tokens: TokenService, token: str) -> None:
    head, body, signature = token.split(".")
    raw = bytearray(unb64url(signature))
    raw[10] ^= 0x01
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{head}.{body}.{b64url(bytes(raw))}")


def test_tampered_payload(tokens: TokenService, token: str) -> None:
    head, body, signature = token.split(".")
    claims = json.loads(unb64url(body))
    claims["scope"] = "read write admin"
    claims["customer_id"] = "cus_someoneelse"
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{head}.{b64url_json(claims)}.{signature}")


def test_truncated_signature(tokens: TokenService, token: str) -> None:
    head, body, signature = token.split(".")
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{head}.{body}.{signature[:-8]}")
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{head}.{body}.")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(tokens: TokenService, keys: KeyStore, clock: FrozenClock, alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": keys.signing_key.kid}
    forged = f"{b64url_json(header)}.{b64url_json(good_claims(clock))}."
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_signed_by_another_key_with_a_made_up_kid(tokens: TokenService, clock: FrozenClock) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        good_claims(clock),
        stranger,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": "made-up-kid"},
    )
    with pytest.raises(TokenInvalid, match="unknown key"):
        tokens.verify(forged)


def test_signed_by_another_key_claiming_our_kid(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        good_claims(clock),
        stranger,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": keys.signing_key.kid},
    )
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_token_without_kid(tokens: TokenService, clock: FrozenClock, keys: KeyStore) -> None:
    forged = jwt.encode(
        good_claims(clock),
        keys.signing_key.private_key,
        algorithm="ES256",
        headers={"typ": "at+jwt"},
    )
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_hs256_token(tokens: TokenService, keys: KeyStore, clock: FrozenClock) -> None:
    forged = jwt.encode(
        good_claims(clock),
        "a-shared-secret-that-is-long-enough-for-hs256!",
        algorithm="HS256",
        headers={"typ": "at+jwt", "kid": keys.signing_key.kid},
    )
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_hs256_with_the_public_key_as_secret(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock
) -> None:
    """The classic algorithm confusion: HMAC keyed with the published public key."""
    public_pem = keys.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": keys.signing_key.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(good_claims(clock))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenInvalid):
        tokens.verify(f"{signing_input}.{b64url(mac)}")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt2", "application/jwt", ""])
def test_token_that_is_not_an_access_token(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock, typ: str
) -> None:
    # An empty typ makes PyJWT leave the header out entirely.
    with pytest.raises(TokenInvalid):
        tokens.verify(sign(keys, good_claims(clock), typ=typ))


def test_token_without_typ(tokens: TokenService, keys: KeyStore, clock: FrozenClock) -> None:
    key = keys.signing_key
    header = {"alg": "ES256", "kid": key.kid}
    # Built by hand so no library adds a typ.
    signing_input = f"{b64url_json(header)}.{b64url_json(good_claims(clock))}"
    signature = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).sign(
        signing_input.encode(), key.private_key
    )
    token = f"{signing_input}.{b64url(signature)}"
    assert "typ" not in jwt.get_unverified_header(token)
    with pytest.raises(TokenInvalid, match="not an access token"):
        tokens.verify(token)


@pytest.mark.parametrize("typ", [123, None, ["at+jwt"]], ids=["int", "null", "list"])
def test_token_with_non_string_typ(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock, typ: Any
) -> None:
    header = {"alg": "ES256", "typ": typ, "kid": keys.signing_key.kid}
    forged = f"{b64url_json(header)}.{b64url_json(good_claims(clock))}.AAAA"
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


@pytest.mark.parametrize(
    "missing", ["iss", "aud", "sub", "client_id", "exp", "iat", "jti", "customer_id"]
)
def test_signed_token_missing_a_claim(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock, missing: str
) -> None:
    with pytest.raises(TokenInvalid):
        tokens.verify(sign(keys, good_claims(clock, **{missing: None})))


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": 2e9},
        {"exp": "1893459600"},
        {"iat": 1.5},
        {"customer_id": 42},
        {"scope": ["read", "write"]},
    ],
    ids=["float-exp", "string-exp", "float-iat", "int-customer", "list-scope"],
)
def test_signed_token_with_badly_typed_claims(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock, overrides: dict[str, Any]
) -> None:
    with pytest.raises(TokenInvalid):
        tokens.verify(sign(keys, good_claims(clock, **overrides)))


def test_signed_token_already_expired(
    tokens: TokenService, keys: KeyStore, clock: FrozenClock
) -> None:
    now = int(clock.now().timestamp())
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(sign(keys, good_claims(clock, iat=now - 7200, nbf=now - 7200, exp=now - 1)))


# -- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "garbage",
        "Bearer abc",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d.e",
        "eyJ.eyJ.sig",
        "%%%.%%%.%%%",
        "é.ü.ß",
        "\x00\x01\x02",
        f"{b64url(b'not json')}.{b64url_json({})}.AAAA",
        f"{b64url_json([1, 2, 3])}.{b64url_json({})}.AAAA",
        f"{b64url_json('at+jwt')}.{b64url_json({})}.AAAA",
        f"{b64url_json({'alg': 'ES256', 'typ': 'at+jwt', 'kid': 7})}.{b64url_json({})}.AAAA",
        f"{b64url_json({'alg': 'ES256', 'typ': 'at+jwt'})}.{b64url(b'not json')}.AAAA",
        b64url(bytes([0xFF, 0xFE])) + "." + b64url_json({}) + ".AAAA",
        "x" * 10_000,
    ],
)
def test_garbage(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        tokens.verify(garbage)


@settings(
    max_examples=thorough(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(max_size=300))
def test_arbitrary_text_is_refused(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        tokens.verify(garbage)


@settings(
    max_examples=thorough(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "crit", "b64", "x5u", "jku"]),
        st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.none()),
        max_size=4,
    ),
    payload=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.text(max_size=10), st.integers(), st.none()),
        max_size=5,
    ),
    signature=st.binary(max_size=80),
)
def test_arbitrary_structured_tokens_are_refused(
    tokens: TokenService, header: dict[str, Any], payload: dict[str, Any], signature: bytes
) -> None:
    header = {**header, "typ": "at+jwt"}
    forged = f"{b64url_json(header)}.{b64url_json(payload)}.{b64url(signature)}"
    with pytest.raises(TokenInvalid):
        tokens.verify(forged)


def test_a_cached_token_is_refused_when_the_clock_steps_back(
    tokens: TokenService, clock: FrozenClock
) -> None:
    """The signing service caches what it issued; a clock stepped back by more than the
    leeway refuses it as a verified token would be refused."""
    token = tokens.issue(CLIENT, CUSTOMER, ["read"])
    assert tokens.verify(token).client_id == CLIENT  # from the cache
    clock.advance(timedelta(seconds=-30))  # within the leeway: accepted
    assert tokens.verify(token).client_id == CLIENT
    clock.advance(timedelta(minutes=-5))
    with pytest.raises(TokenInvalid, match="future"):
        tokens.verify(token)
    clock.advance(timedelta(minutes=6))
    assert tokens.verify(token).client_id == CLIENT


def test_a_token_verified_once_is_refused_from_the_cache_when_the_clock_steps_back(
    keys: KeyStore, clock: FrozenClock, tokens: TokenService
) -> None:
    other = TokenService(keys, clock, issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    token = other.issue(CLIENT, CUSTOMER, ["read"])
    assert tokens.verify(token).client_id == CLIENT  # signature checked, then cached
    clock.advance(timedelta(minutes=-5))
    with pytest.raises(TokenInvalid, match="future"):
        tokens.verify(token)
