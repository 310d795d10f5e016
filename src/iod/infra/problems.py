"""One renderer for every error: RFC 9457 problem+json with the request id."""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from iod.infra.db import is_unavailable
from iod.infra.errors import (
    PROBLEM_BASE,
    PROBLEM_TYPES,
    FieldError,
    NotFound,
    Problem,
    ProblemError,
    ServiceUnavailable,
    ValidationFailed,
    shown,
)
from iod.infra.http import body_fields, problem

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("iod.http")


def problem_response(
    exc: ProblemError, *, instance: str | None = None, request_id: str | None = None
) -> JSONResponse:
    body = Problem(
        type=exc.type_uri,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        instance=instance,
        request_id=request_id,
        errors=exc.errors,
    )
    return JSONResponse(
        body.to_dict(), status_code=exc.status, headers=exc.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def unavailable_response(
    exc: Exception, retry_after: int, *, instance: str, request_id: str | None
) -> JSONResponse:
    """503 for a database error that `is_unavailable`; logged with its first line."""
    # The transaction was rolled back, so nothing of this request is stored.
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
    log.warning("database.unavailable", path=instance, error=reason)
    problem = ServiceUnavailable.retry_later(
        "the database is not available right now; retry later", retry_after
    )
    return problem_response(problem, instance=instance, request_id=request_id)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def without_none_branches(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors with the `None` member of `X | SkipJsonSchema[None]` folded away.

    Such a field (optional, not nullable: null is hidden from the schema) is a union for
    pydantic, so a bad value gives one error per member, each under the member's tag:
    `/rules/list[ScheduleRule]/0/recurrence` and `/rules/none` "Input should be None". The
    `None` member is there only to let the field be left out: its error is dropped and the
    other member's tag taken out of the location (`/rules/0/recurrence`)."""
    optional = {
        tuple(e["loc"][:-1])
        for e in errors
        if e.get("type") == "none_required" and e.get("loc") and e["loc"][-1] == "none"
    }
    if not optional:
        return list(errors)
    folded = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc[-1:] == ("none",) and loc[:-1] in optional and error.get("type") == "none_required":
            continue
        kept = tuple(part for i, part in enumerate(loc) if not (i and loc[:i] in optional))
        folded.append({**error, "loc": kept})
    return folded


def json_pointer(loc: tuple[Any, ...]) -> str:
    """A pydantic location as a JSON Pointer (RFC 6901), without the leading `body`."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


# Names a client may reach for that are the response's, not the request's.
_REQUEST_NAMES = {"location": "locationId"}


def _unknown_field(name: str, known: list[str]) -> str:
    """An unknown body field, with the closest known one (difflib, case-insensitive)."""
    if _REQUEST_NAMES.get(name) in known:
        return (
            f"unknown field; the request's field is `{_REQUEST_NAMES[name]}` "
            f"(`{name}` is how the answer names it)"
        )
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean `{by_lower[close[0]]}`?"
    if known:
        return "unknown field; the known fields are " + ", ".join(f"`{k}`" for k in known)
    return "unknown field"


def _parameter_message(error: dict[str, Any]) -> str:
    """Query, path and header parameter errors in our words rather than pydantic's."""
    kind = error.get("type")
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "enum":
        allowed = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"{given!r} is not one of the allowed values: {allowed}"
    if kind == "int_parsing":
        return f"{given!r} is not a whole number"
    if kind in ("greater_than_equal", "less_than_equal"):
        word = "at least" if kind == "greater_than_equal" else "at most"
        bound = ctx.get("ge", ctx.get("le"))
        return f"must be {word} {bound} (got {given})"
    if kind == "string_pattern_mismatch":
        return f"{given!r} does not have the expected form ({ctx.get('pattern')})"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    return _message(error)


class _HttpProblem(ProblemError):
    def __init__(self, status: int, type_name: str, title: str, detail: str, headers: Any) -> None:
        super().__init__(detail, headers=dict(headers or {}))
        self.status = status
        self.type_name = type_name
        self.title = title


_STATUS_TYPES = {
    400: ("validation-error", "Invalid request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    408: ("request-timeout", "Request body too slow"),
    413: ("payload-too-large", "Request body too large"),
}


def _allowed_methods(request: Request, fallback: str) -> str:
    """Starlette names only the first matching route's methods, but a path may have one route
    per method; the OpenAPI document knows them all."""
    table: list[tuple[re.Pattern[str], str]] | None = getattr(request.app.state, "allow", None)
    if table is None:
        table = []
        for path, item in request.app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$")
            table.append((pattern, ", ".join(sorted(m.upper() for m in item))))
        request.app.state.allow = table
    for pattern, methods in table:
        if pattern.match(request.url.path):
            return methods
    return fallback


# The most errors one 400 lists: a 64 KB body of 6,000 unknown keys was answered with
# 1.5 MB, each key with the list of the known ones. The rest are counted in the detail.
MAX_ERRORS = 20


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc, instance=request.url.path, request_id=_request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        labels = []  # how the detail names each error: a pointer, "body", or the parameter
        found = without_none_branches(exc.errors())
        for error in found[:MAX_ERRORS]:
            loc = tuple(error.get("loc", ()))
            kind = error.get("type")
            if kind == "json_invalid":
                errors.append(FieldError("", "the body is not valid JSON"))
            elif loc == ("body",) and kind == "missing":
                errors.append(FieldError("", "a JSON body is required"))
            elif kind == "duplicate_key":
                pointer = str((error.get("ctx") or {}).get("pointer", ""))
                errors.append(FieldError(pointer, "duplicate key; send each field once"))
            elif loc == ("body",):
                errors.append(FieldError("", "the body must be a JSON object"))
            elif kind == "extra_forbidden" and len(loc) >= 2 and loc[0] == "body":
                known = body_fields(request.scope.get("route"), loc[1:-1])
                errors.append(FieldError(json_pointer(loc), _unknown_field(str(loc[-1]), known)))
            elif loc and loc[0] == "body":
                errors.append(FieldError(json_pointer(loc), _message(error)))
            else:  # a query, path or header parameter: named as such, not as the body;
                # its pointer is /query/limit, /header/Idempotency-Key (as the service's own
                # checks of parameters name them); an index into a repeated one is not in
                # its name, but is in its pointer (/query/type/1)
                name = ".".join(str(p) for p in loc[1:] if not isinstance(p, int))
                errors.append(FieldError(json_pointer(loc), _parameter_message(error)))
                labels.append(f"{loc[0]} parameter {name}".strip())
                continue
            labels.append(errors[-1].pointer or "body")
        detail = (
            "; ".join(
                e.detail if not e.pointer and label not in ("body",) else f"{label}: {e.detail}"
                for label, e in zip(labels, errors, strict=True)
            )
            or "the request is invalid"
        )
        if len(found) > MAX_ERRORS:
            detail += f"; and {len(found) - MAX_ERRORS} more errors (the first {MAX_ERRORS} listed)"
        return problem_response(
            ValidationFailed(detail, errors=errors),
            instance=request.url.path,
            request_id=_request_id(request),
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc  # a bug, not an outage: the middleware answers 500
        return unavailable_response(
            exc,
            request.app.state.services.settings.unavailable_retry_after,
            instance=request.url.path,
            request_id=_request_id(request),
        )

    for kind in (sa_exc.DBAPIError, sa_exc.TimeoutError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, ValueError | RecursionError):
            # FastAPI's "There was an error parsing the body": bytes that are not UTF-8, a
            # number past Python's digit limit, nesting past the parser's depth. Said like the
            # other JSON body errors, with the pointer to the whole body.
            if isinstance(cause, UnicodeDecodeError):
                reason = "it is not UTF-8"
            elif isinstance(cause, RecursionError):
                reason = "it is nested too deeply"
            else:
                reason = "a number in it has too many digits"
            detail = f"the body is not valid JSON: {reason}"
            problem_ = ValidationFailed(f"body: {detail}", errors=[FieldError("", detail)])
            return problem_response(
                problem_, instance=request.url.path, request_id=_request_id(request)
            )
        type_name, title = _STATUS_TYPES.get(exc.status_code, ("http-error", "HTTP error"))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow", ""))
        problem = _HttpProblem(exc.status_code, type_name, title, str(exc.detail), headers)
        return problem_response(problem, instance=request.url.path, request_id=_request_id(request))


# What each problem type means to a person reading it, and what to do about it.
PROBLEM_HELP: dict[str, str] = {
    "validation-error": "The request is not valid: a body field, a query parameter or a "
    "header. `errors` names each invalid body field with a JSON Pointer (`/bandwidth`) and "
    "says what is wrong; an unknown field names the closest known one. Correct the request "
    "and send it again.",
    "bad-request": "The request is not valid. `detail` says why.",
    "not-found": "There is no such resource for your customer: the id is unknown, "
    "mistyped, or another customer's (which is answered the same way, on purpose).",
    "method-not-allowed": "This path does not take this HTTP method; the `Allow` header "
    "lists those it takes.",
    "conflict": "The request is valid but not possible in the current state. `detail` says why.",
    "capacity-exceeded": "The location's port capacity would be exceeded by this order or "
    "change. Choose a smaller bandwidth, another location, or wait until capacity is freed.",
    "address-pool-exhausted": "The location's IPv4 pool has no free block of the size "
    "asked for (`ipv4PrefixLength`). Ask for a smaller block or another location.",
    "invalid-state": "The connection's status (or, for a cancel, the bandwidth change's "
    "status) does not allow this now: e.g. a change to a terminated connection, suspending "
    "a suspended one, or cancelling a change that is no longer scheduled. `detail` names "
    "the state; `GET` the resource to see where it stands.",
    "too-many-pending-changes": "The connection already has the most bandwidth changes "
    "waiting to apply that are allowed. Cancel some, or wait until they have applied.",
    "unauthorized": "No access token, or one that is malformed, expired, revoked, or of a "
    "disabled client. Get a new token from `POST /oauth2/token` and send it as "
    "`Authorization: Bearer <token>`.",
    "insufficient-scope": "The access token lacks the scope this operation needs: `read` "
    "for reads, `write` for changes. Ask for that scope when getting the token.",
    "payload-too-large": "The request body is larger than the server accepts (64 KiB by default).",
    "unsupported-media-type": "Bodies are JSON: send `Content-Type: application/json`.",
    "request-timeout": "The request's headers or body arrived too slowly; send it again.",
    "precondition-failed": "`If-Match` names none of the connection's current entity tags: "
    "it changed since you read it. Read it again (its `ETag`) and decide again.",
    "rate-limited": "This client sent more requests than its rate limit allows (reads and "
    "writes apart; a list costs one read plus one per 100 rows). Wait `Retry-After` "
    "seconds; the `RateLimit-*` headers say how much is left.",
    "service-unavailable": "The service cannot reach its database right now. Nothing of "
    "the request was stored: retry after `Retry-After` seconds, with the same "
    "`Idempotency-Key` for a write.",
    "http-error": "An HTTP error without a more specific type; `detail` says what it is.",
    "idempotency-key-in-use": "The row of this `Idempotency-Key` was written and removed "
    "twice while the request looked for it (rare). Retry the request with the same key.",
    "idempotency-key-reused": "This `Idempotency-Key` was first used for a different "
    "request. Use a new key for a new request.",
    "not-acceptable": "The server cannot answer in a media type the `Accept` header allows.",
    "headers-too-large": "The request line and headers are larger than the server accepts "
    "(16 KiB by default).",
    "internal-error": "A bug on our side. Nothing is expected of you; quote the "
    "`requestId` of the answer when you report it.",
    "cursor-expired": "The events after your cursor are older than the retention period "
    "(`IOD_EVENTS_RETENTION_DAYS`) and have been pruned. Read the feed again without `after` "
    "(from the oldest event kept) or with `after=now`.",
    "schedule-exists": "The connection already has a bandwidth schedule (a connection has at "
    "most one). Change it with `PATCH`, or delete it first.",
    "too-many-webhook-endpoints": "The customer already has the most webhook endpoints "
    "allowed. Delete one it no longer needs, or send more event types to one endpoint.",
    "webhook-endpoint-disabled": "The webhook endpoint is disabled (by you, or by the service "
    "after a 410 Gone or days of failed attempts: `disabledReason` says which), so its "
    'deliveries are not sent. Enable it with `PATCH` `{"enabled": true}`, then retry the '
    "delivery.",
    "key-in-use": "The token signing key is still signing, or tokens it signed may still be "
    "valid: retiring it now would make them fail. Rotate first and wait until they have "
    "expired, or retire it with `--force` (docs/operations.md).",
    "insufficient-role": "The portal user's role does not allow this page or action "
    "(viewer, operator, admin). An admin of the customer can change the role.",
    "form-refused": "A portal form was refused before it was read: it was posted from "
    "another site, its security token was missing or stale (reload the page and send it "
    "again), or the browser sent no cookies.",
    "form-already-sent": "This portal form was sent before (a page reloaded, or a button "
    "pressed twice) and was not done again. A secret or sign-in link is shown only once: if "
    "it was lost, rotate the secret or ask for a new link.",
}


class ProblemType(BaseModel):
    """A problem type, for a program: its URI, title and explanation."""

    type: str
    title: str
    description: str


def _wants_html(request: Request) -> bool:
    """A browser (it asks for text/html before JSON); programs and curl get JSON."""
    accept = request.headers.get("accept", "").lower()
    if "text/html" not in accept:
        return False
    json_at = accept.find("json")
    return json_at < 0 or accept.find("text/html") < json_at


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}}code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body>
{body}
</body></html>
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body))


