"""Shared pieces of the HTTP edge: documented error responses and request checks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Header, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from iod.infra.errors import UnsupportedMediaType
from iod.infra.representation import JsonObjectWithDuplicates as JsonObjectWithDuplicates
from iod.infra.representation import check_if_match as check_if_match
from iod.infra.representation import entity_tag as entity_tag
from iod.infra.representation import entity_tag_of as entity_tag_of
from iod.infra.representation import loads_strict as loads_strict
from iod.infra.representation import refuse_duplicate_keys as refuse_duplicate_keys


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


UNAUTHORIZED = problem("No, malformed, expired or revoked access token (RFC 6750)")
FORBIDDEN = problem("The access token lacks the scope this operation needs")
TOO_LARGE = problem("The request body is larger than 64 KiB (by default)")
RATE_LIMITED: dict[str, Any] = {
    **problem(
        "This client is over its rate limit (reads and writes are limited apart); "
        "retry after `Retry-After` seconds"
    ),
    "headers": {
        "Retry-After": {
            "description": "Seconds until the client may send again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
PRECONDITION_FAILED = problem(
    "`If-Match` names none of the connection's current ETags: it changed since it was read "
    "(`/problems/precondition-failed`); read it again"
)
SERVER_ERROR = problem("Unexpected server error; the problem carries the request id")

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    413: TOO_LARGE,
    429: RATE_LIMITED,
    500: SERVER_ERROR,
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    400: problem("Invalid body: each invalid field is named by a JSON Pointer in `errors`"),
    415: problem(
        "The body is not application/json (nor another application/*+json); a PATCH's is "
        "not a JSON merge patch (application/merge-patch+json or application/json)"
    ),
}


# PATCH bodies are JSON merge patches (RFC 7396), sent as such or as plain JSON; a 415 of a
# PATCH says so in Accept-Patch (RFC 5789 §2.2).
MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/json")
JSON_PATCH = "application/json-patch+json"


async def require_json(request: Request) -> None:
    """Bodies are JSON (`application/json` or another `application/*+json`); anything else
    is 415 before it is parsed. A JSON Patch (RFC 6902: a list of operations, not the
    fields) is refused everywhere, and a PATCH takes a merge patch only
    (`MERGE_PATCH_TYPES`). No body at all is left to validation, which answers 400 for the
    missing required body. (`async`: it only reads headers, so FastAPI runs it on the event
    loop instead of a threadpool hop.)"""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return
    content_type = headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if request.method == "PATCH":
        if media not in MERGE_PATCH_TYPES:
            raise UnsupportedMediaType(
                _refusal(media, "a JSON merge patch (RFC 7396): " + " or ".join(MERGE_PATCH_TYPES)),
                headers={"Accept-Patch": ", ".join(MERGE_PATCH_TYPES)},
            )
    elif media == JSON_PATCH or (
        media != "application/json"
        and not (media.startswith("application/") and media.endswith("+json"))
    ):
        raise UnsupportedMediaType(_refusal(media, "application/json"))


def _refusal(media: str, wanted: str) -> str:
    if not media:
        return f"send the body as {wanted}, with a Content-Type header (none was sent)"
    if media == JSON_PATCH:
        return f"a JSON Patch (RFC 6902, {JSON_PATCH}) is not accepted: send the body as {wanted}"
    return f"send the body as {wanted}, not {media}"


# --- ETag and If-Match (RFC 9110 §8.8.3, §13.1.1) -----------------------------------------

ETAG_HEADER: dict[str, Any] = {
    "ETag": {
        "description": "The connection's entity tag: it changes whenever the connection's "
        "representation does (status, bandwidth, pending changes, ...). Send it back in "
        "`If-Match` to act only on what was read.",
        "schema": {"type": "string"},
    }
}
# Entity tags are quoted strings of visible ASCII, optionally weak; a list has commas.

IfMatchHeader = Annotated[
    # Documented as a string only: an optional header is absent, never `null`.
    str | SkipJsonSchema[None],
    Header(
        alias="If-Match",
        # Neither a pattern nor a maximum length: a value that names no current tag, however
        # it is spelt, is simply a condition that is false (412), and the server bounds every
        # header's size (IOD_HTTP_MAX_HEADER_BYTES).
        description=(
            'Extension: `"<etag>"`, a comma-separated list of them, or `*`. Act only if the '
            "connection's current `ETag` is one of these (or `*`); otherwise 412, also for a "
            "value that names no entity tag. Weak tags (`W/...`) never match (strong "
            "comparison). Without the header, no check."
        ),
    ),
]


# --- Strict JSON bodies: duplicate keys (parsed in iod.infra.representation) ------------


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by `loads_strict`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes whose bodies are parsed by `loads_strict` (FastAPI's documented way to
    change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def body_fields(route: Any, path: tuple[Any, ...] = ()) -> list[str]:
    """The field names of a route's body model(s), for naming the closest known field of
    an unknown one; `path` (names and list indexes, as in a validation error's `loc` after
    "body") leads to a nested object's. Empty for a route without one, or a path that does
    not lead to a model."""
    names: list[str] = []
    for param in getattr(getattr(route, "dependant", None), "body_params", ()):
        model = _model_at(getattr(getattr(param, "field_info", None), "annotation", None), path)
        if model is not None:
            names.extend(f.alias or name for name, f in model.model_fields.items())
    return names


def _model_at(annotation: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that `path` leads to from `annotation` (through models' fields, by name or
    alias, and list items, by index; optional types unwrapped), or None."""
    for step in (None, *path):
        if step is not None:
            if isinstance(step, int):
                items = [a for a in get_args(annotation) if a is not type(None)]
                annotation = items[0] if len(items) == 1 else None
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                fields = {f.alias or n: f for n, f in annotation.model_fields.items()}
                found = fields.get(str(step))
                annotation = found.annotation if found is not None else None
            else:
                return None
        # Optional[X] (X | None): X.
        options = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) in (Union, UnionType) and len(options) == 1:
            annotation = options[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
