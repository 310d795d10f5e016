"""Webhook endpoints: register, list, change, delete, rotate the secret; list an endpoint's
deliveries and send one again. Reading needs the `read` scope, managing `write`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AfterValidator

from iod.auth.dependencies import actor, charge_rows, require_read, require_write
from iod.auth.tokens import Principal
from iod.connections.endpoints import off_the_loop
from iod.infra.http import READ_ERRORS, WRITE_ERRORS, StrictJsonRoute, problem, require_json
from iod.webhooks import delivery, service
from iod.webhooks.schemas import (
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointRequest,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)
READ = Annotated[Principal, require_read]
WRITE = Annotated[Principal, require_write]
TAGS: list[str | Any] = ["Webhooks"]

NOT_FOUND = problem("No such webhook endpoint for this customer")
DELIVERY_NOT_FOUND = problem("No such webhook endpoint or delivery for this customer")
BAD_QUERY = problem("Invalid query parameter (`errors` names it)")
TOO_MANY = problem(
    "The customer already has `IOD_WEBHOOK_MAX_ENDPOINTS` endpoints "
    "(`/problems/too-many-webhook-endpoints`)"
)
ID_PATTERN = r"^[a-z]{2,5}_[0-9a-hjkmnp-tv-z]{29}$"
EndpointId = Annotated[str, Path(description="The webhook endpoint's id (`whe_…`).")]
DeliveryId = Annotated[str, Path(description="The delivery's id (`msg_…`, its `webhook-id`).")]


def _cursor(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(ID_PATTERN, value):
        raise ValueError(f"{value[:64]!r} is not a cursor: pass the previous page's `nextCursor`")
    return value


Cursor = Annotated[
    str | None,
    Query(
        description="The `nextCursor` of the previous page.",
        json_schema_extra={"pattern": ID_PATTERN},
    ),
    AfterValidator(_cursor),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _limits(services: Services) -> service.Limits:
    return service.Limits.of(services.settings, delivery._kek(services.settings))


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        model.model_dump_json(exclude_none=True).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/webhook-endpoints",
    operation_id="createWebhookEndpoint",
    summary="Register a webhook endpoint",
    tags=TAGS,
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        201: {"description": "Registered; `secret` is shown this once"},
        409: TOO_MANY,
        **WRITE_ERRORS,
    },
)
def create_endpoint(request: Request, body: WebhookEndpointRequest, principal: WRITE) -> Response:
    """The customer's events are POSTed to `url`, signed per Standard Webhooks with the
    `secret` of this answer (not shown again: `rotate-secret` makes a new one)."""
    services = _services(request)
    limits = _limits(services)
    now = services.clock.now()
    with services.db.write() as session:
        endpoint, secret = service.create(
            session, now, principal, body, limits, actor=actor(request, principal)
        )
        out = WebhookEndpointWithSecret(
            **service.to_schema(endpoint, now).model_dump(), secret=secret
        )
    location = f"/internet-on-demand/webhook-endpoints/{out.id}"
    return _json(out, 201, {"Location": location, "Cache-Control": "no-store"})


@router.get(
    "/webhook-endpoints",
    operation_id="listWebhookEndpoints",
    summary="List webhook endpoints",
    tags=TAGS,
    response_model=WebhookEndpointList,
    response_model_exclude_none=True,
    responses={400: BAD_QUERY, **READ_ERRORS},
)
async def list_endpoints(
    request: Request, principal: READ, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    """The customer's endpoints in creation order (never their secrets)."""
    services = _services(request)

    def page() -> WebhookEndpointList:
        now = services.clock.now()
        with services.db.read() as session:
            rows, next_cursor = service.page(session, principal, cursor=cursor, limit=limit)
            return WebhookEndpointList(
                webhookEndpoints=[service.to_schema(r, now) for r in rows], nextCursor=next_cursor
            )

    answer = await off_the_loop(services, page)
    charge_rows(
        services, request.scope.setdefault("state", {}), principal, len(answer.webhookEndpoints)
    )
    return _json(answer)


@router.get(
    "/webhook-endpoints/{endpointId}",
    operation_id="getWebhookEndpoint",
    summary="Get a webhook endpoint",
    tags=TAGS,
    response_model=WebhookEndpointOut,
    response_model_exclude_none=True,
    responses={404: NOT_FOUND, **READ_ERRORS},
)
async def get_endpoint(request: Request, endpointId: EndpointId, principal: READ) -> Response:
    """One endpoint (never its secret)."""
    services = _services(request)

    def one() -> WebhookEndpointOut:
        with services.db.read() as session:
            return service.to_schema(
                service.get(session, principal, endpointId), services.clock.now()
            )

    return _json(await run_in_threadpool(one))


