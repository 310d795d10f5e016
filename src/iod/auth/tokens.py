"""Access tokens: RFC 9068 JWTs, signed here and verified with a cache of verified tokens."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt

from iod.auth.keys import ALGORITHM, CLOCK_LEEWAY, KeyStore
from iod.infra.clock import Clock
from iod.infra.ids import new_id

# `edge`: an edge agent's (iod.edge), bound to its location by its `edge_agents` row.
SCOPES = ("read", "write", "edge")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the client, its customer and the scopes its token grants."""

    client_id: str
    customer_id: str
    scopes: frozenset[str]
    expires_at: float
    # The signing key, and the generation of the client secret the token was obtained with:
    # a retired key or a replaced secret (after its grace period) ends the token early.
    kid: str = field(default="", compare=False)
    secret_generation: int = field(default=0, compare=False)
    # The token's identity (its `jti` claim), for any revocation or replay check: never the
    # token string, since an ECDSA signature can be altered into another valid one.
    jti: str = field(default="", compare=False)
    # The later of its `iat` and `nbf`: a cached token is refused, as a verified one is,
    # while the service's clock is more than CLOCK_LEEWAY before it (a clock stepped back).
    valid_from: float = field(default=0.0, compare=False)


class TokenInvalid(Exception):
    """Any reason a bearer token is not accepted; the message is safe to show."""


_LEEWAY = CLOCK_LEEWAY.total_seconds()
_FUTURE = "the access token is not valid yet (issued in the future)"


class TokenService:
    def __init__(
        self,
        keys: KeyStore,
        clock: Clock,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        cache_size: int = 20_000,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._cache: dict[str, Principal] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def issue(
        self, client_id: str, customer_id: str, scopes: list[str], secret_generation: int = 0
    ) -> str:
        now = self.clock.now()
        iat = int(now.timestamp())
        key = self.keys.signing_key
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "customer_id": customer_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.ttl,
            "jti": new_id("jti"),
            "scope": " ".join(scopes),
            "sgen": secret_generation,
        }
        token = jwt.encode(
            claims, key.private_key, algorithm=ALGORITHM, headers={"typ": "at+jwt", "kid": key.kid}
        )
        # What `verify` would make of it (signed here, with a key this process holds): the
        # client's first request with it skips the signature check (issue 14, the surge).
        self._remember(
            token,
            Principal(
                client_id=client_id,
                customer_id=customer_id,
                scopes=frozenset(scopes),
                expires_at=float(claims["exp"]),
                kid=key.kid,
                secret_generation=secret_generation,
                jti=claims["jti"],
                valid_from=float(iat),
            ),
            now.timestamp(),
        )
        return token

    def verify(self, token: str) -> Principal:
        now = self.clock.now().timestamp()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at <= now:
                raise TokenInvalid("the access token has expired")
            if cached.valid_from > now + _LEEWAY:
                raise TokenInvalid(_FUTURE)
            if not self.keys.knows(cached.kid):
                self._cache.pop(token, None)
                raise TokenInvalid("the access token is signed by an unknown key")
            return cached
        principal = self._verify_signature(token, self.clock.now())
        self._remember(token, principal, now)
        return principal

    def _remember(self, token: str, principal: Principal, now: float) -> None:
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[token] = principal

    def _evict(self, now: float) -> None:
        expired = [t for t, p in self._cache.items() if p.expires_at <= now]
        for t in expired:
            del self._cache[t]
        while len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]

    def _verify_signature(self, token: str, now: datetime) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid("the access token is malformed") from exc
        if header.get("alg") != ALGORITHM:
            raise TokenInvalid("the access token is not signed with an accepted algorithm")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
            raise TokenInvalid("the token is not an access token")
        kid = header.get("kid")
        key = self.keys.public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalid("the access token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "client_id", "jti"],
                    # Time claims are checked below against the service's clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid(f"the access token is invalid: {exc}") from exc
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise TokenInvalid("the access token's time claims are not integers")
        if exp <= now.timestamp():
            raise TokenInvalid("the access token has expired")
        nbf = claims.get("nbf", iat)
        if not isinstance(nbf, int) or max(iat, nbf) > now.timestamp() + _LEEWAY:
            raise TokenInvalid(_FUTURE)
        customer_id = claims.get("customer_id")
        scope = claims.get("scope", "")
        if not isinstance(customer_id, str) or not isinstance(scope, str):
            raise TokenInvalid("the access token lacks its customer or scope")
        generation = claims.get("sgen", 0)  # tokens issued before rotation existed lack it
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise TokenInvalid("the access token's secret generation is not a whole number")
        return Principal(
            client_id=str(claims["client_id"]),
            customer_id=customer_id,
            scopes=frozenset(scope.split()),
            expires_at=float(claims["exp"]),
            kid=str(kid),
            secret_generation=generation,
            jti=str(claims["jti"]),
            valid_from=float(max(iat, nbf)),
        )
