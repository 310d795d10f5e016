"""Shared pieces of the HTTP edge: documented error responses and request checks."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from iod.errors import PreconditionFailed, UnsupportedMediaType


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
    415: problem("The body is not application/json"),
}


async def require_json(request: Request) -> None:
    """Bodies are JSON; anything else is 415 before it is parsed. No body at all is left to
    validation, which answers 400 for the missing required body. (`async`: it only reads
    headers, so FastAPI runs it on the event loop instead of a threadpool hop.)"""
    headers = request.headers
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return
    content_type = headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media or 'without a content type'}"
        )


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
_TAGS = re.compile(r'(W/)?"([!#-~]*)"')

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


def entity_tag(model: BaseModel, fields: set[str] | None = None) -> str:
    """A strong ETag: a digest of the JSON representation (only `fields`, when given)."""
    return entity_tag_of(model.model_dump_json(include=fields, exclude_none=True).encode())


def entity_tag_of(body: bytes) -> str:
    """The ETag of a representation already serialised, as `entity_tag` would make it."""
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def check_if_match(if_match: str | None, current: str) -> None:
    """412 unless `If-Match` is absent, `*` (the resource exists, or we would not be here),
    or names `current` with a strong tag."""
    if if_match is None or if_match.strip() == "*":
        return
    for weak, opaque in _TAGS.findall(if_match):
        if not weak and f'"{opaque}"' == current:
            return
    raise PreconditionFailed(
        f"If-Match {if_match} does not match the current ETag {current}: the connection "
        "changed since it was read; read it again and retry",
        headers={"ETag": current},
    )


# --- Strict JSON bodies: duplicate keys -------------------------------------------------


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class JsonObjectWithDuplicates(dict[str, Any]):
    """A parsed body object in which some key occurred twice (the last value kept, as
    `json.loads` does); `pointers` name each repeated key. Validation refuses it
    (`refuse_duplicate_keys`), so it answers 400 where any other invalid body would: after
    the token and scope checks."""

    def __init__(self, data: dict[str, Any], pointers: list[str]) -> None:
        super().__init__(data)
        self.pointers = pointers


def loads_strict(body: bytes | str) -> Any:
    """`json.loads`, but a repeated key in any object is noted: parsers disagree on which
    of two values wins, so a body that means different things to different readers (a
    proxy, a WAF, us) is refused instead of guessed at."""
    repeated: list[tuple[dict[str, Any], str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                repeated.append((result, key))
            result[key] = value
        return result

    data = json.loads(body, object_pairs_hook=pairs)
    if not repeated or not isinstance(data, dict):
        return data
    return JsonObjectWithDuplicates(data, _pointers(data, repeated))


def _pointers(root: Any, repeated: list[tuple[dict[str, Any], str]]) -> list[str]:
    """JSON Pointers (RFC 6901) to the repeated keys, found by walking from the root."""
    wanted: dict[int, list[str]] = {}
    for obj, key in repeated:
        wanted.setdefault(id(obj), []).append(key)
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            found.extend(f"{path}/{_escape(k)}" for k in wanted.get(id(node), ()))
            stack.extend((v, f"{path}/{_escape(str(k))}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}") for i, v in enumerate(node))
    return sorted(set(found))


def refuse_duplicate_keys(data: Any) -> Any:
    """A `model_validator(mode="before")` body: the error names the first repeated key's
    pointer (`ctx.pointer`), which the 400 renderer uses as the error's pointer."""
    if isinstance(data, JsonObjectWithDuplicates):
        pointer = data.pointers[0]
        raise PydanticCustomError(
            "duplicate_key",
            "duplicate key: {pointer} appears more than once in the body; send each field once",
            {"pointer": pointer},
        )
    return data


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


def body_fields(route: Any) -> list[str]:
    """The field names of a route's body model(s), for naming the closest known field of
    an unknown one; empty for a route without one."""
    names: list[str] = []
    for param in getattr(getattr(route, "dependant", None), "body_params", ()):
        model = getattr(getattr(param, "field_info", None), "annotation", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.extend(f.alias or name for name, f in model.model_fields.items())
    return names
