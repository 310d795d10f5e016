"""Standard Webhooks signatures, for receivers of Internet On-Demand webhooks.

    from iod.client import webhooks

    event = webhooks.verify(request_body, request_headers, "whsec_…")  # or raises

`verify` checks the `webhook-signature` header (any of its space-separated `v1,` signatures
may match: during a secret rotation there are two) against HMAC-SHA256 of
`<webhook-id>.<webhook-timestamp>.<body>` with the secret, and that the timestamp is within
`tolerance` seconds of now (replayed old messages are refused). It returns the decoded body.
Pure standard library: no server, no HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
import time
from collections.abc import Mapping
from typing import Any

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300


class WebhookVerificationError(ValueError):
    """The message is not signed with this secret, or too old or too new, or malformed."""


def new_secret() -> str:
    """A new `whsec_` secret (32 random bytes), e.g. for `iod webhooks listen`."""
    return PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError("the secret is not `whsec_` and base64") from exc


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str | bytes, message_id: str, timestamp: int, body: bytes | str) -> str:
    """`v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`."""
    signed = f"{message_id}.{timestamp}.".encode() + _as_bytes(body)
    return (
        "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
    )


def headers(
    secret: str | bytes, message_id: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of a signed message (what the service sends)."""
    when = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(when),
        "webhook-signature": sign(secret, message_id, when, body),
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """The decoded JSON body if one of the signatures is the secret's and the timestamp is
    within `tolerance` seconds of `now`; else WebhookVerificationError. Pass the body exactly
    as received (bytes), before any JSON parsing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not message_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {int(current - timestamp)} s away from now "
            f"(more than {tolerance:g} s)"
        )
    expected = sign(secret, message_id, timestamp, body).split(",", 1)[1].encode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            try:
                return json.loads(_as_bytes(body))
            except ValueError as exc:
                raise WebhookVerificationError("the body is not JSON") from exc
    raise WebhookVerificationError("no signature matches this secret")
