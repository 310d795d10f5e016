"""Endpoint secrets at rest. They must be read back to sign, so they cannot be hashed: with a
key encryption key (IOD_KEY_ENCRYPTION_KEY[_FILE], as for the signing keys) they are stored
AES-256-GCM encrypted (`enc1:` and the base64 of nonce and ciphertext), the key derived from
the key encryption key with HKDF-SHA256; without one they are stored as they are, like the
signing keys' PEM (the data directory is private: iod.infra.secure)."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENCRYPTED = "enc1:"
_INFO = b"iod webhook endpoint secrets v1"


class SecretUnreadable(Exception):
    """A stored secret is encrypted and the configured key cannot open it."""


def _aead(key_encryption_key: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        key_encryption_key
    )
    return AESGCM(key)


def seal(secret: str, key_encryption_key: bytes | None, endpoint_id: str) -> str:
    if key_encryption_key is None:
        return secret
    nonce = os.urandom(12)
    sealed = _aead(key_encryption_key).encrypt(nonce, secret.encode(), endpoint_id.encode())
    return ENCRYPTED + base64.b64encode(nonce + sealed).decode()


def open_secret(stored: str, key_encryption_key: bytes | None, endpoint_id: str) -> str:
    if not stored.startswith(ENCRYPTED):
        return stored
    if key_encryption_key is None:
        raise SecretUnreadable(
            f"webhook endpoint {endpoint_id}'s secret is encrypted: set "
            "IOD_KEY_ENCRYPTION_KEY_FILE (or IOD_KEY_ENCRYPTION_KEY) to the key it was sealed with"
        )
    raw = base64.b64decode(stored[len(ENCRYPTED) :])
    try:
        return _aead(key_encryption_key).decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()
    except InvalidTag as exc:
        raise SecretUnreadable(
            f"webhook endpoint {endpoint_id}'s secret does not open with the configured key "
            "encryption key"
        ) from exc
