"""What the sync and the async client share: paths, bodies, parsing, retries and waiting."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from iod.client.errors import (
    ApiError,
    ChangeNotApplied,
    TransportError,
    UnexpectedResponse,
    WaitFailed,
    WaitTimeout,
    error_from_response,
)
from iod.client.models import (
    TERMINATED,
    BandwidthChange,
    BandwidthUpdateResult,
    Connection,
    Model,
)
from iod.client.retry import RetryPolicy, parse_retry_after

API = "/internet-on-demand"
CONNECTIONS = f"{API}/connections"
TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

DEFAULT_TIMEOUT = 10.0
"""Seconds for one HTTP request."""
DEFAULT_WAIT = 300.0
"""Seconds a wait lasts at most, unless told otherwise."""
POLL_FIRST = 0.2
POLL_FACTOR = 1.5
POLL_MAX = 2.0

M = TypeVar("M", bound=Model)


def connection_path(connection_id: str) -> str:
    return f"{CONNECTIONS}/{quote(connection_id, safe='')}"


def request_headers(method: str) -> dict[str, str]:
    """Headers of one call, kept across its retries: an Idempotency-Key on POST and PUT."""
    if method.upper() in IDEMPOTENT_METHODS:
        return {}
    return {"Idempotency-Key": str(uuid.uuid4())}


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/".join(str(part) for part in first["loc"])
        raise UnexpectedResponse(
            f"the server's answer is not a valid {model.__name__}: {where}: {first['msg']}"
        ) from exc


def json_body(response: httpx.Response) -> Any:
    if response.status_code == 204:  # No Content (a DELETE)
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise UnexpectedResponse(
            f"HTTP {response.status_code} from {response.request.method} {response.request.url} "
            "is not JSON"
        ) from exc


def check(response: httpx.Response) -> httpx.Response:
    """The response if it is a success, else its typed error."""
    if response.is_success:
        return response
    raise error_from_response(response, parse_retry_after(response.headers.get("Retry-After")))


def retry_delay(policy: RetryPolicy, attempt: int, error: Exception) -> float | None:
    """How long to wait before the next attempt after `error`, or None to raise it."""
    if isinstance(error, httpx.TransportError):
        return policy.delay(attempt, None)
    if isinstance(error, ApiError) and error.status in policy.statuses:
        return policy.delay(attempt, error.retry_after)
    if isinstance(error, ApiError) and str(error.type).endswith("/idempotency-key-in-use"):
        # The key's row came and went while the server looked for it (rare): the same
        # key again gets the first answer, or does the work once.
        return policy.delay(attempt, None)
    return None


def transport_error(url: str, exc: httpx.TransportError, attempts: int) -> TransportError:
    reason = str(exc) or type(exc).__name__
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    return TransportError(f"cannot reach {url}: {reason}{tries}", url=url, attempts=attempts)


def aware(value: datetime | str, name: str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone, e.g. datetime.now(UTC)")
    return value.isoformat()


def seconds_until(value: datetime | str | None) -> float:
    """Seconds from now until an effective date (0 when absent, past or unparsable)."""
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return 0.0
    if value.tzinfo is None:
        return 0.0
    return max(0.0, (value - datetime.now(UTC)).total_seconds())


def traffic_params(
    start: datetime | str | None, end: datetime | str | None, step: int | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if start is not None:
        params["from"] = aware(start, "start")
    if end is not None:
        params["to"] = aware(end, "end")
    if step is not None:
        params["step"] = step
    return params


def create_body(location_id: str, bandwidth: str, description: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"locationId": location_id, "bandwidth": bandwidth}
    if description is not None:
        body["description"] = description
    return body


def update_body(
    bandwidth: str,
    effective_date: datetime | str | None,
    revert_at: datetime | str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"bandwidth": bandwidth}
    if effective_date is not None:
        body["effectiveDate"] = aware(effective_date, "effective_date")
    if revert_at is not None:
        body["revertAt"] = aware(revert_at, "revert_at")
    return body


ACTIONS = frozenset({"suspend", "resume", "terminate"})


def action_path(connection_id: str, action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(sorted(ACTIONS))}")
    return f"{connection_path(connection_id)}/{action}"


def changes_path(connection_id: str, change_id: str | None = None) -> str:
    path = f"{connection_path(connection_id)}/bandwidth-changes"
    return path if change_id is None else f"{path}/{quote(change_id, safe='')}"


def parse_changes(data: Any) -> tuple[list[BandwidthChange], str | None]:
    """The changes and `nextCursor` of a page of a connection's changes."""
    items = data.get("bandwidthChanges", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UnexpectedResponse("the server's answer is not a list of bandwidth changes")
    cursor = data.get("nextCursor")
    changes = [parse(BandwidthChange, item) for item in items]
    return changes, cursor if isinstance(cursor, str) and cursor else None


def follow(cursor: str, seen: set[str]) -> str:
    """`cursor`, once: a server that sends a cursor twice would make a list loop forever."""
    if cursor in seen:
        raise UnexpectedResponse(f"the server sent the cursor {cursor!r} twice")
    seen.add(cursor)
    return cursor


def poll_delays() -> Iterator[float]:
    """Short backoff polling: 0.2 s, 0.3 s, 0.45 s, … up to 2 s."""
    delay = POLL_FIRST
    while True:
        yield delay
        delay = min(POLL_MAX, delay * POLL_FACTOR)


def page(data: Any) -> tuple[list[Any], str | None]:
    """The items and `nextCursor` of a list answer."""
    if not isinstance(data, dict) or not isinstance(data.get("connections"), list):
        raise UnexpectedResponse("the connection list has no 'connections' array")
    cursor = data.get("nextCursor")
    return data["connections"], cursor if isinstance(cursor, str) and cursor else None


Done = Callable[[Connection], bool]


def status_reached(target: str) -> Done:
    def done(connection: Connection) -> bool:
        if connection.status == target:
            return True
        if connection.status == TERMINATED:
            raise WaitFailed(
                f"connection {connection.id} is terminated; it will never be {target}",
                connection,
            )
        return False

    return done


def change_applied(change_id: str, bandwidth: str) -> Done:
    """In force: the change is no longer pending and the bandwidth is its target."""

    def done(connection: Connection) -> bool:
        if connection.pending(change_id) is not None:
            return False
        if connection.bandwidth == bandwidth:
            return True
        raise ChangeNotApplied(
            f"bandwidth change {change_id} on {connection.id} is no longer pending but the "
            f"bandwidth is {connection.bandwidth}, not {bandwidth}: it failed, was cancelled "
            "or a later change replaced it",
            connection,
        )

    return done


def describe_wait(connection_id: str, target: str) -> str:
    return f"connection {connection_id} to be {target}"


def describe_change(connection_id: str, change_id: str, bandwidth: str) -> str:
    return f"bandwidth change {change_id} ({bandwidth}) on {connection_id} to be applied"


class Waiter:
    """The schedule of one wait: after each poll, done (None), or how long to sleep.

    Before `start_in` seconds have passed (a change's effective date) it polls at most
    once a minute; afterwards 0.2 s, 0.3 s, … up to 2 s, until `timeout`.
    """

    def __init__(
        self,
        what: str,
        done: Done,
        timeout: float,
        *,
        start_in: float = 0.0,
        clock: Callable[[], float],
    ) -> None:
        self.what = what
        self.done = done
        self.timeout = timeout
        self.clock = clock
        now = clock()
        self.deadline = now + timeout
        self.start_at = now + start_in
        self.delays = poll_delays()

    def after(self, connection: Connection) -> float | None:
        if self.done(connection):
            return None
        now = self.clock()
        remaining = self.deadline - now
        if remaining <= 0:
            raise WaitTimeout(
                f"timed out after {self.timeout:g} s waiting for {self.what} "
                f"(now {connection.status}, {connection.bandwidth})",
                connection,
            )
        step = min(60.0, self.start_at - now) if now < self.start_at else next(self.delays)
        return max(0.0, min(step, remaining))


def applied(connection: Connection, change: BandwidthChange) -> BandwidthUpdateResult:
    """The result of an update that was waited for: the connection now, the change applied."""
    data = connection.to_json()
    data["change"] = {**change.to_json(), "status": "applied"}
    return parse(BandwidthUpdateResult, data)
