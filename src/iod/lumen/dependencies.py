"""Who calls a Lumen path: the bearer token (the same check as our API's: 401, 429, 403 for
the scope), then `x-customer-number`, which must be the token's customer's (400 without it,
403 for another)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2

from iod.auth.dependencies import authorize
from iod.customers import repository as customers
from iod.lumen.errors import LumenError
from iod.lumen.service import Caller

TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 (a path, not a secret)
CUSTOMER_HEADER = "x-customer-number"

lumen_oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl=TOKEN_PATH,
            scopes={"read": "Inventory and discovery", "write": "Orders"},
        )
    ),
    scheme_name="oauth2",
    auto_error=False,
)


def _require(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request,
        authorization: str | None = Security(lumen_oauth2),
        # Documented as required by lumen.api's OpenAPI; read here as optional so that a
        # request without a valid token is a 401 first, whatever its headers.
        customer_number: Annotated[
            str | None, Header(alias=CUSTOMER_HEADER, include_in_schema=False)
        ] = None,
    ) -> Caller:
        services = request.app.state.services
        state = request.scope.setdefault("state", {})
        principal = await authorize(services, state, authorization, scope)
        if not customer_number:
            raise LumenError(
                400,
                "MISSING_HEADER",
                f"the {CUSTOMER_HEADER} header is required: your customer number, e.g. 1-ABCDE",
                CUSTOMER_HEADER,
            )
        # One primary-key read on the loop's kept connection, as the token check's.
        found = customers.customer_number_of(services.db, principal.customer_id)
        if found is None or found[0] is None or found[0] != customer_number.strip():
            raise LumenError(
                403,
                "CUSTOMER_MISMATCH",
                f"{CUSTOMER_HEADER} is not the customer number of this access token's customer",
                CUSTOMER_HEADER,
            )
        return Caller(principal, found[0], found[1])

    return dependency


require_read = Security(_require("read"), scopes=["read"])
require_write = Security(_require("write"), scopes=["write"])
READ = Annotated[Caller, require_read]
WRITE = Annotated[Caller, require_write]
