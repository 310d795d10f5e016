"""The Lumen-compatible API as an application of its own beside ours: its routes, its error
shape (`{code, reason, propertyPath}` lists, never problem+json) and its own OpenAPI document
at `/lumen/openapi.json`. `LumenDispatch` hands it the requests of its paths; everything
around it (request ids, body limits, metrics, the access log) is the main app's middleware."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from iod.infra.db import is_unavailable
from iod.infra.errors import ProblemError
from iod.infra.problems import without_none_branches
from iod.lumen.dependencies import CUSTOMER_HEADER, TOKEN_PATH
from iod.lumen.endpoints import lumen_errors, router
from iod.lumen.errors import Item, LumenError, items_of, property_path
from iod.lumen.schemas import ErrorItem
from iod.version import __version__

if TYPE_CHECKING:
    from iod.app import Services

OPENAPI_PATH = "/lumen/openapi.json"
# Every path of the Lumen API starts with one of these (quotes, prices and bills, issue 15,
# join the same router under /Product/ and /Billing/).
PREFIXES = (
    "/oauth/v2/", "/ProductInventory/", "/Network/", "/Product/", "/Customer/", "/Account/",
    "/Billing/", "/lumen/",
)  # fmt: skip

# The Lumen paths that need a token: a request with a body and no valid token is refused
# before its body is read there too (`RequestContextMiddleware`).
AUTHENTICATED_PREFIXES = tuple(p for p in PREFIXES if p not in ("/oauth/v2/", "/lumen/"))

DESCRIPTION = """\
Clients written for Lumen's marketplace APIs (token, inventory, discovery, orders) work
against this service unchanged: the same paths and fields, over the same connections as
`/internet-on-demand/` (one state; docs/lumen.md has the mapping).

* Get a token at `POST /oauth/v2/token` (the same client credentials as `/oauth2/token`).
* Send `x-customer-number` (your customer number, e.g. `1-ABCDE`) on every other call:
  missing is 400, another customer's is 403.
