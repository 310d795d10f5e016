"""Exceptions of the SDK. Every failure the API reports is an `ApiError` with its problem
details (RFC 9457); a server that cannot be reached is a `TransportError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from iod.client.models import Connection


class IodError(Exception):
    """The base of every exception the SDK raises."""


class ConfigurationError(IodError, ValueError):
    """The URL or the client credentials are missing or malformed."""


class UnexpectedResponse(IodError):
    """The server answered something that is not the documented JSON."""


class TransportError(IodError):
    """The server could not be reached, or the connection broke, even after retries."""

    def __init__(self, message: str, *, url: str | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `pointer` is an RFC 6901 JSON Pointer into the request body."""

    pointer: str
    detail: str


class ApiError(IodError):
    """An error answer of the API, with its problem details.

    `type`, `title`, `status`, `detail` and `instance` are the RFC 9457 members, `errors`
    the invalid fields (400), `request_id` the `X-Request-ID` to quote in a support request.
    Errors of the token endpoint (RFC 6749) set `oauth_error` (e.g. `invalid_client`).
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        type: str = "about:blank",  # the RFC 9457 member
        title: str = "",
        instance: str | None = None,
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
        oauth_error: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.type = type
        self.title = title
        self.instance = instance
        self.errors = errors or []
        self.request_id = request_id
        self.oauth_error = oauth_error
        self.retry_after = retry_after
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, detail={self.detail!r})"


class InvalidRequest(ApiError):
    """400: the body or a parameter is invalid; `errors` names each field."""


class Unauthorized(ApiError):
    """401: missing, expired or revoked token, or the client credentials were refused."""


class Forbidden(ApiError):
    """403: the client lacks the scope (`read` or `write`)."""


class NotFound(ApiError):
    """404: no such connection (or change) for this customer."""


class Conflict(ApiError):
    """409: not possible now (capacity exceeded, the connection's state)."""


class UnprocessableContent(ApiError):
    """422: e.g. an `Idempotency-Key` reused with a different body."""


class RateLimited(ApiError):
    """429: too many requests, even after the retries."""


class ServerError(ApiError):
    """5xx: the server failed; quote `request_id`."""


class ServiceUnavailable(ServerError):
    """503: the server is temporarily unable to serve, even after the retries."""


class WaitFailed(IodError):
    """A wait can no longer succeed, e.g. the connection ended `terminated`."""

    def __init__(self, message: str, connection: Connection) -> None:
        super().__init__(message)
        self.connection = connection


class ChangeNotApplied(WaitFailed):
    """The bandwidth change left the pending list without being in force."""


class WaitTimeout(IodError, TimeoutError):
    """The awaited state was not reached in time; `connection` is the last one seen."""

    def __init__(self, message: str, connection: Connection | None) -> None:
        super().__init__(message)
        self.connection = connection


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: UnprocessableContent,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[ApiError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def error_from_response(response: httpx.Response, retry_after: float | None = None) -> ApiError:
    """The typed exception for an error answer: problem+json, an OAuth error, or anything."""
    status = response.status_code
    header_id = response.headers.get("X-Request-ID")
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    cls = error_class(status)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        return cls(
            _text(body.get("error_description")) or code,
            status=status,
            title=code,
            request_id=header_id,
            oauth_error=code,
            retry_after=retry_after,
            body=body,
        )
    if isinstance(body, dict) and ("title" in body or "detail" in body or "type" in body):
        errors = [
            FieldError(str(item.get("pointer") or ""), str(item.get("detail") or ""))
            for item in body.get("errors") or []
            if isinstance(item, dict)
        ]
        title = _text(body.get("title")) or response.reason_phrase
        return cls(
            _text(body.get("detail")) or title or f"HTTP {status}",
            status=status,
            type=_text(body.get("type")) or "about:blank",
            title=title,
            instance=_text(body.get("instance")),
            errors=errors,
            request_id=_text(body.get("requestId")) or header_id,
            retry_after=retry_after,
            body=body,
        )
    request = response.request
    return cls(
        f"HTTP {status} {response.reason_phrase} from {request.method} {request.url}",
        status=status,
        title=response.reason_phrase,
        request_id=header_id,
        retry_after=retry_after,
        body=body if body is not None else response.text[:500],
    )
