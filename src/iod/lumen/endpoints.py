"""The Lumen-compatible operations (issue 19): Lumen's paths and fields, our engine.

Endpoints parse, call one service function inside one transaction, and return a schema;
errors are rendered as Lumen's `{code, reason, propertyPath}` lists by `lumen.api`."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth import endpoints as oauth
from iod.auth.dependencies import actor
from iod.infra.http import StrictJsonRoute, require_json
from iod.lumen import bills, orders, pricing, service
from iod.lumen.dependencies import READ, TOKEN_PATH, WRITE
from iod.lumen.errors import LumenError
from iod.lumen.schemas import (
    BillingAccountList,
    CustomerBills,
    Inventory,
    LocationList,
    Order,
    OrderRequest,
    PartnerList,
    PriceList,
    PriceQuote,
    PriceRequestIn,
    ServiceChargeDetails,
    Token,
)
from iod.lumen.service import Caller, Catalog

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(route_class=StrictJsonRoute)

ORDER_PATH = "/Customer/v3/Ordering/orderRequest"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def catalog_of(services: Services) -> Catalog:
    s = services.settings
    return Catalog(
        partner_id=s.lumen_partner_id,
        partner_name=s.lumen_partner_name,
        partner_type=s.lumen_partner_type,
        hq_country=s.lumen_hq_country,
        product_code=s.lumen_product_code,
    )


def lumen_errors(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LumenErrors"}}},
    }


@router.post(
    TOKEN_PATH,
    operation_id="lumenToken",
    summary="Get an access token (client credentials)",
    tags=["OAuth 2.0"],
    response_model=Token,
    openapi_extra=oauth.TOKEN_REQUEST_SCHEMA,
    responses={
        400: lumen_errors("invalid_request, unsupported_grant_type or invalid_scope (`code`)"),
        401: lumen_errors("invalid_client: unknown client or wrong secret"),
        429: lumen_errors("slow_down: too many requests or failures; see `Retry-After`"),
    },
)
async def token(request: Request) -> JSONResponse:
    """The same client credentials, throttling and tokens as `POST /oauth2/token` (HTTP Basic
    or form-body client authentication, `grant_type=client_credentials`, optional `scope`);
    its refusals are Lumen error lists whose `code` is the OAuth error."""
    try:
        return await oauth.exchange(request)
    except oauth.OAuthFailure as exc:
        headers = dict(oauth.NO_STORE)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="internet-on-demand"'
        raise LumenError(exc.status, exc.error, exc.description, None, headers) from exc


@router.get(
    "/ProductInventory/v1/inventory",
    operation_id="getInventory",
    summary="The customer's services",
    tags=["Inventory"],
    response_model=Inventory,
    response_model_exclude_none=True,
    response_model_by_alias=True,
    responses={400: lumen_errors("An invalid query parameter")},
)
def inventory(
    request: Request,
    caller: READ,
    serviceId: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{11}$", description="Only this service (11 digits)."),
    ] = None,
    serviceType: Annotated[
        str | None,
        Query(max_length=64, description="`Internet On-Demand`; any other type lists nothing."),
    ] = None,
    pageNumber: Annotated[int, Query(ge=1, le=100_000, description="From 1.")] = 1,
    pageSize: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Inventory:
    """Every connection of the customer as a Lumen service, terminated ones included (as
    `Disconnected`), oldest first. `product.status` says `Change pending` while a bandwidth
    change is due but not yet in force (docs/lumen.md has every status)."""
    services = _services(request)
    with services.db.read() as session:
        return service.inventory(
            session, services.clock, caller, catalog_of(services),
            service_id=serviceId, service_type=serviceType,
            page_number=pageNumber, page_size=pageSize,
        )  # fmt: skip


@router.get(
    "/Network/v1/provider",
    operation_id="listProviders",
    summary="Partners (this deployment)",
    tags=["Discovery"],
    response_model=PartnerList,
)
def providers(request: Request, caller: READ) -> PartnerList:
    """One partner: this deployment (its id is `IOD_LUMEN_PARTNER_ID`)."""
    return service.partners(catalog_of(_services(request)))


@router.get(
    "/Network/v1/location",
    operation_id="listLocations",
    summary="Locations (master sites) of a partner",
    tags=["Discovery"],
    response_model=LocationList,
    responses={400: lumen_errors("An invalid query parameter")},
)
def locations(
    request: Request,
    caller: READ,
    partnerId: Annotated[
        str | None, Query(max_length=64, description="The partner's id (`listPartners[].id`).")
    ] = None,
) -> LocationList:
    """The catalog's locations with the speeds each offers; none for another partner id."""
    services = _services(request)
    with services.db.read() as session:
        return service.locations(session, catalog_of(services), partnerId)


