"""Opaque, URL-safe identifiers: 48 bits of milliseconds then 96 random bits.

Crockford base32 keeps the ASCII order, so ids sort by creation time.

The 144 bits are 29 base32 digits (the first one carries a leading zero bit): the first 9
are the milliseconds' top 44 bits, the 10th their low 4 bits then the first random bit, the
last 19 the other 95 random bits. So the random digits are drawn as digits: each random
byte gives one (its low 5 bits, or for the 10th its lowest bit), through `bytes.translate`,
and `new_ids` draws the random bytes of many ids with one `os.urandom` call (a planner
batch's thousands of changes, docs/performance.md issue 17).
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_LENGTH = 29  # ceil(144 / 5)
_RANDOM_DIGITS = 19  # the last 95 random bits
ID_PATTERN = re.compile(r"^[a-z]{2,5}_[0-9a-hjkmnp-tv-z]{29}$")

# A random byte -> a random digit (its low 5 bits).
_DIGIT = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
# For each value of the milliseconds' low 4 bits: a random byte -> the 10th digit.
_TENTH = [bytes(ord(_ALPHABET[(low << 1) | (b & 1)]) for b in range(256)) for low in range(16)]


def _head(millis: int) -> str:
    """The first 9 digits: the milliseconds' top 44 bits (48-bit milliseconds)."""
    value = (millis & ((1 << 48) - 1)) >> 4
    chars = []
    for _ in range(9):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    return new_ids(prefix, 1, now_ms)[0]


def new_ids(prefix: str, count: int, now_ms: int | None = None) -> list[str]:
    """`count` ids as `new_id` makes them, with one clock reading and one `os.urandom`
    call: distinct (96 random bits each), each sorting after every id of an earlier
    millisecond."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    head = f"{prefix}_{_head(millis)}"
    pool = os.urandom((1 + _RANDOM_DIGITS) * count)
    tenth = pool[:count].translate(_TENTH[millis & 15]).decode()
    rest = pool[count:].translate(_DIGIT).decode()
    return [
        f"{head}{tenth[index]}{rest[start : start + _RANDOM_DIGITS]}"
        for index, start in enumerate(range(0, _RANDOM_DIGITS * count, _RANDOM_DIGITS))
    ]


def looks_like_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
