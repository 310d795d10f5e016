"""Client secrets are kept only as argon2 hashes."""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps an unknown client id as slow as a wrong secret; made on
    first use, not at import, so commands that never verify do not pay for it."""
    return _hasher.hash(secrets.token_urlsafe(16))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash or _dummy_hash(), secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False
