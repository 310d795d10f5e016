"""The authorization server: token endpoint (RFC 6749 §4.4), JWKS and RFC 8414 metadata."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from iod.auth.tokens import SCOPES
from iod.customers import repository as customers
from iod.customers.service import client_secret_generation

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
    def __init__(self, error: str, description: str, status: int = 400, basic: bool = False):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.basic = basic


def oauth_error_response(exc: OAuthFailure) -> JSONResponse:
    headers = dict(NO_STORE)
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
    },
)  # fmt: skip
async def token(request: Request) -> JSONResponse:
    """Exchange client credentials (HTTP Basic or form body) for a signed JWT access token.

    Scopes are `read` and `write`, space-separated; leaving `scope` out grants every scope
    the client has. The response is never cached (`Cache-Control: no-store`).
    """
    try:
        return await _token(request)
    except OAuthFailure as exc:
        return oauth_error_response(exc)


async def _token(request: Request) -> JSONResponse:
    services = request.app.state.services
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

    def check() -> tuple[str, list[str], int] | None:
        with services.db.read() as session:
            client = customers.get_client(session, client_id) if _plausible(client_id) else None
            generation = client_secret_generation(client, secret, services.clock.now())
            if client is None or generation is None or not client.enabled:
                return None
            return client.customer_id, client.scopes.split(), generation

    found = await run_in_threadpool(check)
    if found is None:
        raise OAuthFailure("invalid_client", "unknown client or wrong secret", 401, basic)
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