@router.get(
    "/Account/v1/billingAccount",
    operation_id="listBillingAccounts",
    summary="The customer's billing accounts",
    tags=["Discovery"],
    response_model=BillingAccountList,
)
def billing_accounts(request: Request, caller: READ) -> BillingAccountList:
    """One account per customer, numbered as the customer (`x-customer-number`)."""
    return service.billing_accounts(caller, catalog_of(_services(request)))


@router.post(
    ORDER_PATH,
    operation_id="createOrder",
    summary="Order: add, modify or delete a service",
    tags=["Ordering"],
    status_code=201,
    response_model=Order,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        201: {"description": "The order (also for a repeat of the same `externalId`)"},
        400: lumen_errors("An invalid body: `propertyPath` names the field"),
        404: lumen_errors("No such service (`product.id`) for this customer"),
        422: lumen_errors(
            "Not possible: an unknown, expired or used quote, a service whose status does "
            "not allow it (`Change pending`, ...), capacity, another order's `externalId`"
        ),
    },
)
def create_order(request: Request, body: OrderRequest, caller: WRITE) -> JSONResponse:
    """`delete` terminates the service `product.id`; `modify` changes its bandwidth to its
    quote's speed; `add` orders a new service at its quote's location (each `add` or `modify`
    takes the next quote of `quote[]`). All items or none. A repeat of an `externalId`
    answers that order, with its items' states now; the same `externalId` for a different
    request is 422."""
    services = _services(request)

    def place() -> tuple[Order, bool]:
        with services.db.write() as session:
            _act_for(session, request, caller)
            return orders.place_order(session, services.clock, caller, body, services.policy)

    try:
        order, repeat = place()
    except IntegrityError:
        # A concurrent request with the same externalId committed first: answer as a repeat.
        order, repeat = place()
    headers = {"Idempotent-Replayed": "true"} if repeat else {}
    return JSONResponse(
        order.model_dump(mode="json", exclude_none=True), status_code=201, headers=headers
    )


@router.get(
    ORDER_PATH + "/{orderId}",
    operation_id="getOrder",
    summary="One order, with its items' states",
    tags=["Ordering"],
    response_model=Order,
    response_model_exclude_none=True,
    responses={404: lumen_errors("No such order for this customer")},
)
def get_order(
    request: Request,
    caller: READ,
    orderId: Annotated[str, Path(max_length=64, description="The order's `id`.")],
) -> Order:
    """Extension: the order as `POST` answered it, its states read now."""
    services = _services(request)
    with services.db.read() as session:
        return orders.get_order(session, services.clock, caller, orderId)


def _act_for(session: Session, request: Request, caller: Caller) -> None:
    """The events (and audit records) of this transaction are the client's doing."""
    audit.act_for(session, actor(request, caller.principal))


# -- prices and quotes (over the money feature: iod.lumen.pricing) --------------------------


@router.get(
    "/Product/v1/price",
    operation_id="listPrices",
    summary="Hourly prices per speed at a location",
    tags=["Pricing"],
    response_model=PriceList,
    responses={
        400: lumen_errors("An invalid query parameter"),
        404: lumen_errors("No such location (`masterSiteId`)"),
    },
)
def prices(
    request: Request,
    caller: READ,
    masterSiteId: Annotated[str, Query(min_length=1, max_length=64, description="The location.")],
    productCode: Annotated[
        str, Query(min_length=1, max_length=16, description="`718`; another lists nothing.")
    ] = "718",
) -> PriceList:
    """The price book's hourly rate in force now for each priced speed of the location."""
    services = _services(request)
    with services.db.read() as session:
        return pricing.price_list(
            session, services.clock, catalog_of(services), productCode, masterSiteId
        )