def _code(text: str) -> str:
    """Escaped text with `backticks` as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


router = APIRouter(tags=["Problems"])
HTML_CONTENT: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}


@router.get(
    "/problems/{problemType}",
    operation_id="getProblemType",
    summary="Describe a problem type",
    response_model=ProblemType,
    responses={
        200: {"description": "The problem type; a page for a browser", "content": HTML_CONTENT},
        404: problem("Unknown problem type"),
    },
)
def describe_problem(
    request: Request,
    problemType: Annotated[str, Path(examples=sorted(PROBLEM_TYPES))],
) -> Response:
    """Problem `type` URIs resolve here, so every error names a readable description: JSON
    for programs, a page for a person in a browser (`Accept: text/html`)."""
    title = PROBLEM_TYPES.get(problemType)
    if title is None:
        raise NotFound(f"no problem type {shown(problemType)}")
    uri = PROBLEM_BASE + problemType
    description = PROBLEM_HELP.get(problemType, title)
    if not _wants_html(request):
        body = ProblemType(type=uri, title=title, description=description)
        return Response(body.model_dump_json(), media_type="application/json")
    return _page(
        title,
        f"<h1>{html.escape(title)}</h1>\n<p>Problem type <code>{html.escape(uri)}</code>.</p>"
        f"\n<p>{_code(description)}</p>\n<p>Every error answer of this API is "
        "<code>application/problem+json</code> with a <code>requestId</code>; the operations "
        'are described at <a href="/docs">/docs</a>.</p>',
    )


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    """Where a person who opens the server's address should go: the interactive docs."""
    links = {"docs": "/docs", "openapi": "/openapi.json", "problems": "/problems/{type}"}
    if not _wants_html(request):
        body = {"name": "Internet On-Demand API", **links}
        return Response(orjson.dumps(body), media_type="application/json")
    return _page(
        "Internet On-Demand API",
        "<h1>Internet On-Demand API</h1>\n<p>This is an API for programs. Its documentation, "
        'which you can try out in the browser, is at <a href="/docs">/docs</a>; the OpenAPI '
        'document at <a href="/openapi.json">/openapi.json</a>.</p>',
    )
