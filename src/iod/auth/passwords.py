"""Client secrets are kept only as hashes: a keyed hash (HMAC-SHA-256 with a server-side key)
for the secrets the server generates, argon2 for anything a person chooses.

A generated secret carries 256 random bits, so a slow hash adds nothing against guessing it
(2^256 tries either way); it only cost ~170 CPU ms per token request. The keyed hash costs
microseconds and makes the stored value useless to whoever has the database without the key,
which lives in a file (IOD_SECRET_HASH_KEY_FILE), never in the database. Secrets stored as
argon2 before this change are verified with argon2 and upgraded to the keyed hash at their next
successful use (`Verified.upgrade`), in the same column: the scheme is the value's prefix.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = structlog.get_logger("iod.auth.passwords")

SCHEME = "hmac-sha256"
KEY_BYTES = 32
# token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
GENERATED_LENGTH = 43
_URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")

_argon2 = PasswordHasher()


class SecretHashKeyError(Exception):
    """The key file cannot be read or created, or holds no usable key; the message says why."""


@cache
def _dummy_argon2_hash() -> str:
    """Made on first use, not at import, so commands that never verify do not pay for it."""
    return _argon2.hash(secrets.token_urlsafe(16))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def is_generated(secret: str) -> bool:
    """Shaped like a secret of `new_secret()` (or longer): 256 bits or more if it is random.

    Only such secrets are stored with the keyed hash; anything shorter, or with characters
    `new_secret()` never produces, is treated as chosen by a person and stays with argon2."""
    return len(secret) >= GENERATED_LENGTH and all(c in _URLSAFE for c in secret)


def is_slow_hash(stored: str | None) -> bool:
    """An argon2 hash: its verification costs ~100 ms of CPU (a keyed one, microseconds)."""
    return stored is not None and stored.startswith("$argon2")


def hash_password(password: str) -> str:
    """argon2id, for anything a person chooses."""
    return _argon2.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """argon2id; an unknown account (None) costs the same time as a wrong password."""
    try:
        return _argon2.verify(password_hash or _dummy_argon2_hash(), password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Verified:
    ok: bool
    # When the stored hash was an argon2 hash of a generated secret: the keyed hash to store
    # in its place (the caller writes it, only if the column still holds the old value).
    upgrade: str | None = None


NO = Verified(False)


def key_id_of(stored: str | None) -> str | None:
    """The key id a keyed hash names (`hmac-sha256$<key id>$…`), None for any other value."""
    if stored is None or not stored.startswith(SCHEME + "$") or stored.count("$") != 2:
        return None
    return stored.split("$", 2)[1]


class SecretHasher:
    """Hashes and verifies client secrets with one server-side key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise SecretHashKeyError(f"a secret hash key has at least {KEY_BYTES} bytes")
        self._key = key
        # Names the key in each stored hash, so a process given another key file says so
        # instead of refusing every secret silently. An HMAC output: it tells nothing of the key.
        self.key_id = hmac.new(key, b"iod secret hash key id", hashlib.sha256).hexdigest()[:12]
        self._prefix = f"{SCHEME}${self.key_id}$"
        self._dummy = self._digest(secrets.token_urlsafe(32))
        self._warned: set[str] = set()

    def _digest(self, secret: str) -> bytes:
        return hmac.digest(self._key, secret.encode("utf-8", "surrogatepass"), "sha256")

    def hash(self, secret: str) -> str:
        """The keyed hash of a generated secret, argon2 for anything else."""
        if not is_generated(secret):
            return hash_password(secret)
        encoded = base64.urlsafe_b64encode(self._digest(secret)).rstrip(b"=").decode("ascii")
        return self._prefix + encoded

    def verify(self, stored: str | None, secret: str) -> Verified:
        """Whether `secret` matches `stored`; None (no such client) costs a keyed hash, like a
        wrong secret of a client whose hash is keyed: nearly every one once they are upgraded."""
        if stored is None or not stored.startswith(SCHEME + "$"):
            if stored is not None and stored.startswith("$argon2"):
                return self._verify_argon2(stored, secret)
            hmac.compare_digest(self._digest(secret), self._dummy)
            return NO
        _, key_id, encoded = stored.split("$", 2) if stored.count("$") == 2 else ("", "", "")
        if key_id != self.key_id:
            hmac.compare_digest(self._digest(secret), self._dummy)
            if key_id not in self._warned:
                self._warned.add(key_id)
                log.error(
                    "secret_hash.other_key",
                    stored_key_id=key_id,
                    key_id=self.key_id,
                    hint="a client secret was hashed with another IOD_SECRET_HASH_KEY_FILE: "
                    "every process (iod serve, iod worker, the admin commands) must use "
                    "the same key file",
                )
            return NO
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            expected = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            expected = self._dummy
        return Verified(hmac.compare_digest(self._digest(secret), expected))

    def _verify_argon2(self, stored: str, secret: str) -> Verified:
        if not verify_password(stored, secret):
            return NO
        return Verified(True, self.hash(secret) if is_generated(secret) else None)

    def is_current(self, stored: str) -> bool:
        """Whether `stored` is a keyed hash under this key."""
        return stored.startswith(self._prefix)


def load_key(path: Path) -> bytes:
    """The key in `path` (URL-safe base64 of at least 32 bytes, as `create_key` writes)."""
    try:
        text = path.read_text(encoding="ascii").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretHashKeyError(f"cannot read the secret hash key {path}: {exc}") from exc
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretHashKeyError(f"{path} is not URL-safe base64") from exc
    if len(key) < KEY_BYTES:
        raise SecretHashKeyError(f"{path} holds {len(key)} bytes; a key has at least {KEY_BYTES}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret_hash.key_file_mode", path=str(path), mode=oct(mode & 0o777))
    return key


def create_key(path: Path) -> bytes:
    """A new random key in `path` (mode 0600), unless another process created one first: then
    that one. The file appears complete or not at all (written aside, then hard-linked)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    data = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=") + b"\n"
    try:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    except OSError as exc:
        raise SecretHashKeyError(f"cannot create the secret hash key {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)
    return load_key(path)


def open_hasher(
    path: Path, *, create: bool = True, stored_key_ids: Callable[[], set[str]] | None = None
) -> SecretHasher:
    """The hasher with the key in `path`, created there first when it does not exist.

    `stored_key_ids` names the keys the stored secrets were hashed with: when the file is
    missing but some are, a new key would lock every one of those clients out (their hashes
    cannot be verified without the old key), so it is refused with what to do instead."""
    if create and not path.exists():
        in_use = stored_key_ids() if stored_key_ids is not None else set()
        if in_use:
            raise SecretHashKeyError(
                f"the secret hash key file {path} is missing, but client secrets are stored "
                f"hashed with key {', '.join(sorted(in_use))}: restore that key file (from "
                "the backup of the data directory) or point IOD_SECRET_HASH_KEY_FILE at it; "
                "a new key would lock every one of those clients out"
            )
        key = create_key(path)
        log.info("secret_hash.key_created", path=str(path))
    else:
        key = load_key(path)
    return SecretHasher(key)
