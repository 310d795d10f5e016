"""Domain errors carry their HTTP status; one renderer turns them into problem+json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_BASE = "/problems/"
ECHO_LIMIT = 64


def shown(value: str, limit: int = ECHO_LIMIT) -> str:
    """A value the client sent, quoted for a problem's detail: its first `limit` characters
    and an ellipsis when it is longer (an id of 3,000 characters is not echoed whole)."""
    return repr(value) if len(value) <= limit else repr(value[:limit] + "…")


@dataclass(frozen=True)
class FieldError:
    pointer: str
    detail: str


# Every problem type the service can answer, with its title: each ProblemError subclass is
# added when it is defined (wherever it lives), and /problems/{type} describes them all.
PROBLEM_TYPES: dict[str, str] = {"bad-request": "Bad request"}


class ProblemError(Exception):
    """An error with a stable problem type; subclasses set the status and type."""

    status: int = 400
    type_name: str = "bad-request"
    title: str = "Bad request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PROBLEM_TYPES.setdefault(cls.type_name, cls.title)

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.type_name


class ValidationFailed(ProblemError):
    status = 400
    type_name = "validation-error"
    title = "Invalid request"

    @classmethod
    def field(cls, pointer: str, detail: str) -> ValidationFailed:
        return cls(f"{pointer}: {detail}", errors=[FieldError(pointer, detail)])


class NotFound(ProblemError):
    status = 404
    type_name = "not-found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    type_name = "conflict"
    title = "Conflict"


class CapacityExceeded(Conflict):
    type_name = "capacity-exceeded"
    title = "Location capacity exceeded"


class AddressPoolExhausted(Conflict):
    type_name = "address-pool-exhausted"
    title = "No IPv4 block of that size is left at the location"


class InvalidState(Conflict):
    type_name = "invalid-state"
    title = "Not allowed in the connection's current state"


class ChangeInvalidState(InvalidState):
    """The same problem type, about a bandwidth change's state rather than its
    connection's (e.g. cancelling a change that is no longer scheduled)."""

    title = "Not allowed in the bandwidth change's current state"


class TooManyPendingChanges(Conflict):
    type_name = "too-many-pending-changes"
    title = "Too many pending bandwidth changes"


class ScheduleExists(Conflict):
    """A connection has at most one bandwidth schedule (docs/schedules.md)."""

    type_name = "schedule-exists"
    title = "The connection already has a schedule"


class Unauthorized(ProblemError):
    status = 401
    type_name = "unauthorized"
    title = "Unauthorized"


class Forbidden(ProblemError):
    status = 403
    type_name = "insufficient-scope"
    title = "Insufficient scope"


class PayloadTooLarge(ProblemError):
    status = 413
    type_name = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(ProblemError):
    status = 415
    type_name = "unsupported-media-type"
    title = "Unsupported media type"


class RequestTimeout(ProblemError):
    status = 408
    type_name = "request-timeout"
    title = "Request body too slow"


class PreconditionFailed(ProblemError):
    status = 412
    type_name = "precondition-failed"
    title = "Precondition failed"


class RateLimited(ProblemError):
    status = 429
    type_name = "rate-limited"
    title = "Too many requests"


class ServiceUnavailable(ProblemError):
    """The database cannot be used right now (down, restarting, locked): retry later."""

    status = 503
    type_name = "service-unavailable"
    title = "Service unavailable"

    @classmethod
    def retry_later(cls, detail: str, seconds: int) -> ServiceUnavailable:
        return cls(detail, headers={"Retry-After": str(seconds)})


@dataclass
class Problem:
    """The RFC 9457 document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.instance:
            body["instance"] = self.instance
        if self.request_id:
            body["requestId"] = self.request_id
        if self.errors:
            body["errors"] = [{"pointer": e.pointer, "detail": e.detail} for e in self.errors]
        return body


PROBLEM_TYPES.update(
    {
        "method-not-allowed": "Method not allowed",
        "http-error": "HTTP error",
        "idempotency-key-in-use": "The Idempotency-Key changed while looked up; retry",
        "idempotency-key-reused": "Idempotency-Key reused with a different request",
        "not-acceptable": "Not acceptable",
        "headers-too-large": "Request header fields too large",
        "internal-error": "Internal server error",
        "cursor-expired": "Cursor expired",
    }
)
