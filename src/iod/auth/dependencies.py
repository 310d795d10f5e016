"""Bearer-token checks for resource endpoints (RFC 6750): who is calling, with which scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2

from iod.audit.service import Actor
from iod.auth.tokens import SCOPES, Principal, TokenInvalid
from iod.infra.errors import Forbidden, RateLimited, Unauthorized
from iod.infra.ratelimit import row_charge

if TYPE_CHECKING:
    from iod.app import Services

REALM = "internet-on-demand"

oauth2_scheme = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl="/oauth2/token",
            scopes={
                "read": "Read access to connections",
                "write": "Write access to connections",
                "edge": "An edge agent: its own location's desired state and reports",
            },
        )
    ),
    scheme_name="oauth2",
    auto_error=False,
)


def actor(request: Request, principal: Principal) -> Actor:
    """The API caller as the audit log names it: its client id, the address it connected
    from and the request id (the HTTP edge's part; services only see the `Actor`).

    Behind a proxy listed in IOD_TRUSTED_PROXIES the address is the one derived from its
    X-Forwarded-For; from anyone else it is the TCP peer (docs/operations.md)."""
    address = request.client.host if request.client is not None else "unknown"
    request_id = getattr(request.state, "request_id", None)
    return Actor("client", principal.client_id, address, request_id)


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


async def authenticate(
    services: Services, state: dict[str, Any], authorization: str | None
) -> Principal:
    """Runs on the event loop: verified tokens and client states are cached, so only a stale
    client state costs a database read (one statement on the loop's kept connection).
    `state` is the ASGI scope's state (what `request.state` reads); the client id is left
    there."""
    if not authorization:
        raise Unauthorized(
            "an access token is required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": _challenge()},
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        # RFC 6750 §3.1: no usable bearer credentials is a bare challenge, no error code.
        raise Unauthorized(
            "send the access token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": _challenge()},
        )
    try:
        principal: Principal = services.tokens.verify(token)
    except TokenInvalid as exc:
        raise Unauthorized(
            str(exc), headers={"WWW-Authenticate": _challenge("invalid_token", str(exc))}
        ) from exc
    # Cached (the token endpoint leaves the state it read), else one statement on the event
    # loop's kept connection, as the token endpoint's own read of the client.
    client = services.clients.state(principal.client_id)
    detail = None
    if not client.enabled:
        detail = "the client of this access token is disabled"
    elif not client.accepts_generation(principal.secret_generation, services.clock.now()):
        detail = "the client secret this access token was obtained with has been replaced"
    if detail is not None:
        raise Unauthorized(
            detail, headers={"WWW-Authenticate": _challenge("invalid_token", detail)}
        )
    state["client_id"] = principal.client_id
    return principal


# Where the middleware's bearer check of a request with a body, made before the body is
# read, leaves what it found for `authorize`: (the Authorization header, its `Principal`).
EARLY_PRINCIPAL = "early_principal"


def remember_early(state: dict[str, Any], authorization: str | None, principal: Principal) -> None:
    """Leaves the principal of the check made before the body was read (`authenticate`,
    on the same header) for the request's `authorize`, which then does not check the token
    and its client again: the client's state is the one read (or cached) as the request
    arrived, at most the body's timeout (IOD_HTTP_BODY_TIMEOUT_SECONDS) earlier, as for a
    request that has been running that long; the token's expiry is checked again."""
    state[EARLY_PRINCIPAL] = (authorization, principal)


def _rate_limit(
    services: Services, state: dict[str, Any], principal: Principal, scope: str
) -> None:
    """Takes a token from the client's read or write bucket (reads and writes are limited
    apart, so polling cannot starve orders). The middleware turns the decision into the
    RateLimit-* headers of whatever the request answers."""
    limits = services.limits
    buckets = limits.reads if scope == "read" else limits.writes
    if buckets is None:
        return
    decision = buckets.take(principal.client_id)
    state["rate_limit"] = decision
    if not decision.allowed:
        kind = "reads" if scope == "read" else "writes"
        raise RateLimited(
            f"this client is over its rate limit for {kind} ({buckets.rate.per_second:g}/s, "
            f"bursts of {buckets.rate.burst}); retry after {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )


def charge_rows(services: Any, state: dict[str, Any], principal: Principal, rows: int) -> None:
    """Charges a list answer's rows to the client's read bucket (`ratelimit.row_charge`),
    after the one token its read took: a page of 1,000 costs 11 reads, so paging through
    everything at full size cannot take a process's time from other clients. The answer's
    RateLimit-* headers show the charge."""
    buckets = services.limits.reads
    extra = row_charge(rows)
    if buckets is not None and extra > 0:
        state["rate_limit"] = buckets.charge(principal.client_id, extra)


async def authorize(
    services: Services, state: dict[str, Any], authorization: str | None, scope: str
) -> Principal:
    """The whole bearer check of one request: the token and its client (401), a rate-limit
    token (429), the scope (403). Shared by the dependency and the fast GET
    (connections/fastpath.py), so both answer alike."""
    early = state.pop(EARLY_PRINCIPAL, None)
    if (
        early is not None
        and early[0] == authorization
        and early[1].expires_at > services.clock.now().timestamp()
    ):
        # The middleware's check of this header as the request arrived (`remember_early`):
        # not made twice for a request with a body (issue 14).
        principal: Principal = early[1]
    else:
        principal = await authenticate(services, state, authorization)
    # Counted before the scope check: refused requests cost the server too.
    _rate_limit(services, state, principal, scope)
    if scope not in principal.scopes:
        detail = f"this operation needs the '{scope}' scope"
        raise Forbidden(
            detail,
            headers={"WWW-Authenticate": _challenge("insufficient_scope", detail, scope=scope)},
        )
    return principal


def _require(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        authorization: str | None = Security(oauth2_scheme),
    ) -> Principal:
        # `request.state` reads and writes the scope's "state" dict.
        state = request.scope.setdefault("state", {})
        return await authorize(request.app.state.services, state, authorization, scope)

    return dependency


assert set(SCOPES) == {"read", "write", "edge"}
require_read = Security(_require("read"), scopes=["read"])
require_write = Security(_require("write"), scopes=["write"])
require_edge = Security(_require("edge"), scopes=["edge"])
