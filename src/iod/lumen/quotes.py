"""Where an order's quote comes from: a small interface that the quotes of the money issue
(issue 15) implement (`iod.lumen.pricing.MoneyQuotes`, `POST /Product/v1/priceRequest`).

Until a quote book is registered (`use`), no quote exists: an order to `add` or `modify`
answers Lumen's 422 for an unknown quote, and `delete`, which needs none, works. The money
feature registers its book when it is loaded (its module in `iod.features.FEATURES`):

    from iod.lumen import quotes
    quotes.use(MyQuoteBook())
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Quote:
    """What an order needs of a quote (price lines stay with the money feature)."""

    id: str
    customer_id: str
    # Where the connection is (a location id, Lumen's masterSiteId) and the quoted speed.
    master_site_id: str
    bandwidth_mbps: int
    # The service a quote for a change is about (Lumen's `serviceId`); None: a new one (add).
    service_id: str | None
    valid_until: datetime
    # The order that used it, if any: a quote orders once.
    ordered_by: str | None = None
    # A quote of the money feature: the order redeems it through the connection services
    # (`quoteId`), so its price applies as with `quoteId` on our API.
    redeem: bool = False


class QuoteBook(Protocol):
    def find(self, session: Session, customer_id: str, quote_id: str) -> Quote | None:
        """The customer's quote with this id; None for an unknown id or another customer's
        (the order answers both alike)."""
        ...

    def mark_ordered(self, session: Session, quote_id: str, order_id: str) -> None:
        """The quote was used by this order, in the order's transaction."""
        ...


class NoQuotes:
    """The book before the money feature: it knows no quote."""

    def find(self, session: Session, customer_id: str, quote_id: str) -> Quote | None:
        return None

    def mark_ordered(self, session: Session, quote_id: str, order_id: str) -> None:
        raise LookupError(f"no quote {quote_id}")


_book: QuoteBook = NoQuotes()


def use(book: QuoteBook) -> QuoteBook:
    """Makes `book` the one orders read (the money feature at import; tests with their own)."""
    global _book
    previous, _book = _book, book
    return previous


def book() -> QuoteBook:
    return _book


def available() -> bool:
    """Whether a feature provides quotes (docs and errors say so when none does)."""
    return not isinstance(_book, NoQuotes)
