"""Kernel names derived from ids.

Network namespace names are file names (no 15-character limit), so they carry the ids
whole. Interface names are limited to 15 characters (IFNAMSIZ - 1), so the edge side of a
connection's veth pair is named by a hash of the connection id; the full id is stored in
the link's alias (IFLA_IFALIAS), which is how the driver tells whose link it is. When two ids
hash to the same name (about one chance in 2^60 per pair), the second takes the next
candidate: `attempt` salts the hash, and a lookup walks the candidates until it finds the
link whose alias is the id or a free name, so names never collide.
"""

from __future__ import annotations

import base64
import hashlib
import re

IFNAME_MAX = 15
MAX_ATTEMPTS = 4
_UNSAFE = re.compile(r"[^a-z0-9_.-]")


def edge_namespace(prefix: str, location_id: str) -> str:
    return f"{prefix}-edge-{_UNSAFE.sub('_', location_id.lower())}"


def customer_namespace(prefix: str, connection_id: str) -> str:
    return f"{prefix}-{connection_id}"


def connection_of_namespace(prefix: str, name: str) -> str | None:
    """The connection id a customer namespace belongs to, or None for any other name."""
    head = f"{prefix}-"
    if not name.startswith(head) or name.startswith(f"{prefix}-edge-"):
        return None
    return name[len(head) :]


def edge_ifname(prefix: str, connection_id: str, attempt: int = 0) -> str:
    digest = hashlib.sha256(f"{connection_id}/{attempt}".encode()).digest()
    text = base64.b32encode(digest).decode().lower()
    return prefix + text[: IFNAME_MAX - len(prefix)]
