"""A token's identity is its `jti` (issue 12, item 6), never its string: an ECDSA signature
(r, s) has a twin (r, n - s) that verifies as well, so one token has two valid spellings.
Any revocation or replay list must key on the jti, which both spellings share."""

from __future__ import annotations

import base64

from iod.auth.keys import KeyStore
from iod.auth.tokens import TokenService
from iod.infra.clock import FrozenClock
from iod.infra.db import Database

# The order of the P-256 group (SEC 2, secp256r1 "n").
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def twin(token: str) -> str:
    """The same token with its ECDSA signature's malleable twin (JWS ES256: r || s)."""
    head, payload, signature = token.split(".")
    raw = _unb64(signature)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{head}.{payload}.{_b64(r + (P256_ORDER - s).to_bytes(32, 'big'))}"


def test_a_tokens_identity_is_its_jti_not_its_string(
    database: Database, clock: FrozenClock
) -> None:
    keys = KeyStore(database, clock)
    keys.ensure()
    tokens = TokenService(keys, clock, issuer="http://iod", audience="iod", ttl=600)
    token = tokens.issue("cli_x", "cus_x", ["read"])
    other = twin(token)

    assert other != token
    first, second = tokens.verify(token), tokens.verify(other)  # both spellings verify
    assert first.jti and first.jti.startswith("jti_")
    assert first.jti == second.jti  # one identity: what a revocation list must hold
    # Two tokens issued to the same client are two identities.
    assert tokens.verify(tokens.issue("cli_x", "cus_x", ["read"])).jti != first.jti
