"""Signing keys: created on first start, kept in the database, published as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iod.clock import Clock
from iod.db import Database
from iod.models import SigningKey

ALGORITHM = "ES256"
RELOAD_INTERVAL = 5.0


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any]


def _thumbprint_kid(public_jwk: dict[str, Any]) -> str:
    # RFC 7638: the SHA-256 thumbprint of the required members, base64url.
    members = {k: public_jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(
        json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _load(row: SigningKey) -> LoadedKey:
    private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": row.kid, "use": "sig", "alg": ALGORITHM})
    return LoadedKey(kid=row.kid, private_key=private, public_jwk=jwk)


def _create(session: Session, clock: Clock) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    session.add(
        SigningKey(
            kid=_thumbprint_kid(jwk), algorithm=ALGORITHM, private_pem=pem, created_at=clock.now()
        )
    )


class KeyStore:
    """All processes sign with the oldest key in the table, so they agree after a race."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._signing: LoadedKey | None = None
        self._reloaded_at = 0.0

    def ensure(self) -> None:
        with self._db.read() as session:
            exists = session.scalar(select(SigningKey.kid).limit(1)) is not None
        if not exists:
            try:
                with self._db.write() as session:
                    if session.scalar(select(SigningKey.kid).limit(1)) is None:
                        _create(session, self._clock)
            except IntegrityError:  # pragma: no cover - another process won the race
                pass
        self.reload()

    def reload(self) -> None:
        with self._db.read() as session:
            rows = session.scalars(
                select(SigningKey).order_by(SigningKey.created_at, SigningKey.kid)
            ).all()
        keys = {row.kid: _load(row) for row in rows}
        with self._lock:
            self._reloaded_at = time.monotonic()
            self._keys = keys
            self._signing = keys[rows[0].kid] if rows else None

    @property
    def signing_key(self) -> LoadedKey:
        if self._signing is None:
            self.ensure()
        assert self._signing is not None
        return self._signing

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._reloaded_at > RELOAD_INTERVAL:
            # Another process may have created a key; at most one lookup per interval so
            # tokens with made-up key ids cannot turn into a database query each.
            self.reload()
            key = self._keys.get(kid)
        return key.private_key.public_key() if key else None

    def jwks(self) -> dict[str, Any]:
        if not self._keys:
            self.ensure()
        return {"keys": [k.public_jwk for k in self._keys.values()]}
