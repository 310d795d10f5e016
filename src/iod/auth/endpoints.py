"""The authorization server: token endpoint (RFC 6749 §4.4), JWKS and RFC 8414 metadata."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from iod.auth.directory import ClientState
from iod.auth.tokens import SCOPES
from iod.customers import repository as customers
from iod.customers.service import check_client_secret, needs_slow_check, upgrade_secret_hashes
from iod.infra.ratelimit import Limits

log = structlog.get_logger("iod.auth")

router = APIRouter(tags=["OAuth 2.0"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    scope: str


class OAuthError(BaseModel):
    error: str = Field(
        examples=["invalid_client"],
        description="invalid_request, invalid_client, unsupported_grant_type, invalid_scope",
    )
    error_description: str | None = None


class OAuthFailure(Exception):
    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        basic: bool = False,
        retry_after: int | None = None,
    ):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.basic = basic
        self.retry_after = retry_after


def oauth_error_response(exc: OAuthFailure) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="internet-on-demand"'
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers=headers,
    )


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthFailure("invalid_client", "unsupported client authentication scheme", 401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthFailure("invalid_client", "malformed Basic credentials", 401, True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthFailure("invalid_client", "malformed Basic credentials", 401, True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


def _plausible(client_id: str) -> bool:
    """Ids that cannot exist (too long, control characters) are never looked up."""
    return 0 < len(client_id) <= 64 and client_id.isprintable() and client_id.isascii()


def _throttled(what: str, retry_after: int) -> OAuthFailure:
    # RFC 6749 has no error code for this; `slow_down` (RFC 8628 §3.5) says what to do.
    return OAuthFailure(
        "slow_down", f"too many {what}; retry after {retry_after} s", 429, retry_after=retry_after
    )


class Throttle:
    """Token endpoint throttling, per source address and per client id (in this process).

    Every request takes a token from the address's request bucket, and from the client id's
    once it is known: a generous limit, as each request may cost an argon2 check. Checking a
    secret first takes a token from both failure buckets and gives them back when the secret
    is right: concurrent guesses cannot overrun the limit, and guessing a secret, from one
    address or from many at one client id, runs at the failure rate.
    """

    def __init__(self, limits: Limits, address: str) -> None:
        self.limits = limits
        self.keys = [("address", address)]
        self.reserved: list[tuple[str, str]] = []
        self._take_request(self.keys[0])

    def add_client(self, client_id: str) -> None:
        self.keys.append(("client", client_id))
        self._take_request(self.keys[-1])

    def _take_request(self, key: tuple[str, str]) -> None:
        buckets = self.limits.token_requests
        if buckets is not None:
            decision = buckets.take(key)
            if not decision.allowed:
                raise _throttled("token requests", decision.retry_after)

    def reserve_failure(self) -> None:
        buckets = self.limits.token_failures
        if buckets is None:
            return
        for key in self.keys:
            decision = buckets.take(key)
            if not decision.allowed:
                self.release()
                raise _throttled("failed client authentications", decision.retry_after)
            self.reserved.append(key)

    def release(self) -> None:
        """The secret was right: the reserved failures did not happen."""
        buckets = self.limits.token_failures
        if buckets is not None:
            for key in self.reserved:
                buckets.give_back(key)
        self.reserved.clear()


def _single(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise OAuthFailure("invalid_request", f"the {name} parameter is repeated")
    return values[0]


TOKEN_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string", "examples": ["read write"]},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                    },
                }
            }
        },
    }
}

OAUTH_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}


@router.post(
    "/oauth2/token",
    operation_id="createToken",
    summary="Get an access token (client credentials)",
    response_model=TokenResponse,
    openapi_extra=TOKEN_REQUEST_SCHEMA,
    responses={
        400: {"description": "invalid_request, unsupported_grant_type or invalid_scope",
              "content": OAUTH_ERROR},
        401: {"description": "invalid_client", "content": OAUTH_ERROR},
        429: {"description": "slow_down: too many requests or failed authentications from "
                             "this address or for this client id; see `Retry-After`",
              "content": OAUTH_ERROR,
              "headers": {"Retry-After": {"description": "Seconds to wait",
                                          "schema": {"type": "integer"}}}},
    },
)  # fmt: skip
async def token(request: Request) -> JSONResponse:
    """Exchange client credentials (HTTP Basic or form body) for a signed JWT access token.

    Scopes are `read` and `write` (`edge` for edge agents), space-separated; leaving `scope`
    out grants every scope the client has. The response is never cached (`Cache-Control: no-store`).
    """
    try:
        return await exchange(request)
    except OAuthFailure as exc:
        return oauth_error_response(exc)


async def exchange(request: Request) -> JSONResponse:
    """The token exchange (throttling, client authentication, scopes) of every token path:
    `/oauth2/token` and Lumen's `/oauth/v2/token`; refusals raise `OAuthFailure`."""
    services = request.app.state.services
    # The TCP peer, or what a proxy listed in IOD_TRUSTED_PROXIES forwarded (see
    # docs/operations.md).
    throttle = Throttle(services.limits, request.client.host if request.client else "")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthFailure("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise OAuthFailure("invalid_request", "the body is not UTF-8") from exc
    grant_type = _single(form, "grant_type")
    if grant_type is None:
        raise OAuthFailure("invalid_request", "grant_type is required")

    header = request.headers.get("authorization")
    form_id, form_secret = _single(form, "client_id"), _single(form, "client_secret")
    basic = header is not None
    if basic and form_secret is not None:
        raise OAuthFailure("invalid_request", "use one client authentication method, not two")
    if basic:
        client_id, secret = _basic_credentials(header or "")
        if form_id is not None and form_id != client_id:
            raise OAuthFailure("invalid_request", "client_id differs from the Basic credentials")
    elif form_id is not None and form_secret is not None:
        client_id, secret = form_id, form_secret
    else:
        raise OAuthFailure("invalid_client", "client authentication is required", 401)
    # Ids that cannot exist get no bucket of their own: the address's limits them.
    if _plausible(client_id):
        throttle.add_client(client_id)
    throttle.reserve_failure()
    try:
        found = await _authenticate(services, client_id, secret)
    except BaseException:
        throttle.release()  # not a failed authentication: the check could not be made
        raise
    if found is None:
        raise OAuthFailure("invalid_client", "unknown client or wrong secret", 401, basic)
    throttle.release()
    customer_id, allowed, generation = found

    if grant_type != "client_credentials":
        raise OAuthFailure("unsupported_grant_type", "only client_credentials is supported")
    requested = _single(form, "scope")
    if requested is None:
        scopes = allowed
    else:
        wanted = requested.split()
        if not wanted or any(s not in allowed for s in wanted):
            raise OAuthFailure(
                "invalid_scope", f"this client may ask for: {' '.join(allowed) or 'nothing'}"
            )
        scopes = [s for s in SCOPES if s in wanted]
    access_token = services.tokens.issue(client_id, customer_id, scopes, generation)
    return JSONResponse(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": services.tokens.ttl,
            "scope": " ".join(scopes),
        },
        headers=NO_STORE,
    )