@router.patch(
    "/webhook-endpoints/{endpointId}",
    operation_id="updateWebhookEndpoint",
    summary="Change a webhook endpoint",
    tags=TAGS,
    response_model=WebhookEndpointOut,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={404: NOT_FOUND, **WRITE_ERRORS},
)
def update_endpoint(
    request: Request, endpointId: EndpointId, body: WebhookEndpointUpdate, principal: WRITE
) -> Response:
    """Change the URL, the event types, the description, or enable/disable it. Only the
    fields given change; enabling a disabled endpoint clears `disabledReason` (deliveries
    it missed while disabled are listed as failed and can be sent again with `retry`)."""
    services = _services(request)
    limits = _limits(services)
    now = services.clock.now()
    with services.db.write() as session:
        endpoint = service.update(
            session, now, principal, endpointId, body, limits, actor=actor(request, principal)
        )
        out = service.to_schema(endpoint, now)
    return _json(out)


@router.delete(
    "/webhook-endpoints/{endpointId}",
    operation_id="deleteWebhookEndpoint",
    summary="Delete a webhook endpoint",
    tags=TAGS,
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted, with its deliveries"}, 404: NOT_FOUND, **READ_ERRORS},
)
def delete_endpoint(request: Request, endpointId: EndpointId, principal: WRITE) -> Response:
    """Nothing more is sent to it; its deliveries and their attempts are deleted too."""
    services = _services(request)
    now = services.clock.now()
    with services.db.write() as session:
        service.delete(session, now, principal, endpointId, actor=actor(request, principal))
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpointId}/rotate-secret",
    operation_id="rotateWebhookEndpointSecret",
    summary="Rotate a webhook endpoint's secret",
    tags=TAGS,
    response_model=WebhookEndpointWithSecret,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The new `secret`, shown this once"},
        404: NOT_FOUND,
        **READ_ERRORS,
    },
)
def rotate_secret(request: Request, endpointId: EndpointId, principal: WRITE) -> Response:
    """A new secret signs from now on; the previous one signs too until
    `previousSecretExpiresAt` (IOD_WEBHOOK_SECRET_GRACE_SECONDS, a day): each attempt then
    carries two signatures, so a receiver can switch at its own pace."""
    services = _services(request)
    limits = _limits(services)
    now = services.clock.now()
    with services.db.write() as session:
        endpoint, secret = service.rotate_secret(
            session, now, principal, endpointId, limits, actor=actor(request, principal)
        )
        out = WebhookEndpointWithSecret(
            **service.to_schema(endpoint, now).model_dump(), secret=secret
        )
    return _json(out, headers={"Cache-Control": "no-store"})


@router.get(
    "/webhook-endpoints/{endpointId}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="List a webhook endpoint's deliveries",
    tags=TAGS,
    response_model=WebhookDeliveryList,
    response_model_exclude_none=True,
    responses={400: BAD_QUERY, 404: NOT_FOUND, **READ_ERRORS},
)
async def list_deliveries(
    request: Request,
    endpointId: EndpointId,
    principal: READ,
    status: Annotated[
        Literal["pending", "succeeded", "failed"] | None,
        Query(description="Only deliveries in this status."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Newest first, each with its last attempts (status code, duration, the start of the
    answer, the error)."""
    services = _services(request)

    def page() -> WebhookDeliveryList:
        with services.db.read() as session:
            rows, next_cursor = service.deliveries(
                session, principal, endpointId, cursor=cursor, status=status, limit=limit
            )
        return WebhookDeliveryList(deliveries=rows, nextCursor=next_cursor)

    answer = await off_the_loop(services, page)
    charge_rows(services, request.scope.setdefault("state", {}), principal, len(answer.deliveries))
    return _json(answer)


@router.post(
    "/webhook-endpoints/{endpointId}/deliveries/{deliveryId}/retry",
    operation_id="retryWebhookDelivery",
    summary="Send a delivery again",
    tags=TAGS,
    status_code=202,
    response_model=WebhookDeliveryOut,
    response_model_exclude_none=True,
    responses={
        202: {"description": "Queued: one more attempt now, with the same `webhook-id`"},
        404: DELIVERY_NOT_FOUND,
        409: problem(
            "The endpoint is disabled (`/problems/webhook-endpoint-disabled`): enable it first"
        ),
        **READ_ERRORS,
    },
)
def retry_delivery(
    request: Request, endpointId: EndpointId, deliveryId: DeliveryId, principal: WRITE
) -> Response:
    """One more attempt now, whatever the delivery's status, signed with the current
    secret(s) and the same `webhook-id` (receivers deduplicate on it)."""
    services = _services(request)
    now = services.clock.now()
    with services.db.write() as session:
        out = service.retry(
            session, now, principal, endpointId, deliveryId, actor=actor(request, principal)
        )
    return _json(out, 202)
