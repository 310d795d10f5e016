"""The server's own OpenAPI: the spec's paths, operationIds and schemas, plus extensions."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from iod.auth.endpoints import OAuthError
from iod.infra.errors import PROBLEM_TYPES
from iod.infra.http import problem

DESCRIPTION = """\
Provision internet connections and change their bandwidth, now or at a future
`effectiveDate`, through OAuth 2.0 client credentials.

* Get a token at `POST /oauth2/token` (HTTP Basic or form-body client authentication).
* Bandwidth is written `100 Mbps` or `1 Gbps`; responses are always canonical.
* Errors are RFC 9457 `application/problem+json`; invalid fields are named by JSON Pointers
  in `errors`, and every response carries `X-Request-ID`.

Problem types: {types}
"""

PUBLIC_PATHS = (
    "/oauth2/token",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/healthz",
    "/readyz",
    "/problems/{problemType}",
    "/metrics",
)

# Paths that answer without the database; every other operation may answer 503.
NO_DATABASE = ("/healthz", "/problems/{problemType}", "/.well-known/oauth-authorization-server",
               "/metrics")  # fmt: skip

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI reference naming the problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "requestId": {"type": "string", "description": "Also in the X-Request-ID header"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {
                    "pointer": {
                        "type": "string",
                        "description": "RFC 6901 JSON Pointer into the request body",
                    },
                    "detail": {"type": "string"},
                },
            },
        },
    },
}


RATE_LIMIT_HEADERS: dict[str, Any] = {
    name: {"description": description, "schema": {"type": "integer", "minimum": 0}}
    for name, description in (
        ("RateLimit-Limit", "The client's burst: requests of this kind (read or write) it "
                            "may send at once"),
        ("RateLimit-Remaining", "Requests of this kind left in the burst now"),
        ("RateLimit-Reset", "Seconds until the burst is whole again"),
    )
}  # fmt: skip


def build_openapi(app: FastAPI) -> dict[str, Any]:
    types = ", ".join(f"`/problems/{name}` ({title})" for name, title in PROBLEM_TYPES.items())
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=DESCRIPTION.format(types=types),
        routes=app.routes,
        tags=[
            {"name": "Bandwidth", "description": "Bandwidth provisioning and adjustment"},
            {"name": "Connections", "description": "Manage internet connections"},
            {"name": "OAuth 2.0", "description": "Access tokens"},
        ],
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["OAuthError"] = OAuthError.model_json_schema()
    for path, path_item in doc.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]  # FastAPI's default; invalid bodies are 400 here
            # Any request may be too large or meet an unexpected failure.
            responses.setdefault("413", problem("The request body is larger than 64 KiB"))
            responses.setdefault("500", problem("Unexpected server error"))
            if "requestBody" in operation:
                responses.setdefault("408", problem("The request body arrived too slowly"))
            if path not in PUBLIC_PATHS:
                # Authenticated operations: the client's rate limit on each answer.
                for status, response in responses.items():
                    if status.startswith("2") or status == "429":
                        response.setdefault("headers", {}).update(RATE_LIMIT_HEADERS)
            if path not in NO_DATABASE:
                responses.setdefault(
                    "503",
                    problem("The database is not available right now; retry after Retry-After"),
                )
    # Authentication applies everywhere except where an operation says otherwise.
    doc["security"] = [{"oauth2": []}]
    for path in PUBLIC_PATHS:
        for operation in doc["paths"].get(path, {}).values():
            operation["security"] = []
    return doc