async def _authenticate(
    services: Any, client_id: str, secret: str
) -> tuple[str, list[str], int] | None:
    """(customer, its scopes, the secret's generation) of an enabled client whose secret this
    is, else None.

    A keyed hash (nearly every client) is checked here, on the event loop, with no await
    between the caller's failure reservation and its release: one query on a kept connection
    (as the GET's) and an HMAC, tens of microseconds. So concurrent good requests never hold
    each other's reservations, and only real failures use up the failure buckets. An argon2
    hash (a secret stored before issue 14, until its first use) goes to a worker thread."""
    read_at = time.monotonic()
    client = customers.credentials(services.db, client_id) if _plausible(client_id) else None
    now = services.clock.now()
    if needs_slow_check(client):
        result = await run_in_threadpool(
            check_client_secret, client, secret, now, services.secret_hasher
        )
    else:
        result = check_client_secret(client, secret, now, services.secret_hasher)
    if client is None or result.generation is None or not client.enabled:
        return None
    # The state just read: the client's first request with this token needs no read of it.
    services.clients.remember(client_id, ClientState.of(client), read_at)
    if result.upgrades:
        await run_in_threadpool(_upgrade, services.db, client_id, result.upgrades)
    return client.customer_id, client.scopes.split(), result.generation


def _upgrade(db: Any, client_id: str, upgrades: dict[str, tuple[str, str]]) -> None:
    """An argon2-stored secret was right: store its keyed hash, so its next check is fast. A
    failure only postpones that to the next success; the token is issued all the same."""
    try:
        with db.write() as session:
            upgrade_secret_hashes(session, client_id, upgrades)
    except SQLAlchemyError as exc:
        log.warning("secret_hash.upgrade_failed", client_id=client_id, error=type(exc).__name__)
    else:
        log.info("secret_hash.upgraded", client_id=client_id, columns=sorted(upgrades))


@router.get("/.well-known/jwks.json", operation_id="getJwks", summary="Token signing keys")
def jwks(request: Request) -> dict[str, Any]:
    """The public keys that verify access tokens (RFC 7517)."""
    keys: dict[str, Any] = request.app.state.services.keys.jwks()
    return keys


@router.get(
    "/.well-known/oauth-authorization-server",
    operation_id="getAuthorizationServerMetadata",
    summary="Authorization server metadata",
)
def metadata(request: Request) -> dict[str, Any]:
    """RFC 8414 metadata: where to get tokens and how."""
    settings = request.app.state.services.settings
    issuer = settings.issuer.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": list(SCOPES),
        "response_types_supported": [],
    }
