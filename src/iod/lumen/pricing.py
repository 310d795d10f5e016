"""Lumen prices and quotes over the money feature (issue 15, `iod.billing`): the price book
as `GET /Product/v1/price`, its quotes as `POST /Product/v1/priceRequest`, and the
`QuoteBook` that orders read (`iod.lumen.quotes`), registered when this module is imported.

A Lumen quote IS a money quote (same id, same price, same 15 minutes); what only Lumen has
(the request as sent: descriptions, purchase order number; the service of a change; the
order that used it) is kept beside it in `lumen_quotes`. Services flush; the edge commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from iod.billing import repository as billing_repository
from iod.billing import service as billing
from iod.domain import money
from iod.domain.bandwidth import BandwidthError, format_bandwidth, parse_bandwidth
from iod.infra.clock import Clock
from iod.infra.errors import ProblemError, ValidationFailed
from iod.locations import repository as locations
from iod.lumen import quotes, repository
from iod.lumen.errors import LumenError
from iod.lumen.schemas import (
    PriceList,
    PriceQuote,
    PriceRequestIn,
    QuotePrice,
    SpeedPrice,
    ValidFor,
)
from iod.lumen.service import Caller, Catalog
from iod.models import LumenQuote, Quote

HOURLY = "Hourly Rate"
MONTHLY = "Monthly Rate"


def display(amount_minor: int, currency: str, per: str) -> str:
    return f"{currency} {money.format_minor(amount_minor, currency)}/{per}"


# -- GET /Product/v1/price -----------------------------------------------------------------


def price_list(
    session: Session, clock: Clock, catalog: Catalog, product_code: str, master_site_id: str
) -> PriceList:
    """The hourly rate in force now of every priced speed at the location; none for another
    product code. An unknown location is 404 (the catalog is the same for every customer)."""
    location = locations.get(session, master_site_id)
    if location is None:
        raise LumenError(
            404,
            "LOCATION_NOT_FOUND",
            f"masterSiteId {master_site_id} was not found",
            "masterSiteId",
        )
    speeds: list[SpeedPrice] = []
    if product_code == catalog.product_code:
        prices = billing.in_force(billing_repository.prices_of(session, [location.id]), clock.now())
        for tier in location.tiers_mbps:
            price = prices.get((location.id, tier))
            if price is None:  # orderable but not quotable: not listed
                continue
            speeds.append(
                SpeedPrice(
                    speed=format_bandwidth(tier),
                    price=money.format_minor(price.hourly_minor, price.currency),
                    currencyCode=price.currency,
                    term=HOURLY,
                    displayValue=display(price.hourly_minor, price.currency, "hour"),
                )
            )
    return PriceList(productCode=product_code, masterSiteId=location.id, pricePerSpeed=speeds)


# -- POST /Product/v1/priceRequest ---------------------------------------------------------

# Our fields' pointers as the Lumen request's property paths.
_PATHS = {"/bandwidth": "speed", "/locationId": "masterSiteId", "/connectionId": "serviceId"}


def price_request(
    session: Session,
    clock: Clock,
    caller: Caller,
    catalog: Catalog,
    body: PriceRequestIn,
    ttl_seconds: int,
    max_schedule_days: int,
) -> PriceQuote:
    """A money quote for a new service (partner and location) or a change of a service, with
    the request kept beside it. Refusals are Lumen lists naming the request's field."""
    if body.customerNumber is not None and body.customerNumber != caller.customer_number:
        raise LumenError(
            422,
            "INVALID_CUSTOMER_NUMBER",
            f"customerNumber {body.customerNumber} is not the x-customer-number "
            f"({caller.customer_number})",
            "customerNumber",
        )
    if body.productCode != catalog.product_code:
        raise LumenError(
            422,
            "INVALID_PRODUCT_CODE",
            f"productCode {body.productCode} is not offered; Internet On-Demand is "
            f"{catalog.product_code}",
            "productCode",
        )
    try:
        mbps = parse_bandwidth(body.speed)
    except BandwidthError as exc:
        # The schema's pattern admits only numbers and units: what is left (0 Mbps, 1.5 Mbps)
        # is no speed any location offers.
        raise LumenError(422, "SPEED_NOT_AVAILABLE", f"speed: {exc}", "speed") from exc
    principal = caller.principal
    connection_id: str | None = None
    if body.serviceId is not None:
        connection_id = repository.connection_of_service(
            session, principal.customer_id, body.serviceId
        )
        if connection_id is None:  # unknown, or another customer's: the same answer
            raise LumenError(
                404, "SERVICE_NOT_FOUND", f"Service Id {body.serviceId} was not found", "serviceId"
            )
    else:
        partner = body.partnerId if body.partnerId is not None else body.PartnerId
        if partner is None or body.masterSiteId is None:
            missing = "partnerId" if partner is None else "masterSiteId"
            raise LumenError(
                422,
                "MISSING_FIELD",
                f"{missing} is required for a new service (or give serviceId for a change)",
                missing,
            )
        if body.partnerId is not None and body.PartnerId not in (None, body.partnerId):
            raise LumenError(
                422, "INVALID_PARTNER", "partnerId and PartnerId differ: give one", "PartnerId"
            )
        if partner != catalog.partner_id:
            raise LumenError(
                422,
                "INVALID_PARTNER",
                f"partner {partner} has no locations here ({catalog.partner_id} has)",
                "partnerId" if body.partnerId is not None else "PartnerId",
            )
    try:
        quote = billing.create_quote(
            session, clock, principal,
            location_id=None if connection_id is not None else body.masterSiteId,
            connection_id=connection_id, bandwidth=format_bandwidth(mbps),
            effective=None, revert_at=None, ttl_seconds=ttl_seconds,
            max_schedule_days=max_schedule_days,
        )  # fmt: skip
    except ValidationFailed as exc:
        pointer = exc.errors[0].pointer if exc.errors else ""
        code = "SPEED_NOT_AVAILABLE" if pointer == "/bandwidth" else "INVALID_VALUE"
        status = 422 if pointer == "/bandwidth" else 400
        if pointer == "/locationId":
            code, status = "LOCATION_NOT_FOUND", 404
        raise LumenError(status, code, exc.detail, _PATHS.get(pointer)) from exc
    except ProblemError as exc:
        if exc.status == 409:  # not priced, or the service cannot change now
            code = "NOT_PRICED" if "no price" in exc.detail else "INVALID_STATUS"
            raise LumenError(422, code, exc.detail, "speed" if code == "NOT_PRICED" else
                             "serviceId") from exc  # fmt: skip
        raise
    if body.masterSiteId is not None and body.masterSiteId != quote.location_id:
        raise LumenError(
            422,
            "LOCATION_MISMATCH",
            f"Service Id {body.serviceId} is at {quote.location_id}, not {body.masterSiteId}",
            "masterSiteId",
        )
    if body.currencyCode is not None and body.currencyCode != quote.currency:
        raise LumenError(
            422,
            "CURRENCY_NOT_AVAILABLE",
            f"prices here are in {quote.currency}, not {body.currencyCode}",
            "currencyCode",
        )
    request = body.model_dump(mode="json", exclude_none=True)
    session.add(
        LumenQuote(
            quote_id=quote.id,
            customer_id=principal.customer_id,
            service_id=body.serviceId,
            request=request,
            order_id=None,
            created_at=quote.created_at,
        )
    )
    session.flush()
    return present(quote, request, body.serviceId, None)


