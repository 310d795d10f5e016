"""Schedules: recurring bandwidth schedules of a connection (extensions, docs/schedules.md).

Endpoints parse, call one service function inside one transaction, and return a schema.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth.dependencies import actor, charge_rows, require_read, require_write
from iod.auth.tokens import Principal
from iod.connections.schemas import invalid_datetime
from iod.infra import idempotency
from iod.infra.errors import shown
from iod.infra.http import READ_ERRORS, WRITE_ERRORS, StrictJsonRoute, problem, require_json
from iod.schedules import service
from iod.schedules.schemas import (
    Schedule,
    ScheduleList,
    SchedulePatch,
    SchedulePreview,
    ScheduleRequest,
)

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)

NOT_FOUND = problem("No such connection (or schedule of it) for this customer")
CONFLICT = problem(
    "Not possible now: the connection already has a schedule (`/problems/schedule-exists`), "
    "it is terminated (`/problems/invalid-state`), or, rarely, the row of the same "
    "Idempotency-Key came and went while the request looked for it "
    "(`/problems/idempotency-key-in-use`; retry)"
)
SCHEDULE_BY_ID = {
    "connectionId": "$request.path.connectionId",
    "scheduleId": "$response.body#/id",
}
SCHEDULE_LINKS: dict[str, Any] = {
    name: {"operationId": op, "parameters": SCHEDULE_BY_ID, "description": text}
    for name, op, text in [
        ("GetSchedule", "getSchedule", "The schedule."),
        ("UpdateSchedule", "updateSchedule", "Change, pause or resume it."),
        ("PreviewSchedule", "previewSchedule", "Its transitions over a period."),
        ("DeleteSchedule", "deleteSchedule", "Delete it."),
    ]
}
ConnectionId = Annotated[str, Path(description="The connection's id.")]
ScheduleId = Annotated[str, Path(description="The schedule's id.")]
READ = Annotated[Principal, require_read]
WRITE = Annotated[Principal, require_write]
CURSOR_PATTERN = r"^sch_[0-9a-hjkmnp-tv-z]{29}$"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _planning(services: Services) -> service.Planning:
    s = services.settings
    return service.Planning(
        horizon=timedelta(hours=s.schedules_horizon_hours), batch=s.schedules_plan_batch
    )


def _act_for(session: Session, request: Request, principal: Principal) -> None:
    audit.act_for(session, actor(request, principal))


def _cursor(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(CURSOR_PATTERN, value):
        raise ValueError(
            f"{shown(value)} is not a cursor: pass the `nextCursor` of the previous page"
        )
    return value


_RFC3339_QUERY = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    if not re.fullmatch(_RFC3339_QUERY, value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T00:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
        moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(invalid_datetime(exc)[:100]) from None
    return moment


def _check_moment(value: str | None) -> str | None:
    _moment(value)
    return value


Moment = Annotated[str | None, AfterValidator(_check_moment)]


@router.post(
    "/connections/{connectionId}/schedules",
    operation_id="createSchedule",
    summary="Create a connection's bandwidth schedule",
    tags=["Schedules"],
    status_code=201,
    response_model=Schedule,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        201: {"description": "Schedule created", "links": SCHEDULE_LINKS},
        404: NOT_FOUND,
        409: CONFLICT,
        **WRITE_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def create_schedule(
    request: Request,
    connectionId: ConnectionId,
    body: ScheduleRequest,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
) -> Response:
    """Extension: a recurring schedule (time zone, default bandwidth, rules with RRULEs,
    exceptions, validity). Unless paused, its current bandwidth is applied now and its
    transitions are planned ahead as ordinary bandwidth changes (with `scheduleId`)."""
    services = _services(request)

    def work(session: Session) -> idempotency.Outcome:
        _act_for(session, request, principal)
        schedule = service.create(
            session, services.clock, principal, connectionId, body,
            services.policy, _planning(services),
        )  # fmt: skip
        location = f"/internet-on-demand/connections/{connectionId}/schedules/{schedule.id}"
        return idempotency.Outcome(201, service.to_schema(schedule), {"Location": location})

    return idempotency.run(services, request, principal, key, body, work)


@router.get(
    "/connections/{connectionId}/schedules",
    operation_id="listConnectionSchedules",
    summary="A connection's schedules",
    tags=["Schedules"],
    response_model=ScheduleList,
    response_model_exclude_none=True,
    responses={404: NOT_FOUND, **READ_ERRORS},
)
async def list_connection_schedules(
    request: Request, connectionId: ConnectionId, principal: READ
) -> ScheduleList:
    """Extension: the connection's schedule (a connection has at most one)."""
    services = _services(request)

    def read() -> ScheduleList:
        with services.db.read() as session:
            rows = service.of_connection(session, principal, connectionId)
            return ScheduleList(schedules=[service.to_schema(s) for s in rows])

    return await run_in_threadpool(read)


