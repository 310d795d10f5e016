"""GET /internet-on-demand/connections/{connectionId}/traffic: measured traffic."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from iod.auth.dependencies import require_read
from iod.auth.tokens import Principal
from iod.connections import repository as connections
from iod.connections.schemas import invalid_datetime
from iod.domain.bandwidth import format_bandwidth
from iod.infra.errors import FieldError, NotFound, ValidationFailed, shown
from iod.infra.http import READ_ERRORS, StrictJsonRoute, problem
from iod.traffic import service
from iod.traffic.schemas import Traffic, TrafficDirection, TrafficPoint

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)
READ = Annotated[Principal, require_read]
MAX_POINTS = 2000
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _bad(name: str, detail: str) -> ValidationFailed:
    return ValidationFailed(
        f"query parameter {name}: {detail}",
        errors=[FieldError(f"/query/{name}", detail)],  # as the framework's own checks
    )


def _when(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time with an offset (a number is not one, whatever pydantic allows)."""
    if value is None:
        return None
    if not _RFC3339.match(value):
        raise _bad(name, "must be an RFC 3339 date-time with an offset, e.g. 2026-11-30T09:00:00Z")
    try:
        return datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(name, invalid_datetime(exc)) from exc


def _direction(d: service.Direction) -> TrafficDirection:
    return TrafficDirection(
        averageBps=d.average_bps, peakBps=d.peak_bps, p95Bps=d.p95_bps, utilisation=d.utilisation
    )


@router.get(
    "/connections/{connectionId}/traffic",
    operation_id="getConnectionTraffic",
    summary="Measured traffic of a connection",
    tags=["Traffic"],
    response_model=Traffic,
    responses={
        200: {"description": "Bits per second in and out, per bin, with the summary"},
        400: problem("Invalid query parameter"),
        404: problem("No such connection for this customer"),
        **READ_ERRORS,
    },
)
async def get_traffic(
    request: Request,
    connectionId: str,
    principal: READ,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            description="Window start, RFC 3339 with an offset; default: an hour before `to`.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            description="Window end, RFC 3339 with an offset; default: now.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    step: Annotated[
        int | None,
        Query(ge=1, le=86400, description="Seconds per bin; default: about 60 bins."),
    ] = None,
) -> Response:
    """Extension: the connection's measured traffic between `from` and `to`, in bins of
    `step` seconds: bits per second towards the customer (`in`) and from it (`out`), with
    the average, peak, 95th percentile and utilisation against the tier in force. Samples
    are taken every IOD_TRAFFIC_SAMPLE_SECONDS; older than IOD_TRAFFIC_RAW_RETENTION_HOURS
    they are 5-minute ones."""
    services: Services = request.app.state.services

    def owned() -> None:
        with services.db.read() as session:
            connection = connections.get(session, connectionId)
            if connection is None or connection.customer_id != principal.customer_id:
                raise NotFound(f"no connection {shown(connectionId)}")

    await run_in_threadpool(owned)  # 404 first: another customer learns nothing more
    now = services.clock.now()
    first, last = _when("from", start), _when("to", end)
    to = last or now
    try:  # bins stay in range: a day's margin either side
        to + timedelta(days=1)
    except OverflowError as exc:
        raise _bad("to", "is out of range") from exc
    try:
        begin = first or to - timedelta(hours=1)
        begin - timedelta(days=1)
    except OverflowError as exc:  # `from` defaults to an hour before `to`: name the one sent
        raise _bad("to" if first is None else "from", "is out of range") from exc
    if begin >= to:
        raise _bad("from", "must be before `to`")
    seconds = (to - begin).total_seconds()
    step = step or max(1, math.ceil(seconds / 60))
    if seconds / step > MAX_POINTS:
        raise _bad("step", f"gives more than {MAX_POINTS} bins for this window; take a larger one")

    def read() -> Traffic:
        with services.db.read() as session:
            connection = connections.get(session, connectionId)
            if connection is None or connection.customer_id != principal.customer_id:
                raise NotFound(f"no connection {shown(connectionId)}")
            found = service.series(
                session, connection.id, connection.bandwidth_mbps, begin, to, step
            )
            return Traffic.model_validate({
                "connectionId": connection.id, "from": begin, "to": to, "step": step,
                "bandwidth": format_bandwidth(connection.bandwidth_mbps),
                "samples": found.samples, "in": _direction(found.inbound),
                "out": _direction(found.outbound),
                "points": [TrafficPoint(at=p.at, inBps=p.in_bps, outBps=p.out_bps,
                                        tierMbps=p.tier_mbps) for p in found.points],
            })  # fmt: skip

    answer = await run_in_threadpool(read)
    return Response(answer.model_dump_json(by_alias=True), media_type="application/json")
