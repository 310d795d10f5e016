"""One renderer for every error: RFC 9457 problem+json with the request id."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from iod.db import is_unavailable
from iod.errors import (
    PROBLEM_BASE,
    PROBLEM_TYPES,
    FieldError,
    NotFound,
    Problem,
    ProblemError,
    ServiceUnavailable,
    ValidationFailed,
)
from iod.http import body_fields, problem

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


def _pointer(loc: tuple[Any, ...]) -> str:
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc, instance=request.url.path, request_id=_request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        labels = []  # how the detail names each error: a pointer, "body", or the parameter
        for error in exc.errors():
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
            elif kind == "extra_forbidden" and len(loc) == 2:
                known = body_fields(request.scope.get("route"))
                errors.append(FieldError(_pointer(loc), _unknown_field(str(loc[1]), known)))
            elif loc and loc[0] == "body":
                errors.append(FieldError(_pointer(loc), _message(error)))
            else:  # a query, path or header parameter: named as such, not as the body
                # (an index into a repeated parameter is not part of its name)
                name = ".".join(str(p) for p in loc[1:] if not isinstance(p, int))
                where = f"{loc[0]} parameter {name}".strip()
                errors.append(FieldError("", f"{where}: {_parameter_message(error)}"))
                labels.append(where)
                continue
            labels.append(errors[-1].pointer or "body")
        detail = (
            "; ".join(
                e.detail if not e.pointer and label not in ("body",) else f"{label}: {e.detail}"
                for label, e in zip(labels, errors, strict=True)
            )
            or "the request is invalid"
        )
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
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's "There was an error parsing the body" for bytes that are not UTF-8:
            # said like the other JSON body errors, with the pointer to the whole body.
            detail = "the body is not valid JSON: it is not UTF-8"
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


router = APIRouter(tags=["Problems"])


@router.get(
    "/problems/{problemType}",
    operation_id="getProblemType",
    summary="Describe a problem type",
    responses={404: problem("Unknown problem type")},
)
def describe_problem(
    problemType: Annotated[str, Path(examples=sorted(PROBLEM_TYPES))],
) -> dict[str, str]:
    """Problem `type` URIs resolve here, so every error names a readable description."""
    title = PROBLEM_TYPES.get(problemType)
    if title is None:
        raise NotFound(f"no problem type {problemType!r}")
    return {"type": PROBLEM_BASE + problemType, "title": title}
