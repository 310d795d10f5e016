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

`ConnectionWriteFastPath` does the same for the two hottest writes, POST /connections and
PUT …/bandwidth (issue 14), for their usual requests; see its docstring.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iod.audit import service as audit
from iod.audit.service import Actor
from iod.auth.dependencies import actor as actor_of
from iod.auth.dependencies import authorize
from iod.auth.tokens import Principal
from iod.connections import service
from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.infra import idempotency
from iod.infra.db import Database, is_unavailable
from iod.infra.errors import ProblemError
from iod.infra.http import entity_tag_of, loads_strict
from iod.infra.ids import looks_like_id
from iod.infra.problems import problem_response, unavailable_response

if TYPE_CHECKING:
    from iod.app import Services

PREFIX = "/internet-on-demand/connections/"
ROUTE_PATH = PREFIX + "{connectionId}"
CREATE_PATH = PREFIX[:-1]
BANDWIDTH = "/bandwidth"
BANDWIDTH_PATH = ROUTE_PATH + BANDWIDTH


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
        services = self.services

        async def answer() -> None:
            principal = await authorize(services, state, authorization or None, "read")
            body = connection_document(services.db, principal, connection_id)
            # What `connection_response` sends, without building a Response.
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": connection_headers(body),
            }
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await _answer_problems(services, scope, receive, send, answer)


# The work of the two hottest writes, run by both their FastAPI routes (endpoints.py) and
# `ConnectionWriteFastPath` below, inside `idempotency.run`'s transaction: they record and
# answer alike.
Work = Callable[[Session], idempotency.Outcome]


def create_work(
    services: Services, actor: Actor, principal: Principal, body: ConnectionRequest
) -> Work:
    def work(session: Session) -> idempotency.Outcome:
        audit.act_for(session, actor)  # the events of this transaction are the client's doing
        connection = service.create_connection(
            session, services.clock, principal, body, services.policy
        )
        location = f"/internet-on-demand/connections/{connection.id}"
        result = service.present_new(connection)
        headers = {"Location": location, "ETag": service.etag_of(result)}
        return idempotency.Outcome(201, result, headers)

    return work


def update_work(
    services: Services,
    actor: Actor,
    principal: Principal,
    connection_id: str,
    body: BandwidthUpdate,
    if_match: str | None,
) -> Work:
    def work(session: Session) -> idempotency.Outcome:
        audit.act_for(session, actor)
        connection, change, revert, pending = service.update_bandwidth(
            session, services.clock, principal, connection_id, body, services.policy, if_match
        )
        # No change: it will have that bandwidth then anyway, nothing was recorded.
        result = service.present_update(session, connection, change, revert, pending)
        return idempotency.Outcome(200, result, {"ETag": service.etag_of(result)})

    return work


async def _answer_problems(
    services: Services,
    scope: Scope,
    receive: Receive,
    send: Send,
    answer: Callable[[], Awaitable[Response | None]],
) -> None:
    """Runs `answer` (which sends its answer itself, or returns it) and renders the errors
    the app's exception handlers would: a `ProblemError`, and a database outage as 503.
    The path is the id's plain characters, so it is what `request.url.path` gives the
    exception handlers for `instance`."""
    path = scope["path"]
    state = scope["state"]
    try:
        response = await answer()
    except ProblemError as exc:
        response = problem_response(exc, instance=path, request_id=state.get("request_id"))
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        if not is_unavailable(exc):
            raise  # a bug, not an outage: the middleware answers 500
        response = unavailable_response(
            exc,
            services.settings.unavailable_retry_after,
            instance=path,
            request_id=state.get("request_id"),
        )
    if response is not None:
        await response(scope, receive, send)


def _replay(messages: list[Message], failure: BaseException | None, receive: Receive) -> Receive:
    """A `receive` that hands the app the messages already read (and then the error reading
    them raised, if any) before it reads on: the app sees the request as it arrived."""
    pending = list(messages)

    async def replayed() -> Message:
        nonlocal failure
        if pending:
            return pending.pop(0)
        if failure is not None:
            error, failure = failure, None
            raise error
        return await receive()

    return replayed


