"""Pure ASGI middleware: request id, body size and time limits, rate-limit headers, access
log. Cheap on the hot path."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from secrets import token_hex
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iod.infra.errors import (
    FieldError,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ValidationFailed,
)
from iod.infra.metrics import HttpMetrics
from iod.infra.problems import json_pointer, problem_response

log = structlog.get_logger("iod.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# nginx's status for "the client closed the connection before the answer": counted and
# logged as such, never as a 5xx.
CLIENT_CLOSED_REQUEST = 499

# The bearer check of a request that carries a body, before the body is read: the problem
# to answer (401), or None to let the application go on.
EarlyAuthentication = Callable[[dict[str, Any], str | None], Awaitable[ProblemError | None]]
# How a path that answers errors in a shape of its own (the Lumen paths) renders what this
# middleware refuses: (path, problem, request id) → a response, or None for problem+json.
RejectRenderer = Callable[[str, ProblemError, str], Response | None]


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float = 30.0,
        metrics: HttpMetrics | None = None,
        authenticate: EarlyAuthentication | None = None,
        authenticated_prefix: str | tuple[str, ...] = "/internet-on-demand/",
        render_reject: RejectRenderer | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.metrics = metrics
        self.authenticate = authenticate
        self.authenticated_prefix = authenticated_prefix
        self.render_reject = render_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        declared_length = None
        chunked = False
        authorization = None
        if_match_lines = authorization_lines = content_type_lines = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                declared_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorization = value.decode("latin-1")
                authorization_lines += 1
            elif name == b"content-type":
                content_type_lines += 1
            elif name == b"if-match":
                if_match_lines += 1
        if if_match_lines > 1:
            scope["headers"] = one_line_of(scope["headers"], b"if-match")
        # Always our own id: 128 random bits as 32 hex digits (what uuid4().hex gave, at a
        # fraction of its cost). A client's X-Request-Id is logged beside it, never instead:
        # a chosen id would let a client forge or collide with other requests' log lines.
        request_id = token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        if incoming is not None and _SAFE_ID.match(incoming):
            structlog.contextvars.bind_contextvars(
                request_id=request_id, client_request_id=incoming
            )
        else:
            incoming = None
            structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        body_done = False
        status = 500
        limit = self.max_body_bytes
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                # The authentication dependency leaves the client's rate-limit state here.
                rate_limit = state.get("rate_limit")
                if rate_limit is not None:
                    headers.extend(rate_limit.headers())
                if not body_done and (chunked or declared_length not in (None, b"0")):
                    # Answered before the body was read (413, 408, 401...): close, or the
                    # rest of the body would keep the connection open and busy.
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        received = 0
        body_deadline: float | None = None
        disconnected = False

        async def limited_receive() -> Message:
            nonlocal received, body_deadline, body_done, disconnected
            if body_done:  # e.g. waiting for a disconnect: no deadline
                return await receive()
            # A client that trickles its body holds a request open: the whole body must
            # arrive within body_timeout of the app starting to read it.
            if body_deadline is None:
                body_deadline = asyncio.get_running_loop().time() + self.body_timeout
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"the request body did not arrive within {self.body_timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body reading untouched.
                    raise HTTPException(413, f"the request body exceeds {limit} bytes")
                body_done = not message.get("more_body", False)
            else:
                # The client hung up before its body was complete: whatever the app makes
                # of it, the request is counted and logged as a client disconnect.
                disconnected = True
                body_done = True
            return message

        try:
            too_large = False
            if declared_length is not None:
                try:
                    too_large = int(declared_length) > limit
                except ValueError:
                    too_large = False
            refused: ProblemError | None = (
                PayloadTooLarge(f"the request body exceeds {limit} bytes")
                if too_large
                else nul_in_url(scope)
            )
            if (
                refused is None
                and (authorization_lines > 1 or content_type_lines > 1)
                and scope["path"].startswith(self.authenticated_prefix)
            ):
                refused = repeated_header(authorization_lines > 1)
            if (
                refused is None
                and self.authenticate is not None
                and (chunked or declared_length not in (None, b"0"))
                and scope["path"].startswith(self.authenticated_prefix)
            ):
                # A request with a body and no valid token is answered before its body is
                # read (the connection is then closed): no one without a token makes the
                # server wait for, or buffer, a body.
                refused = await self.authenticate(state, authorization)
            if refused is not None:
                await self._reject(scope, send_with_id, refused, request_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        except ClientDisconnect:
            disconnected = True
        except Exception:
            if not disconnected:
                # Unexpected errors still get a problem document and the request id header.
                log.exception("request.failed", path=scope["path"])
                if not started_response:
                    await self._reject(scope, send_with_id, _internal_error(), request_id)
        finally:
            elapsed = time.perf_counter() - started
            if disconnected:
                status = CLIENT_CLOSED_REQUEST
            if self.metrics is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.observe(scope["method"], route, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            if incoming is None:
                structlog.contextvars.unbind_contextvars("request_id")
            else:
                structlog.contextvars.unbind_contextvars("request_id", "client_request_id")

    async def _reject(
        self, scope: Scope, send: Send, problem: ProblemError, request_id: str
    ) -> None:
        response = None
        if self.render_reject is not None:
            response = self.render_reject(scope["path"], problem, request_id)
        if response is None:
            response = problem_response(problem, instance=scope["path"], request_id=request_id)
        await response(scope, _empty_receive, send)


def repeated_header(authorization: bool) -> ValidationFailed:
    """A 400 for a request of the API with two Authorization or Content-Type lines: each
    holds one value (RFC 9110 §5.3), and layers that read the first and layers that read the
    last would disagree about which the client meant."""
    name = "Authorization" if authorization else "Content-Type"
    return ValidationFailed.field(f"/header/{name}", f"send one {name} header, not several")


def one_line_of(headers: list[tuple[bytes, bytes]], field: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with the lines of the list-valued `field` combined into one, in order and
    comma-separated, where its first line was (RFC 9110 §5.3): every reader of the headers
    (which take the first line) then sees them all."""
    values = [value for name, value in headers if name == field]
    combined: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name != field:
            combined.append((name, value))
        elif values:
            combined.append((field, b", ".join(values)))
            values = []
    return combined


def nul_in_url(scope: Scope) -> ProblemError | None:
    """A NUL (`%00`) in the path or the query: no id, name or value of this API holds one,
    and PostgreSQL cannot compare text with one (a lookup was a 500), so it is answered here,
    once for every route: in the path, 404 (no resource has such a path, as for any garbage
    id); in the query, 400 naming each parameter."""
    if "\x00" in scope["path"]:
        return NotFound("no resource has a NUL character (%00) in its path")
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    errors = []
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            pointer = json_pointer(("query", name.replace("\x00", "")))
            errors.append(FieldError(pointer, "must not contain a NUL character (%00)"))
    detail = "the query must not contain a NUL character (%00)"
    return ValidationFailed(detail, errors=errors or [FieldError("/query", detail)])


class _InternalError(ProblemError):
    status = 500
    type_name = "internal-error"
    title = "Internal server error"


def _internal_error() -> ProblemError:
    return _InternalError("an unexpected error occurred; quote the request id when reporting it")


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
