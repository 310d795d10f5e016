"""GET /internet-on-demand/connections/{id}, the hottest read, answered in a pure ASGI layer.

Issue 6's profile showed FastAPI's routing, dependency solving and response handling cost
more than the read itself. This layer sits just inside `RequestContextMiddleware` (request
id, RateLimit-* headers, metrics, access log) and answers that one request with the same
code the FastAPI route uses: `authorize` for the bearer token, rate limit and scope, and
`connection_document` / `connection_headers` for the body and its headers, sent as two ASGI
messages without a Starlette `Response`. Errors are rendered by the same renderer as
the app's exception handlers. Anything else, including ids that cannot exist (their 404
comes from the route), goes on to FastAPI untouched. The route itself stays: it documents
the operation in /openapi.json and serves the request when the app is mounted under a
root path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Response
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Receive, Scope, Send

from iod.auth.dependencies import authorize
from iod.auth.tokens import Principal
from iod.connections import service
from iod.infra.db import Database, is_unavailable
from iod.infra.errors import ProblemError
from iod.infra.http import entity_tag_of
from iod.infra.ids import looks_like_id
from iod.infra.problems import problem_response, unavailable_response

if TYPE_CHECKING:
    from iod.app import Services

PREFIX = "/internet-on-demand/connections/"
ROUTE_PATH = PREFIX + "{connectionId}"


def connection_document(db: Database, principal: Principal, connection_id: str) -> bytes:
    """The connection as JSON: one prepared statement (no ORM session, see
    `PreparedSelect`), serialised once."""
    return service.view(db, principal, connection_id).model_dump_json(exclude_none=True).encode()


def connection_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of a connection document: its ETag (for a `Connection` the ETag's fields
    are all of its fields, so its digest is the digest of this very body, see
    `service.etag_of`), length and type."""
    return [
        (b"etag", entity_tag_of(body).encode()),
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]


def connection_response(db: Database, principal: Principal, connection_id: str) -> Response:
    """What the FastAPI route answers; the fast path sends the same body and headers."""
    body = connection_document(db, principal, connection_id)
    headers = {name.decode(): value.decode() for name, value in connection_headers(body)}
    return Response(body, headers=headers)


class ConnectionReadFastPath:
    def __init__(self, app: ASGIApp, services: Services, route: Any) -> None:
        self.app = app
        self.services = services
        self.route = route  # the APIRoute the router would match: metrics label it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope.get("root_path")
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        connection_id = scope["path"][len(PREFIX) :]
        if not looks_like_id(connection_id):  # also sub-resources: an id has no "/"
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        state = scope.setdefault("state", {})
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first one, as request.headers.get() does
                authorization = value.decode("latin-1")
                break
        # The path is the id's plain characters, so it is what `request.url.path` gives
        # the exception handlers for `instance`.
        path = scope["path"]
        response: Response
        try:
            principal = await authorize(self.services, state, authorization or None, "read")
            body = connection_document(self.services.db, principal, connection_id)
        except ProblemError as exc:
            response = problem_response(exc, instance=path, request_id=state.get("request_id"))
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            if not is_unavailable(exc):
                raise  # a bug, not an outage: the middleware answers 500
            response = unavailable_response(
                exc,
                self.services.settings.unavailable_retry_after,
                instance=path,
                request_id=state.get("request_id"),
            )
        else:
            # What `connection_response` sends, without building a Response.
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": connection_headers(body),
            }
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)
