"""Shared pieces of the HTTP edge: documented error responses and request checks."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import Header, Request
from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema

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


def require_json(request: Request) -> None:
    """Bodies are JSON; anything else is 415 before it is parsed. No body at all is left to
    validation, which answers 400 for the missing required body."""
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
