"""Signing keys: kept in the database, published as a JWKS, rotated and retired by operators.

Every process loads the table and reloads it when it is older than `refresh_seconds`
(IOD_KEY_REFRESH_SECONDS), checked whenever a key is used. The key that signs is the newest
one whose `activates_at` has passed. `rotate()` adds a key that activates two refresh
intervals later, so every process that could sign or verify has loaded it (and publishes it
in the JWKS) before any token carries its key id. The key it replaces keeps verifying until
its last tokens have expired; `retire()` refuses to delete it earlier unless forced.

With a key encryption key (IOD_KEY_ENCRYPTION_KEY[_FILE]) private keys are stored as
encrypted PKCS #8 PEM (cryptography's BestAvailableEncryption: PBES2, AES-256-CBC); keys
stored unencrypted before stay readable and are encrypted in place by `ensure()` at start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from iod.infra.clock import Clock, rfc3339
from iod.infra.db import Database
from iod.infra.errors import Conflict, NotFound, shown
from iod.models import SigningKey

log = structlog.get_logger("iod.keys")

ALGORITHM = "ES256"
# A token whose key id is unknown triggers a reload at most this often, so made-up key ids
# cannot turn into a database query each.
UNKNOWN_KID_RELOAD_SECONDS = 1.0
# Clocks of different hosts may disagree; token verification allows the same for iat/nbf.
CLOCK_LEEWAY = timedelta(seconds=60)


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any]
    activates_at: datetime


def _thumbprint_kid(public_jwk: dict[str, Any]) -> str:
    # RFC 7638: the SHA-256 thumbprint of the required members, base64url.
    members = {k: public_jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(
        json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _activation(row: SigningKey) -> datetime:
    return row.activates_at or row.created_at


ENCRYPTED_PEM = "-----BEGIN ENCRYPTED PRIVATE KEY-----"


class KeyDecryptionError(Exception):
    """A stored private key cannot be read with the configured key encryption key."""


def _private_key(row: SigningKey, encryption_key: bytes | None) -> ec.EllipticCurvePrivateKey:
    encrypted = row.private_pem.startswith(ENCRYPTED_PEM)
    if encrypted and encryption_key is None:
        raise KeyDecryptionError(
            f"signing key {row.kid} is encrypted: set IOD_KEY_ENCRYPTION_KEY_FILE "
            "(or IOD_KEY_ENCRYPTION_KEY) to the key it was encrypted with"
        )
    try:
        private = serialization.load_pem_private_key(
            row.private_pem.encode(), password=encryption_key if encrypted else None
        )
    except ValueError as exc:
        raise KeyDecryptionError(
            f"signing key {row.kid} cannot be decrypted with the configured key "
            "encryption key (was it encrypted with another one?)"
        ) from exc
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return private


def _pem(private: ec.EllipticCurvePrivateKey, encryption_key: bytes | None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(encryption_key)
        if encryption_key is not None
        else serialization.NoEncryption()
    )
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def encrypt_stored_keys(session: Session, encryption_key: bytes) -> list[str]:
    """Encrypts the private keys still stored in the clear; returns their key ids."""
    done = []
    for row in session.scalars(select(SigningKey)).all():
        if not row.private_pem.startswith(ENCRYPTED_PEM):
            row.private_pem = _pem(_private_key(row, None), encryption_key)
            done.append(row.kid)
    session.flush()
    return done


def _load(row: SigningKey, encryption_key: bytes | None = None) -> LoadedKey:
    private = _private_key(row, encryption_key)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": row.kid, "use": "sig", "alg": ALGORITHM})
    return LoadedKey(
        kid=row.kid, private_key=private, public_jwk=jwk, activates_at=_activation(row)
    )


def _create(
    session: Session,
    now: datetime,
    activates_at: datetime | None = None,
    encryption_key: bytes | None = None,
) -> SigningKey:
    # Whole seconds, as `iod keys list` shows them; an activation is rounded up, never earlier.
    now = now.replace(microsecond=0)
    if activates_at is not None and activates_at.microsecond:
        activates_at = activates_at.replace(microsecond=0) + timedelta(seconds=1)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = _pem(private, encryption_key)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    row = SigningKey(
        kid=_thumbprint_kid(jwk),
        algorithm=ALGORITHM,
        private_pem=pem,
        created_at=now,
        activates_at=activates_at,
    )
    session.add(row)
    session.flush()
    return row


def _ordered(rows: list[SigningKey]) -> list[SigningKey]:
    """Oldest activation first; creation time and kid break ties the same way everywhere, so
    processes that raced to create the first key agree on which one signs."""
    return sorted(rows, key=lambda r: (_activation(r), r.created_at, r.kid))


def _signer_index(activations: list[datetime], now: datetime) -> int:
    """The newest key already active, or the oldest if none is active yet."""
    active = [i for i, at in enumerate(activations) if at <= now]
    return active[-1] if active else 0


# Every column of a key, as plain rows with the model's attribute names (`KeyStore.reload`).
_KEY_COLUMNS: list[Any] = [
    SigningKey.kid,
    SigningKey.algorithm,
    SigningKey.private_pem,
    SigningKey.created_at,
    SigningKey.activates_at,
]
_KEY_ROWS: Select[Any] = select(*_KEY_COLUMNS)


class KeyStore:
    """One process's view of the signing keys table, refreshed every `refresh_seconds`."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        refresh_seconds: float = 5.0,
        encryption_key: bytes | None = None,
    ) -> None:
        self._db = db
        self._encryption_key = encryption_key
        self._clock = clock
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._ordered: list[LoadedKey] = []
        self._reloaded_at = float("-inf")

    def ensure(self) -> None:
        """Creates the first key on a fresh database, encrypts keys stored in the clear when
        a key encryption key is configured, then loads the table."""
        with self._db.read() as session:
            pems = list(session.scalars(select(SigningKey.private_pem)))
        if not pems:
            try:
                with self._db.write() as session:
                    if session.scalar(select(SigningKey.kid).limit(1)) is None:
                        _create(session, self._clock.now(), encryption_key=self._encryption_key)
            except IntegrityError:  # pragma: no cover - another process won the race
                pass
        elif self._encryption_key is not None and any(
            not pem.startswith(ENCRYPTED_PEM) for pem in pems
        ):
            with self._db.write() as session:
                encrypted = encrypt_stored_keys(session, self._encryption_key)
            log.info("keys.encrypted_at_rest", kids=encrypted)
        self.reload()

    def reload(self) -> None:
        # On the event loop too (a token checked when the keys are stale): the loop's kept
        # connection (`Database.prepared`), never a wait for the shared pool.
        rows = _ordered(self._db.prepared(_KEY_ROWS).rows())
        # Keys already loaded are kept as they are (a key's row never changes); only new ones
        # cost parsing.
        known = self._keys
        loaded = [known.get(row.kid) or _load(row, self._encryption_key) for row in rows]
        with self._lock:
            self._reloaded_at = time.monotonic()
            self._keys = {key.kid: key for key in loaded}
            self._ordered = loaded

    def _refresh_if_stale(self, max_age: float | None = None) -> None:
        age = time.monotonic() - self._reloaded_at
        if age <= (self.refresh_seconds if max_age is None else max_age):
            return
        if not self._keys:
            self.reload()  # nothing to fall back on
            return
        try:
            self.reload()
        except SQLAlchemyError:
            # Keep verifying with the keys we have while the database is unreachable; try
            # again after another interval rather than on every request.
            log.warning("keys.reload_failed", exc_info=True)
            self._reloaded_at = time.monotonic()

    @property
    def signing_key(self) -> LoadedKey:
        self._refresh_if_stale()
        if not self._ordered:
            self.ensure()
        keys = self._ordered
        return keys[_signer_index([k.activates_at for k in keys], self._clock.now())]

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self._refresh_if_stale()
        key = self._keys.get(kid)
        if key is None:
            # Published since the last reload (a rotation with --now, a first-start race).
            self._refresh_if_stale(UNKNOWN_KID_RELOAD_SECONDS)
            key = self._keys.get(kid)
        return key.private_key.public_key() if key else None

    def knows(self, kid: str) -> bool:
        """Whether the key still verifies: a retired key's cached tokens stop with it."""
        self._refresh_if_stale()
        return kid in self._keys

    def jwks(self) -> dict[str, Any]:
        self._refresh_if_stale()
        if not self._keys:
            self.ensure()
        return {"keys": [k.public_jwk for k in self._ordered]}