@router.post(
    "/Product/v1/priceRequest",
    operation_id="createPriceRequest",
    summary="Quote: a new service or a change of speed",
    tags=["Pricing"],
    status_code=201,
    response_model=PriceQuote,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        400: lumen_errors("An invalid body: `propertyPath` names the field"),
        404: lumen_errors("No such service (`serviceId`) or location (`masterSiteId`)"),
        422: lumen_errors(
            "Not possible: neither `serviceId` nor `partnerId` and `masterSiteId`, a speed "
            "not offered or not priced, another partner, product, currency or customer "
            "number, a service that cannot change now"
        ),
    },
)
def price_request(request: Request, body: PriceRequestIn, caller: WRITE) -> PriceQuote:
    """A quote (the money feature's, `POST /internet-on-demand/quotes`) valid 15 minutes:
    its `id` goes in an order's `quote[].id`. `serviceId`: a change of that service;
    else `partnerId` (or `PartnerId`) and `masterSiteId`: a new service."""
    services = _services(request)
    with services.db.write() as session:
        _act_for(session, request, caller)
        return pricing.price_request(
            session, services.clock, caller, catalog_of(services), body,
            services.settings.quote_ttl_seconds, services.policy.max_schedule_days,
        )  # fmt: skip


# -- bills (over the money feature's statements: iod.lumen.bills) ---------------------------

BILLS_PATH = "/Billing/v2/CustomerBillManagement"
AccountQuery = Annotated[
    str | None, Query(max_length=40, description="The customer number (its only account).")
]
AccountHeader = Annotated[
    str | None,
    Header(alias="x-billing-account-number", max_length=40, description="The same, as a header."),
]
Offset = Annotated[int, Query(ge=0, le=100_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get(
    BILLS_PATH + "/customerBill",
    operation_id="listCustomerBills",
    summary="Bills (our monthly statements)",
    tags=["Billing"],
    response_model=CustomerBills,
    responses={
        400: lumen_errors("An invalid query parameter"),
        404: lumen_errors("No such billing account for this customer"),
    },
)
def customer_bills(
    request: Request,
    caller: READ,
    billingAccountNumber: AccountQuery = None,
    x_billing_account_number: AccountHeader = None,
    startBillDate: Annotated[date | None, Query(description="`YYYY-MM-DD`")] = None,
    endBillDate: Annotated[date | None, Query(description="`YYYY-MM-DD`")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> CustomerBills:
    """One bill per calendar month with usage (open while the month runs), newest first,
    with its amount per currency after monthly caps."""
    account = bills.account_of(caller, billingAccountNumber, x_billing_account_number)
    services = _services(request)
    with services.db.read() as session:
        return bills.customer_bills(
            session, services.clock, caller, account, startBillDate, endBillDate, offset, limit
        )


@router.get(
    BILLS_PATH + "/serviceLevelChargeDetails",
    operation_id="listServiceLevelCharges",
    summary="A bill's charges per service and speed",
    tags=["Billing"],
    response_model=ServiceChargeDetails,
    response_model_exclude_none=True,
    responses={
        400: lumen_errors("An invalid query parameter"),
        404: lumen_errors("No such invoice or billing account for this customer"),
    },
)
def service_level_charges(
    request: Request,
    caller: READ,
    invoiceNumber: Annotated[str, Query(min_length=1, max_length=64)],
    billingAccountNumber: AccountQuery = None,
    x_billing_account_number: AccountHeader = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> ServiceChargeDetails:
    """The invoice's usage lines: each service's stretches at one bandwidth and rate, with
    the hours (`chargeDescription2`), then the monthly cap adjustments."""
    account = bills.account_of(caller, billingAccountNumber, x_billing_account_number)
    services = _services(request)
    with services.db.read() as session:
        return bills.service_charges(session, caller, account, invoiceNumber, offset, limit)