* Errors are JSON lists of `{"code", "reason", "propertyPath"}`.
"""


def errors_response(
    status: int, items: list[Item], headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps([item.to_dict() for item in items])
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def problem_as_lumen(exc: ProblemError) -> Response:
    status, items = items_of(exc)
    return errors_response(status, items, exc.headers)


def render_reject(path: str, problem: ProblemError, request_id: str) -> Response | None:
    """For the main middleware's own refusals (a body too large, an unexpected failure):
    the Lumen shape on the Lumen paths, problem+json elsewhere (None)."""
    if not path.startswith(PREFIXES):
        return None
    return problem_as_lumen(problem)


_CODES = {
    "json_invalid": "INVALID_JSON",
    "missing": "MISSING_FIELD",
    "extra_forbidden": "UNKNOWN_FIELD",
    "duplicate_key": "DUPLICATE_KEY",
}
_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
}


def _fields_of(request: Request) -> list[str]:
    route = request.scope.get("route")
    names: list[str] = []
    for param in getattr(getattr(route, "dependant", None), "body_params", ()):
        model = getattr(getattr(param, "field_info", None), "annotation", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.extend(model.model_fields)
    return names


def _is_tag(part: str) -> bool:
    """A union member's tag in a location (`constrained-str`, `function-after[…]`), not a
    field: the property path names fields only."""
    return part in ("str", "int", "bool") or part.startswith(("constrained-", "function-"))


def _validation_items(request: Request, exc: RequestValidationError) -> list[Item]:
    items: list[Item] = []
    for error in without_none_branches(exc.errors()):
        loc = [str(p) for p in error.get("loc", ()) if not _is_tag(str(p))]
        kind = str(error.get("type", ""))
        code = _CODES.get(kind, "INVALID_VALUE")
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if kind == "json_invalid":
            items.append(Item(code, "the body is not valid JSON"))
            continue
        if kind == "duplicate_key":
            pointer = str((error.get("ctx") or {}).get("pointer", ""))
            items.append(Item(code, "duplicate key; send each field once", property_path(pointer)))
            continue
        if loc == ["body"]:
            reason = "a JSON body is required" if kind == "missing" else "the body is not an object"
            items.append(Item(code, reason))
            continue
        if loc and loc[0] == "body":
            path = property_path("/" + "/".join(loc[1:]))
            if kind == "extra_forbidden" and len(loc) == 2:
                close = difflib.get_close_matches(loc[1], _fields_of(request), n=1, cutoff=0.6)
                message = "unknown field" + (f"; did you mean {close[0]}?" if close else "")
            elif kind == "extra_forbidden":
                message = "unknown field"
            items.append(Item(code, message, path))
            continue
        # a query, path or header parameter: named as it is sent
        name = ".".join(p for p in loc[1:] if not p.isdigit()) or None
        items.append(Item(code, f"{loc[0] if loc else 'parameter'} {name}: {message}", name))
    # A value that fits no member of a union is one error per member at the same path: the
    # first says it.
    unique = list({(i.propertyPath or "", i.code): i for i in reversed(items)}.values())[::-1]
    return unique or [Item("INVALID_REQUEST", "the request is invalid")]


def create_lumen_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Internet On-Demand: Lumen-compatible API",
        version=__version__,
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        return problem_as_lumen(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return errors_response(400, _validation_items(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        reason = str(exc.detail)
        if status == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            reason = "the body is not valid JSON: it is not UTF-8"
        code = _HTTP_CODES.get(status, "HTTP_ERROR")
        return errors_response(status, [Item(code, reason)], dict(exc.headers or {}))

    async def _database(request: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            raise exc
        retry = str(services.settings.unavailable_retry_after)
        error = LumenError(503, "SERVICE_UNAVAILABLE", "the database is not available right now; "
                           "retry later", None, {"Retry-After": retry})  # fmt: skip
        return problem_as_lumen(error)

    for kind in (sa_exc.DBAPIError, sa_exc.TimeoutError):
        app.add_exception_handler(kind, _database)

    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Answered here (the main middleware logs it with the request id).
        return errors_response(
            500, [Item("INTERNAL_ERROR", "an unexpected error occurred; quote the x-request-id")]
        )

    app.add_exception_handler(Exception, _unexpected)
    app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


CUSTOMER_PARAMETER: dict[str, Any] = {
    "name": CUSTOMER_HEADER,
    "in": "header",
    "required": True,
    "description": "The customer number of the token's customer (e.g. `1-ABCDE`): missing "
    "is 400, another customer's is 403.",
    "schema": {"type": "string", "minLength": 1, "examples": ["1-ABCDE"]},
}


AUTHENTICATED_ERRORS = {
    "400": f"No {CUSTOMER_HEADER} header, or bad input",
    "401": "No, malformed, expired or revoked access token",
    "403": f"The token lacks the scope, or {CUSTOMER_HEADER} is not its customer's",
    "429": "Over the client's rate limit; see Retry-After",
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=DESCRIPTION,
        routes=app.routes,
        tags=[
            {"name": "OAuth 2.0", "description": "Access tokens"},
            {"name": "Inventory", "description": "Services (connections)"},
            {"name": "Discovery", "description": "Partners, locations, billing accounts"},
            {"name": "Ordering", "description": "Add, modify, delete"},
        ],
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["LumenError"] = ErrorItem.model_json_schema()
    schemas["LumenErrors"] = {
        "type": "array",
        "title": "LumenErrors",
        "description": "Every error answer: a list of `{code, reason, propertyPath}`.",
        "items": {"$ref": "#/components/schemas/LumenError"},
    }
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]  # FastAPI's default; invalid requests are 400 here
            responses.setdefault("413", lumen_errors("The request body is larger than 64 KiB"))
            responses.setdefault("500", lumen_errors("Unexpected server error"))
            responses.setdefault("503", lumen_errors("The database is not available; retry later"))
            if "requestBody" in operation:
                responses.setdefault("408", lumen_errors("The request body arrived too slowly"))
                if path != TOKEN_PATH:
                    responses.setdefault("415", lumen_errors("The body is not application/json"))
            if path == TOKEN_PATH:
                operation["security"] = []
                continue
            operation.setdefault("parameters", []).insert(0, CUSTOMER_PARAMETER)
            for status, text in AUTHENTICATED_ERRORS.items():
                responses.setdefault(status, lumen_errors(text))
    doc["security"] = [{"oauth2": []}]
    return doc


class LumenDispatch:
    """Hands the requests of the Lumen paths to the Lumen app, the rest to ours."""

    def __init__(self, app: ASGIApp, lumen: ASGIApp) -> None:
        self.app = app
        self.lumen = lumen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIXES):
            await self.lumen(scope, receive, send)
        else:
            await self.app(scope, receive, send)
