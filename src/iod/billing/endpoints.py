"""The money operations: the customer catalog, quotes, usage and statements (extensions)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth.dependencies import actor, require_read, require_write
from iod.auth.tokens import Principal
from iod.billing import repository, service, statements
from iod.billing import usage as usage_service
from iod.billing.schemas import (
    CatalogLocation,
    CatalogLocationList,
    QuoteOut,
    QuoteRequest,
    StatementList,
    StatementOut,
    StatementSummary,
    UsageOut,
    rfc3339_param,
)
from iod.domain.rating import floor_hour
from iod.infra import idempotency
from iod.infra.errors import FieldError, NotFound, ValidationFailed
from iod.infra.http import READ_ERRORS, WRITE_ERRORS, StrictJsonRoute, problem, require_json

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)
READ = Annotated[Principal, require_read]
WRITE = Annotated[Principal, require_write]
BAD_QUERY = problem("Invalid query parameter")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get(
    "/locations",
    operation_id="listLocations",
    summary="The locations a customer may order at",
    tags=["Catalog"],
    response_model=CatalogLocationList,
    response_model_exclude_none=True,
    responses=READ_ERRORS,
)
async def list_locations(request: Request, principal: READ) -> CatalogLocationList:
    """Extension: every location with its tiers, whether each fits the capacity left now,
    and its price now."""
    services = _services(request)

    def read() -> CatalogLocationList:
        with services.db.read() as session:
            rows = service.catalog(session, services.clock)
        return CatalogLocationList.model_validate({"locations": rows})

    return await run_in_threadpool(read)


LocationId = Annotated[str, Path(description="A location id of the catalog.")]


@router.get(
    "/locations/{locationId}",
    operation_id="getLocation",
    summary="One location of the catalog",
    tags=["Catalog"],
    response_model=CatalogLocation,
    response_model_exclude_none=True,
    responses={404: problem("No such location"), **READ_ERRORS},
)
async def get_location(
    request: Request, locationId: LocationId, principal: READ
) -> CatalogLocation:
    """Extension: one location, its tiers, whether each is orderable now, its prices."""
    services = _services(request)

    def read() -> CatalogLocation:
        with services.db.read() as session:
            row = service.catalog_location(session, services.clock, locationId)
        return CatalogLocation.model_validate(row)

    return await run_in_threadpool(read)


@router.post(
    "/quotes",
    operation_id="createQuote",
    summary="Quote a price",
    tags=["Billing"],
    status_code=201,
    response_model=QuoteOut,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        201: {"description": "The quote, valid until `expiresAt`"},
        404: problem("No such connection for this customer"),
        409: problem(
            "The tier has no price at that time, or the connection is terminated "
            "(`/problems/conflict`, `/problems/invalid-state`), or, rarely, the row of the "
            "same Idempotency-Key came and went while the request looked for it "
            "(`/problems/idempotency-key-in-use`; retry)"
        ),
        **WRITE_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def create_quote(
    request: Request, body: QuoteRequest, principal: WRITE, key: idempotency.KeyHeader = None
) -> Response:
    """Extension: the hourly rate, a day's and a month's estimate for a new connection
    (`locationId` + `bandwidth`) or a change (`connectionId` + `bandwidth`, optionally
    `effectiveDate`/`revertAt`). Pass its `id` as `quoteId` when ordering or changing, within
    15 minutes, to be charged that rate for that tier until the next change."""
    services = _services(request)

    def work(session: Session) -> idempotency.Outcome:
        audit.act_for(session, actor(request, principal))
        quote = service.create_quote(
            session,
            services.clock,
            principal,
            location_id=body.locationId,
            connection_id=body.connectionId,
            bandwidth=body.bandwidth,
            effective=body.effectiveDate,
            revert_at=body.revertAt,
            ttl_seconds=services.settings.quote_ttl_seconds,
            max_schedule_days=services.policy.max_schedule_days,
        )
        result = QuoteOut.model_validate(service.present_quote(quote))
        return idempotency.Outcome(
            201, result, {"Location": f"/internet-on-demand/quotes/{quote.id}"}
        )

    return idempotency.run(services, request, principal, key, body, work)


@router.get(
    "/quotes/{quoteId}",
    operation_id="getQuote",
    summary="One quote",
    tags=["Billing"],
    response_model=QuoteOut,
    response_model_exclude_none=True,
    responses={404: problem("No such quote for this customer"), **READ_ERRORS},
)
async def get_quote(request: Request, quoteId: Annotated[str, Path()], principal: READ) -> QuoteOut:
    """Extension: a quote, with `usedAt` once an order or change used it."""
    services = _services(request)

    def read() -> QuoteOut:
        with services.db.read() as session:
            quote = service.get_quote(session, principal, quoteId)
            return QuoteOut.model_validate(service.present_quote(quote))

    return await run_in_threadpool(read)


@router.get(
    "/usage",
    operation_id="getUsage",
    summary="Rated usage",
    tags=["Billing"],
    response_model=UsageOut,
    response_model_exclude_none=True,
    responses={400: BAD_QUERY, 404: problem("No such connection for this customer"), **READ_ERRORS},
)
async def get_usage(
    request: Request,
    principal: READ,
    start: Annotated[
        datetime | None,
        BeforeValidator(rfc3339_param),
        Query(
            alias="from",
            description="Window start (RFC 3339); default: this month's start. A window "
            "longer than 366 days starts 366 days before its end; an empty one has no lines; "
            "a `to` before it is a 400. Both ends are kept within the years 2000 to 2200: the "
            "answer's `from` and `to` say what was read.",
        ),
    ] = None,
    end: Annotated[
        datetime | None,
        BeforeValidator(rfc3339_param),
        Query(alias="to", description="Window end, exclusive; default: now."),
    ] = None,
    connectionId: Annotated[
        str | None, Query(max_length=64, description="Only this connection.")
    ] = None,
    granularity: Annotated[
        Literal["hour", "day", "month"], Query(description="Lines per hour, day or month.")
    ] = "hour",
) -> UsageOut:
    """Extension: the rated lines of a window (connection, period, tier, status, seconds,
    rate, amount) and the totals per currency. Hours are rated a little after they end:
    `ratedUntil` says how far."""
    if start is not None and end is not None and end < start:
        raise ValidationFailed(
            "query parameter to: must not be before from",
            errors=[FieldError("/query/to", "must not be before from")],
        )
    services = _services(request)
    now = services.clock.now()
    lo: datetime = start or floor_hour(now).replace(day=1, hour=0)
    hi: datetime = end or now

    def read() -> UsageOut:
        with services.db.read() as session:
            data = usage_service.usage(session, principal, lo, hi, connectionId, granularity)
        return UsageOut.model_validate(data)

    return await run_in_threadpool(read)


@router.get(
    "/statements",
    operation_id="listStatements",
    summary="Monthly statements",
    tags=["Billing"],
    response_model=StatementList,
    response_model_exclude_none=True,
    responses=READ_ERRORS,
)
async def list_statements(request: Request, principal: READ) -> StatementList:
    """Extension: the customer's statements, newest month first (one per calendar month
    in UTC with rated usage; `open` while the month runs, `closed` and final after)."""
    services = _services(request)

    def read() -> StatementList:
        with services.db.read() as session:
            rows = repository.statements_of(session, principal.customer_id)
            return StatementList(
                statements=[
                    StatementSummary(id=s.id, month=s.month, status=s.status, closedAt=s.closed_at)
                    for s in rows
                ]
            )

    return await run_in_threadpool(read)


CSV_CONTENT: dict[str, Any] = {"text/csv": {"schema": {"type": "string"}}}


@router.get(
    "/statements/{statementId}",
    operation_id="getStatement",
    summary="One monthly statement",
    tags=["Billing"],
    response_model=StatementOut,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The statement (CSV with `Accept: text/csv`)", "content": CSV_CONTENT},
        404: problem("No such statement for this customer"),
        **READ_ERRORS,
    },
)
async def get_statement(
    request: Request, statementId: Annotated[str, Path()], principal: READ
) -> Response:
    """Extension: the lines (by connection and tier interval), the monthly-cap adjustments
    and the totals. An open statement is read live; a closed one never changes."""
    services = _services(request)

    def read() -> dict[str, Any]:
        with services.db.read() as session:
            statement = statements.get_for_customer(session, principal.customer_id, statementId)
            return statements.view(session, statement)

    doc = await run_in_threadpool(read)
    if _wants_csv(request.headers.get("accept", "")):
        filename = f"statement-{doc['month']}.csv"
        return Response(
            statements.to_csv(doc),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    body = StatementOut.model_validate(doc).model_dump_json(by_alias=True, exclude_none=True)
    return Response(body, media_type="application/json")


def _wants_csv(accept: str) -> bool:
    """CSV when asked for before (or instead of) JSON."""
    accept = accept.lower()
    csv_at = accept.find("text/csv")
    if csv_at < 0:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or csv_at < json_at


__all__ = ["NotFound", "router"]
