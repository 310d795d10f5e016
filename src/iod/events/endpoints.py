"""The events feed (`GET /events`, long polling) and its live stream (Server-Sent Events)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator
from pydantic.json_schema import SkipJsonSchema
from starlette.background import BackgroundTask

from iod.auth.dependencies import charge_rows, require_read
from iod.auth.tokens import Principal
from iod.connections.endpoints import off_the_loop
from iod.events import service
from iod.events.schemas import EventPage
from iod.infra.errors import FieldError, RateLimited, ValidationFailed
from iod.infra.http import READ_ERRORS, StrictJsonRoute, problem

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)
READ = Annotated[Principal, require_read]

BAD_QUERY = problem("Invalid query parameter or cursor (`errors` names it)")
EXPIRED = problem(
    "The events after this cursor were pruned (`/problems/cursor-expired`): start again "
    "without `after`"
)
TYPE_PREFIX = r"^[a-z][a-z_.]{0,63}$"
After = Annotated[
    str | None,
    Query(
        description="A cursor: an event's `id` or a page's `nextCursor`; `now` for only what "
        "commits from now on. Default: the oldest event kept.",
        json_schema_extra={"pattern": service.CURSOR_PATTERN},
    ),
    AfterValidator(service.check_cursor),
]
Types = Annotated[
    list[str] | None,
    Query(
        alias="type",
        max_length=10,
        description="Only events whose type starts with this (repeatable: any of them), "
        "e.g. `connection.` or `bandwidth_change.applied`.",
        json_schema_extra={"items": {"type": "string", "pattern": TYPE_PREFIX}},
    ),
]
ConnectionFilter = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Only the events of this connection.",
    ),
]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _types(values: list[str] | None) -> list[str]:
    for index, value in enumerate(values or ()):
        if not re.fullmatch(TYPE_PREFIX, value):
            raise ValidationFailed(
                f"query parameter type: {value[:64]!r} is not an event type prefix",
                errors=[FieldError(f"/query/type/{index}", "not an event type prefix")],
            )
    return list(values or ())


@router.get(
    "/events",
    operation_id="listEvents",
    summary="List the customer's events",
    tags=["Events"],
    response_model=EventPage,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The events after `after`, oldest first"},
        400: BAD_QUERY,
        410: EXPIRED,
        **READ_ERRORS,
    },
)
async def list_events(
    request: Request,
    principal: READ,
    after: After = None,
    type: Types = None,
    connectionId: ConnectionFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events in the answer.")] = 100,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=60,
            description="Long polling: with nothing to show yet, wait up to this many seconds "
            "and answer as soon as an event commits.",
        ),
    ] = 0,
) -> Response:
    """What happened to the customer's connections and bandwidth changes, in commit order.

    Replayable: events are kept `IOD_EVENTS_RETENTION_DAYS` (30) days; a cursor whose next
    events were pruned is 410, one beyond the last event 400. With `wait`, an empty answer
    waits for the next event.
    """
    services = _services(request)
    types = _types(type)
    customer = principal.customer_id
    settings = services.settings
    hub = service.hub_of(services.db)
    position = await off_the_loop(
        services, lambda: service.start_position(services.db, customer, after)
    )
    deadline = time.monotonic() + min(wait, settings.events_max_wait_seconds)
    while True:
        seen = hub.generation
        page = await off_the_loop(
            services,
            partial(
                service.read_page,
                services.db,
                customer,
                after=position,
                explicit=after not in (None, service.NOW),
                types=types,
                connection_id=connectionId,
                limit=limit,
            ),
        )
        left = deadline - time.monotonic()
        if page.events or left <= 0 or hub.draining:  # draining: the server is stopping
            break
        position = page.next_position
        await hub.wait(seen, min(left, settings.events_recheck_seconds))
    charge_rows(services, request.scope.setdefault("state", {}), principal, len(page.events))
    body = {"events": page.events, "nextCursor": page.next_cursor}
    return Response(json.dumps(body, separators=(",", ":")).encode(), media_type="application/json")


STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of Server-Sent Events: `id:` the event's cursor, `event:` its "
        "type, `data:` the event as in the feed; comment lines as heartbeats",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One event of the stream (comment lines are not events)",
                    "properties": {
                        "id": {"type": "string", "description": "The event's cursor"},
                        "event": {"type": "string", "description": "The event's type"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "The event as in `listEvents`, as JSON",
                        },
                    },
                }
            }
        },
    },
    400: BAD_QUERY,
    410: EXPIRED,
    **READ_ERRORS,
    429: problem(
        "Over the rate limit, or this client already has `IOD_EVENTS_STREAMS_PER_CLIENT` "
        "streams open; retry after `Retry-After` seconds"
    ),
}


@router.get(
    "/events/stream",
    operation_id="streamEvents",
    summary="Follow the customer's events live (Server-Sent Events)",
    tags=["Events"],
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
)
async def stream_events(
    request: Request,
    principal: READ,
    after: After = None,
    type: Types = None,
    connectionId: ConnectionFilter = None,
    last_event_id: Annotated[
        # Documented as a string only: an optional header is absent, never `null`.
        str | SkipJsonSchema[None],
        Header(
            alias="Last-Event-ID",
            description="Resume after this event (sent by EventSource on reconnection); "
            "wins over `after`.",
            json_schema_extra={"pattern": service.CURSOR_PATTERN},
        ),
        AfterValidator(service.check_cursor),
    ] = None,
) -> StreamingResponse:
    """The feed as Server-Sent Events: what is there after the cursor, then each event as it
    commits. A comment line every `IOD_EVENTS_HEARTBEAT_SECONDS` (15) keeps proxies from
    closing an idle stream; the server ends a stream after `IOD_EVENTS_STREAM_MAX_SECONDS`
    and the client resumes with `Last-Event-ID`. A cursor beyond the last event, in `after`
    or `Last-Event-ID`, is 400 as in `listEvents`.
    """
    services = _services(request)
    settings = services.settings
    types = _types(type)
    customer = principal.customer_id
    cursor = last_event_id if last_event_id is not None else after
    pointer = "/header/Last-Event-ID" if last_event_id is not None else "/query/after"
    db = services.db
    hub = service.hub_of(db)
    position = await off_the_loop(services, lambda: service.start_position(db, customer, cursor))
    explicit = cursor not in (None, service.NOW)

    def read(after: int, explicit: bool) -> service.Page:
        return service.read_page(
            db,
            customer,
            after=after,
            explicit=explicit,
            types=types,
            connection_id=connectionId,
            limit=100,
            pointer=pointer,
        )

    seen = hub.generation
    first = await off_the_loop(services, lambda: read(position, explicit))  # 410 before 200
    if not hub.open_stream(principal.client_id, settings.events_streams_per_client):
        raise RateLimited(
            f"This client already has {settings.events_streams_per_client} event streams open "
            "(IOD_EVENTS_STREAMS_PER_CLIENT)",
            headers={"Retry-After": str(max(1, int(settings.events_heartbeat_seconds)))},
        )
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            hub.close_stream(principal.client_id)

    async def body() -> AsyncIterator[bytes]:
        try:
            page, at, seen_now = first, position, seen
            end = time.monotonic() + settings.events_stream_max_seconds
            beat = time.monotonic()
            yield b"retry: 2000\n\n"
            while True:
                for event in page.events:
                    data = json.dumps(event, separators=(",", ":"))
                    yield f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()
                if page.events:
                    beat = time.monotonic()
                at = page.next_position
                if not page.full:
                    now = time.monotonic()
                    if now >= end:
                        return
                    if now - beat >= settings.events_heartbeat_seconds:
                        yield b": heartbeat\n\n"
                        beat = now
                    left = min(
                        end - now,
                        settings.events_recheck_seconds,
                        beat + settings.events_heartbeat_seconds - now,
                    )
                    await hub.wait(seen_now, left)
                    if hub.draining:  # the server is stopping: the client resumes elsewhere
                        return
                seen_now = hub.generation
                page = await off_the_loop(services, partial(read, at, False))
        finally:
            release()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),
    )
