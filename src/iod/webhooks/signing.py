"""Standard Webhooks signatures (https://www.standardwebhooks.com): secrets are `whsec_` and
the base64 of 32 random bytes; a signature is `v1,` and the base64 of
HMAC-SHA256(secret bytes, "<webhook-id>.<webhook-timestamp>.<body>")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of one message with one secret."""
    return sign_with_key(secret_bytes(secret), message_id, timestamp, body)


def sign_with_key(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`sign` with the secret's bytes (decoded once by a caller signing many messages)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of an attempt: one signature per secret, space-separated (the
    current secret first, then the previous one during a rotation's grace period)."""
    return headers_with_keys([secret_bytes(s) for s in secrets_], message_id, timestamp, body)


def headers_with_keys(
    keys: list[bytes], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """`headers` with the secrets' bytes."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign_with_key(key, message_id, timestamp, body) for key in keys
        ),
    }