class ConnectionWriteFastPath:
    """POST /internet-on-demand/connections and PUT …/connections/{id}/bandwidth, the
    hottest writes (issue 14), answered in a pure ASGI layer like the fast GET above:
    FastAPI's routing, dependency solving and request parsing were about a sixth of a
    write's CPU.

    Only the usual request is answered here: a JSON body (`application/json`) that parses
    (`loads_strict`, no repeated key) and validates as the route's body model, with no
    `Idempotency-Key` or one well-formed key (as the SDK sends). For it the answer is the
    route's by construction: the same bearer check (`authorize`), the same work
    (`create_work`, `update_work`), the same transaction, key handling and rendering
    (`idempotency.run`, `run_without_key`), errors rendered as the exception handlers
    render them. Everything else (another content type, no body, a body that does not
    validate, a malformed or repeated Idempotency-Key, a client that hangs up, ids that
    cannot exist) goes on to the FastAPI route with the body as it arrived, so its
    answers, 400s above all, stay the route's own. A body that validates is authorized
    after it is read; FastAPI checks the token first, but the order only shows when both
    fail, and a body that does not validate goes to the route.
    """

    def __init__(self, app: ASGIApp, services: Services, create: Any, bandwidth: Any) -> None:
        self.app = app
        self.services = services
        self.create_route = create  # the APIRoutes the router would match: metrics label them
        self.bandwidth_route = bandwidth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        connection_id = None
        if method == "POST" and path == CREATE_PATH:
            route = self.create_route
        elif method == "PUT" and path.startswith(PREFIX) and path.endswith(BANDWIDTH):
            connection_id = path[len(PREFIX) : -len(BANDWIDTH)]
            if not looks_like_id(connection_id):  # a 404 (or no route): the route's
                await self.app(scope, receive, send)
                return
            route = self.bandwidth_route
        else:
            await self.app(scope, receive, send)
            return
        authorization = content_type = if_match = key = None
        for name, value in scope["headers"]:
            # The first of each, as `request.headers.get()` does.
            if name == b"authorization":
                authorization = authorization or value.decode("latin-1")
            elif name == b"content-type":
                content_type = content_type or value.decode("latin-1")
            elif name == b"if-match":
                if_match = if_match if if_match is not None else value.decode("latin-1")
            elif name == b"idempotency-key":
                if key is not None:  # more than one: the route's to answer
                    await self.app(scope, receive, send)
                    return
                key = value.decode("latin-1")
        if (
            content_type is None
            or content_type.split(";")[0].strip().lower() != "application/json"
            or (key is not None and not _KEY.fullmatch(key))
        ):
            await self.app(scope, receive, send)  # 415, or the malformed key's 400
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    raise _NotUsual  # a disconnect: the route's to handle
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            model = ConnectionRequest if connection_id is None else BandwidthUpdate
            body = _validated(b"".join(chunks), model)
        except _NotUsual:
            await self.app(scope, _replay(messages, None, receive), send)
            return
        except Exception as exc:  # reading it failed (413, 408): the route says so
            await self.app(scope, _replay(messages, exc, receive), send)
            return
        scope["route"] = route
        state = scope.setdefault("state", {})
        services = self.services

        async def answer() -> Response:
            principal = await authorize(services, state, authorization or None, "write")
            actor = actor_of(Request(scope), principal)
            work: Work
            if connection_id is None:
                assert isinstance(body, ConnectionRequest)
                work = create_work(services, actor, principal, body)
            else:
                assert isinstance(body, BandwidthUpdate)
                work = update_work(services, actor, principal, connection_id, body, if_match)
            # On the event loop when SQLite's writer is free (`in_writer`, `on_loop`): the
            # work does nothing before its transaction's BEGIN that it cannot do again.
            if key is None:
                return await services.db.in_writer(
                    idempotency.run_without_key, services, work, on_loop=True
                )
            return await services.db.in_writer(
                idempotency.run, services, Request(scope), principal, key, body, work,
                on_loop=True,
            )  # fmt: skip

        await _answer_problems(services, scope, receive, send, answer)


# What the routes' `idempotency.KeyHeader` accepts (a key it refuses goes to the route).
_KEY = re.compile(f"[{idempotency.KEY_CHARACTERS}]{{1,{idempotency.KEY_MAX_LENGTH}}}")


class _NotUsual(Exception):
    """The request is left to the FastAPI route."""


def _validated(raw: bytes, model: type[BaseModel]) -> BaseModel:
    if not raw:
        raise _NotUsual  # "a JSON body is required": the route's answer
    try:
        data = loads_strict(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise _NotUsual from exc
    if type(data) is not dict:  # not an object, or an object with a repeated key
        raise _NotUsual
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _NotUsual from exc