def present(
    quote: Quote, request: dict[str, Any], service_id: str | None, order_id: str | None
) -> PriceQuote:
    currency = quote.currency
    monthly = billing.estimate(quote, money.ESTIMATE_MONTH_HOURS)
    fmt = money.format_minor
    return PriceQuote(
        id=quote.id,
        state="ordered" if order_id is not None or quote.used_at is not None else "approved",
        priceRequest=request,
        price=[
            QuotePrice(
                name=HOURLY,
                term=HOURLY,
                price=fmt(quote.hourly_minor, currency),
                currencyCode=currency,
                displayValue=display(quote.hourly_minor, currency, "hour"),
            ),
            QuotePrice(
                name=MONTHLY,
                term=MONTHLY,
                price=fmt(monthly, currency),
                currencyCode=currency,
                displayValue=display(monthly, currency, "month"),
            ),
        ],
        validFor=ValidFor(startDateTime=quote.created_at, endDateTime=quote.expires_at),
        serviceId=service_id,
        masterSiteId=quote.location_id,
        speed=format_bandwidth(quote.tier_mbps),
    )


# -- the quote book orders read ------------------------------------------------------------


class MoneyQuotes:
    """`quotes.QuoteBook` over the money feature's quotes. Any quote of the customer orders:
    one asked through `priceRequest` or through our `POST /internet-on-demand/quotes` (one
    state). A quote used by our API (`quoteId`) is already ordered here too. The order
    redeems it through the connection services (`quoteId`), so its price applies as on ours."""

    def find(self, session: Session, customer_id: str, quote_id: str) -> quotes.Quote | None:
        if len(quote_id) > 40:
            return None
        row = session.execute(
            select(Quote, LumenQuote)
            .outerjoin(LumenQuote, LumenQuote.quote_id == Quote.id)
            .where(Quote.id == quote_id, Quote.customer_id == customer_id)
        ).first()
        if row is None:
            return None
        quote, lumen = row
        service_id = lumen.service_id if lumen is not None else None
        if service_id is None and quote.connection_id is not None:
            service_id = repository.service_id_of(session, quote.connection_id)
        ordered_by = lumen.order_id if lumen is not None else None
        if ordered_by is None and quote.used_at is not None:
            ordered_by = f"used at {quote.used_at.isoformat()}"
        valid_until: datetime = quote.expires_at
        return quotes.Quote(
            id=quote.id,
            customer_id=quote.customer_id,
            master_site_id=quote.location_id,
            bandwidth_mbps=quote.tier_mbps,
            service_id=service_id,
            valid_until=valid_until,
            ordered_by=ordered_by,
            redeem=True,
        )

    def mark_ordered(self, session: Session, quote_id: str, order_id: str) -> None:
        lumen = session.get(LumenQuote, quote_id)
        if lumen is None:  # a quote of our API, ordered through Lumen's
            quote = session.get(Quote, quote_id)
            if quote is None:
                raise LookupError(f"no quote {quote_id}")
            lumen = LumenQuote(
                quote_id=quote.id, customer_id=quote.customer_id, service_id=None, request={},
                order_id=None, created_at=quote.created_at,
            )  # fmt: skip
            session.add(lumen)
        lumen.order_id = order_id
        session.flush()


quotes.use(MoneyQuotes())