@router.get(
    "/schedules",
    operation_id="listSchedules",
    summary="The customer's schedules",
    tags=["Schedules"],
    response_model=ScheduleList,
    response_model_exclude_none=True,
    responses={400: problem("Invalid query parameter"), **READ_ERRORS},
)
async def list_schedules(
    request: Request,
    principal: READ,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="`nextCursor` of the previous page.",
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
        AfterValidator(_cursor),
    ] = None,
) -> ScheduleList:
    """Extension: every schedule of the caller's customer, in creation order. An answer
    costs one read of the rate limit plus one per 100 schedules in it."""
    services = _services(request)

    def read() -> ScheduleList:
        with services.db.read() as session:
            rows, next_cursor = service.page(session, principal, cursor, limit)
            return ScheduleList(
                schedules=[service.to_schema(s) for s in rows], nextCursor=next_cursor
            )

    answer = await run_in_threadpool(read)
    charge_rows(services, request.scope.setdefault("state", {}), principal, len(answer.schedules))
    return answer


@router.get(
    "/connections/{connectionId}/schedules/{scheduleId}",
    operation_id="getSchedule",
    summary="One schedule",
    tags=["Schedules"],
    response_model=Schedule,
    response_model_exclude_none=True,
    responses={404: NOT_FOUND, **READ_ERRORS},
)
async def get_schedule(
    request: Request, connectionId: ConnectionId, scheduleId: ScheduleId, principal: READ
) -> Schedule:
    """Extension: one schedule of the connection."""
    services = _services(request)

    def read() -> Schedule:
        with services.db.read() as session:
            _, schedule = service.get(session, principal, connectionId, scheduleId)
            return service.to_schema(schedule)

    return await run_in_threadpool(read)


@router.patch(
    "/connections/{connectionId}/schedules/{scheduleId}",
    operation_id="updateSchedule",
    summary="Change, pause or resume a schedule",
    tags=["Schedules"],
    response_model=Schedule,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        200: {"description": "Schedule changed"},
        404: NOT_FOUND,
        409: problem(
            "Rarely: the row of the same Idempotency-Key came and went while the request "
            "looked for it (`/problems/idempotency-key-in-use`; retry)"
        ),
        **WRITE_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def update_schedule(
    request: Request,
    connectionId: ConnectionId,
    scheduleId: ScheduleId,
    body: SchedulePatch,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
) -> Response:
    """Extension: changes the fields given (`{"paused": true}` pauses, `false` resumes).
    The changes it planned that have not started are cancelled and planned again from now."""
    services = _services(request)

    def work(session: Session) -> idempotency.Outcome:
        _act_for(session, request, principal)
        schedule = service.update(
            session, services.clock, principal, connectionId, scheduleId, body,
            services.policy, _planning(services),
        )  # fmt: skip
        return idempotency.Outcome(200, service.to_schema(schedule), {})

    return idempotency.run(services, request, principal, key, body, work)


@router.delete(
    "/connections/{connectionId}/schedules/{scheduleId}",
    operation_id="deleteSchedule",
    summary="Delete a schedule",
    tags=["Schedules"],
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Deleted; its changes that had not started are cancelled"},
        404: NOT_FOUND,
        **READ_ERRORS,
    },
)
def delete_schedule(
    request: Request, connectionId: ConnectionId, scheduleId: ScheduleId, principal: WRITE
) -> Response:
    """Extension: deletes the schedule and cancels its changes that have not started
    (a repeat is a 404: it is gone)."""
    services = _services(request)
    with services.db.write() as session:
        _act_for(session, request, principal)
        service.delete(session, services.clock, principal, connectionId, scheduleId)
    return Response(status_code=204)


@router.get(
    "/connections/{connectionId}/schedules/{scheduleId}/preview",
    operation_id="previewSchedule",
    summary="A schedule's transitions over a period",
    tags=["Schedules"],
    response_model=SchedulePreview,
    response_model_exclude_none=True,
    responses={400: problem("Invalid query parameter"), 404: NOT_FOUND, **READ_ERRORS},
)
async def preview_schedule(
    request: Request,
    connectionId: ConnectionId,
    scheduleId: ScheduleId,
    principal: READ,
    start: Annotated[
        Moment,
        Query(
            alias="from",
            description="Start (RFC 3339 with an offset); default now.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    end: Annotated[
        Moment,
        Query(
            alias="to",
            description="End, at most 31 days after `from`; default 7 days after it.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> Any:
    """Extension: what the schedule asks for at `from` and each transition in (from, to],
    at its UTC instant and local time (whether paused or not). Cost: once prices exist."""
    services = _services(request)

    def read() -> SchedulePreview:
        with services.db.read() as session:
            return service.preview(
                session, services.clock, principal, connectionId, scheduleId,
                _moment(start), _moment(end),
            )  # fmt: skip

    return await run_in_threadpool(read)
