"""Shared pieces of the HTTP edge: documented error responses and request checks."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from iod.errors import UnsupportedMediaType


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


UNAUTHORIZED = problem("No, malformed, expired or revoked access token (RFC 6750)")
FORBIDDEN = problem("The access token lacks the scope this operation needs")
TOO_LARGE = problem("The request body is larger than 64 KiB")
SERVER_ERROR = problem("Unexpected server error; the problem carries the request id")

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    413: TOO_LARGE,
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
