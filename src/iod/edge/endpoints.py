"""The internal edge API (`/internal/edge/v1`): an agent reads its location's desired state
(a snapshot, then a long poll of the changes after its cursor) and reports its results.

Only a client with the `edge` scope that is the registered agent of the location in the
path gets an answer; any other location is a 404, as if it did not exist."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from iod.auth.dependencies import require_edge
from iod.auth.tokens import Principal
from iod.edge import service
from iod.edge.schemas import (
    EdgeChanges,
    EdgeConnection,
    EdgeReport,
    EdgeReportResult,
    EdgeSamples,
    EdgeSamplesResult,
    EdgeSnapshot,
)
from iod.infra import draining
from iod.infra.errors import ValidationFailed
from iod.infra.http import READ_ERRORS, WRITE_ERRORS, StrictJsonRoute, problem, require_json
from iod.traffic import service as traffic

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internal/edge/v1", route_class=StrictJsonRoute)

EDGE = Annotated[Principal, require_edge]
LocationId = Annotated[
    str,
    Path(
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The agent's location.",
    ),
]
NOT_FOUND = problem("No such location for this agent")
TAGS: list[str | object] = ["Edge agents (internal)"]
_woken = 0  # counts this process's commits that changed some desired state


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _listen(services: Services) -> None:
    if getattr(services, "_edge_listening", False):
        return

    def wake() -> None:
        global _woken
        _woken += 1

    services.db.listen(service.TOPIC, wake)
    setattr(services, "_edge_listening", True)  # noqa: B010 - Services has no such field


def _row(r: service.DesiredRow) -> EdgeConnection:
    return EdgeConnection(
        connectionId=r.connection_id, state=r.state,
        bandwidthMbps=r.bandwidth_mbps, ipv4Block=r.ipv4_block, seq=r.seq, opId=r.op_id,
        acked=r.acked,
    )  # fmt: skip


@router.get(
    "/locations/{locationId}/desired",
    operation_id="getEdgeDesiredState",
    summary="The desired state of the agent's location",
    tags=TAGS,  # type: ignore[arg-type]
    response_model=EdgeSnapshot,
    responses={
        200: {"description": "Every connection the edge should hold"},
        404: NOT_FOUND,
        **READ_ERRORS,
    },
)
def get_desired(request: Request, locationId: LocationId, principal: EDGE) -> EdgeSnapshot:
    """A full snapshot and its cursor: an agent starts (and resynchronises after a
    partition) with this, then watches the changes after the cursor."""
    services = _services(request)
    with services.db.write() as session:
        agent = service.agent_for(session, locationId, principal.client_id)
        service.touch(agent, services.clock.now())
        cursor, rows = service.snapshot(session, agent)
        return EdgeSnapshot(
            locationId=locationId, cursor=cursor, connections=[_row(r) for r in rows]
        )


@router.get(
    "/locations/{locationId}/changes",
    operation_id="watchEdgeChanges",
    summary="Watch the changes after a cursor (long poll)",
    tags=TAGS,  # type: ignore[arg-type]
    response_model=EdgeChanges,
    responses={
        200: {"description": "The changes after `after` (none when `wait` ran out)"},
        400: problem("Invalid query parameter"),
        404: NOT_FOUND,
        **READ_ERRORS,
    },
)
async def watch_changes(
    request: Request,
    locationId: LocationId,
    principal: EDGE,
    after: Annotated[int, Query(ge=0, le=2**62, description="The cursor last seen.")] = 0,
    wait: Annotated[
        float, Query(ge=0, le=600, description="Seconds to wait for a change (long poll).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most changes per answer.")] = 1000,
) -> EdgeChanges:
    """Answers as soon as there is a change after `after`, or empty once `wait` seconds
    (at most IOD_EDGE_MAX_WAIT_SECONDS) have passed."""
    services = _services(request)
    _listen(services)
    deadline = time.monotonic() + min(wait, services.settings.edge_max_wait_seconds)

    def read(touch: bool) -> tuple[int, list[service.DesiredRow], bool]:
        session: Session
        with services.db.write() if touch else services.db.read() as session:
            agent = service.agent_for(session, locationId, principal.client_id)
            if touch:
                service.touch(agent, services.clock.now())
            return service.changes(session, agent, after, limit)

    cursor, rows, more = await run_in_threadpool(read, True)
    # Not while the server is stopping (infra.draining): the agent asks again.
    while (
        not rows
        and time.monotonic() < deadline
        and not draining.begun()
        and not await request.is_disconnected()
    ):
        seen, checked = _woken, time.monotonic()
        # Woken at once by this process's commits; other processes' within a second.
        while (
            _woken == seen
            and time.monotonic() - checked < 1
            and time.monotonic() < deadline
            and not draining.begun()
        ):
            await asyncio.sleep(0.05)
        cursor, rows, more = await run_in_threadpool(read, False)
    return EdgeChanges(
        locationId=locationId, cursor=cursor, changes=[_row(r) for r in rows], more=more
    )


@router.post(
    "/locations/{locationId}/reports",
    operation_id="reportEdgeResults",
    summary="Report operation results and the edge's state",
    tags=TAGS,  # type: ignore[arg-type]
    response_model=EdgeReportResult,
    dependencies=[Depends(require_json)],
    responses={200: {"description": "Recorded"}, 404: NOT_FOUND, **WRITE_ERRORS},
)
def report(
    request: Request, locationId: LocationId, body: EdgeReport, principal: EDGE
) -> EdgeReportResult:
    """Results by operation id: a repeated report records nothing twice. A job waiting for
    its operation finishes once its result is `ok` (and is retried when it is not)."""
    services = _services(request)
    with services.db.write() as session:
        agent = service.agent_for(session, locationId, principal.client_id)
        recorded, unknown = service.report(
            session,
            services.clock,
            agent,
            [service.Result(r.opId, r.ok, r.error) for r in body.results],
            cursor=body.cursor,
            version=body.version,
            hostname=body.hostname,
            actual_count=body.actualCount,
            drift=body.drift,
        )
    return EdgeReportResult(recorded=recorded, unknown=unknown)


@router.post(
    "/locations/{locationId}/samples",
    operation_id="reportEdgeSamples",
    summary="Report the connections' traffic counters",
    tags=TAGS,  # type: ignore[arg-type]
    response_model=EdgeSamplesResult,
    dependencies=[Depends(require_json)],
    responses={200: {"description": "Stored"}, 404: NOT_FOUND, **WRITE_ERRORS},
)
def report_samples(
    request: Request, locationId: LocationId, body: EdgeSamples, principal: EDGE
) -> EdgeSamplesResult:
    """Cumulative counters read every IOD_TRAFFIC_SAMPLE_SECONDS; the controller stores the
    deltas (`GET …/connections/{id}/traffic`). Readings of connections this location does
    not hold are ignored (counted as `unknown`)."""
    services = _services(request)
    now = services.clock.now()
    if body.at > now + timedelta(seconds=60):
        raise ValidationFailed.field("/at", "is more than a minute ahead of the controller")
    with services.db.write() as session:
        agent = service.agent_for(session, locationId, principal.client_id)
        service.touch(agent, now)
        mine = service.connections_of(session, agent.location_id)
        readings = {
            r.connectionId: (r.bytesIn, r.bytesOut, r.packetsIn, r.packetsOut)
            for r in body.samples
            if r.connectionId in mine
        }
        stored = traffic.ingest(session, body.at, readings)
    return EdgeSamplesResult(stored=stored, unknown=len(body.samples) - len(readings))