# -- administration (`iod keys …`) ---------------------------------------------------------

KeyState = Literal["signing", "next", "verifying", "retirable"]


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    created_at: datetime
    activates_at: datetime
    state: KeyState
    # For a key that no longer signs: until when tokens it signed may still be valid.
    retirable_at: datetime | None


def describe(session: Session, now: datetime, token_ttl: int) -> list[KeyInfo]:
    """Every key, oldest first, with what it does now and when it may be retired."""
    rows = _ordered(list(session.scalars(select(SigningKey)).all()))
    activations = [_activation(r) for r in rows]
    signer = _signer_index(activations, now) if rows else -1
    infos = []
    for index, row in enumerate(rows):
        retirable_at = None
        state: KeyState
        if index == signer:
            state = "signing"
        elif index > signer:
            state = "next"
        else:
            # It stopped signing when the next key activated; its last tokens live one TTL.
            retirable_at = activations[index + 1] + timedelta(seconds=token_ttl) + CLOCK_LEEWAY
            state = "retirable" if retirable_at <= now else "verifying"
        infos.append(KeyInfo(row.kid, row.created_at, activations[index], state, retirable_at))
    return infos


def rotate(
    session: Session, now: datetime, activate_in: timedelta, encryption_key: bytes | None = None
) -> SigningKey:
    """Adds a key that signs from `now + activate_in`; the current one keeps verifying."""
    return _create(session, now, now + activate_in, encryption_key)


class KeyInUse(Conflict):
    type_name = "key-in-use"
    title = "The signing key is still in use"


def retire(
    session: Session, now: datetime, kid: str, token_ttl: int, *, force: bool = False
) -> KeyInfo:
    """Deletes a key that no longer signs, once no token it signed can still be valid.

    `force` retires it anyway (a compromised key): its tokens are refused from then on.
    The key that signs (or one not yet active) is never retired: rotate first.
    """
    infos = {info.kid: info for info in describe(session, now, token_ttl)}
    info = infos.get(kid)
    if info is None:
        raise NotFound(f"no signing key {shown(kid)} (see `iod keys list`)")
    if info.state == "signing":
        raise KeyInUse(f"key {kid} signs tokens now: run `iod keys rotate` first")
    if info.state == "next":
        raise KeyInUse(f"key {kid} has not started signing yet; it is the next key")
    if info.state == "verifying" and not force:
        assert info.retirable_at is not None
        raise KeyInUse(
            f"tokens signed by key {kid} may be valid until {rfc3339(info.retirable_at)}; "
            "retire it after that, or with --force to refuse them now"
        )
    row = session.get(SigningKey, kid)
    assert row is not None
    session.delete(row)
    session.flush()
    return info
