"""Prices before confirming: the order and change-bandwidth forms' quotes.

A review step creates a quote through the billing service (as `POST /quotes` does) and the
confirm step passes its id (`quoteId`), so the rate shown is the rate charged. An expired,
used or mismatched quote is refused at confirm like the API refuses it, with a message for
a person at `/quoteId`; the page then shows a fresh quote to confirm again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from iod.billing import repository as billing_repository
from iod.billing import service as billing
from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.infra.clock import Clock
from iod.infra.errors import Conflict, FieldError, ValidationFailed
from iod.infra.ids import looks_like_id
from iod.models import Quote
from iod.portal import views
from iod.portal.service import CurrentUser

if TYPE_CHECKING:
    from iod.app import Services


@dataclass(frozen=True)
class Price:
    """A quote as a page shows it (amounts as text in the currency's units)."""

    quote_id: str
    bandwidth: str
    currency: str
    hourly: str
    daily: str
    monthly: str
    cap: str | None
    expires: str  # in the user's zone

    @classmethod
    def of(cls, quote: Quote, zone: str) -> Price:
        shown = billing.present_quote(quote)
        return cls(
            quote_id=quote.id,
            bandwidth=shown["bandwidth"],
            currency=quote.currency,
            hourly=shown["hourlyRate"],
            daily=shown["estimatedDailyCost"],
            monthly=shown["estimatedMonthlyCost"],
            cap=shown["monthlyCap"],
            expires=views.local(quote.expires_at, zone),
        )


@dataclass(frozen=True)
class Unpriced:
    """The tier has no price in the book at that time: orderable, not quotable."""

    detail: str


def _quoted(user: CurrentUser, make: Callable[[], Quote], zone: str = "") -> Price | Unpriced:
    try:
        quote = make()
    except Conflict as exc:
        # `NotPriced` is a plain Conflict; its subclasses (a terminated connection:
        # InvalidState) are the request's problems, not a missing price.
        if type(exc) is not billing.NotPriced:
            raise
        return Unpriced(exc.detail)
    return Price.of(quote, zone or user.time_zone)


def for_order(
    session: Session, services: Services, user: CurrentUser, order: ConnectionRequest
) -> Price | Unpriced:
    """The price of `order` (as `POST /quotes` with `locationId` quotes it)."""
    return _quoted(user, lambda: billing.create_quote(
        session, services.clock, user.principal, location_id=order.locationId,
        connection_id=None, bandwidth=order.bandwidth, effective=None, revert_at=None,
        ttl_seconds=services.settings.quote_ttl_seconds,
        max_schedule_days=services.policy.max_schedule_days,
    ))  # fmt: skip


def for_change(
    session: Session, services: Services, user: CurrentUser, connection_id: str,
    update: BandwidthUpdate, zone: str,
) -> Price | Unpriced:  # fmt: skip
    """The price of `update` (as `POST /quotes` with `connectionId` quotes it); times in
    `zone`, the form's."""
    return _quoted(user, lambda: billing.create_quote(
        session, services.clock, user.principal, location_id=None, connection_id=connection_id,
        bandwidth=update.bandwidth, effective=update.effectiveDate, revert_at=update.revertAt,
        ttl_seconds=services.settings.quote_ttl_seconds,
        max_schedule_days=services.policy.max_schedule_days,
    ), zone)  # fmt: skip


def check_usable(session: Session, clock: Clock, user: CurrentUser, quote_id: str) -> None:
    """Before an order or change with `quote_id`, in its transaction: an expired or used
    quote is the API's 409 (`billing.redeem` checks it again, and the rest), said for a
    person and pointing at `/quoteId`, where the page shows it."""
    quote = (
        billing_repository.quote_for_customer(session, user.customer_id, quote_id)
        if looks_like_id(quote_id)
        else None
    )
    if quote is None:
        raise ValidationFailed.field("/quoteId", "this price quote is not one of yours")
    if quote.used_at is not None:
        message = "this price quote was already used"
    elif quote.expires_at <= clock.now():
        message = (
            f"the price quote expired at {views.local(quote.expires_at, user.time_zone)} "
            "(a quote holds for a few minutes)"
        )
    else:
        return
    raise Conflict(message, errors=[FieldError("/quoteId", message)])


def is_quote_problem(errors: dict[str, str]) -> bool:
    """Whether a refused confirm was about its quote (then the page quotes again)."""
    return "/quoteId" in errors
