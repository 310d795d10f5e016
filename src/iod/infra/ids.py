"""Opaque, URL-safe identifiers: 48 bits of milliseconds then 96 random bits.

Crockford base32 keeps the ASCII order, so ids sort by creation time.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_LENGTH = 29  # ceil(144 / 5)
ID_PATTERN = re.compile(r"^[a-z]{2,5}_[0-9a-hjkmnp-tv-z]{29}$")


def new_id(prefix: str, now_ms: int | None = None) -> str:
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = ((millis & ((1 << 48) - 1)) << 96) | secrets.randbits(96)
    chars = []
    for _ in range(_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def looks_like_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
