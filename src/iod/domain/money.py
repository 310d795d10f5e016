"""Money: integer amounts in a currency's minor units (cents), never floats.

Rates are whole minor units per hour. A usage line's amount is the rate times the seconds
(times the suspended fraction) over 3,600, rounded once, half to even, to a whole minor unit
(`line_amount`): the only rounding anywhere. Totals are sums of rounded lines.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that are not 2 (the common case).
_EXPONENTS = {
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_AMOUNT = re.compile(r"^\d{1,12}(\.\d{1,3})?$")
SECONDS_PER_HOUR = 3600
# A price's amounts are kept in minor units in INTEGER columns (PostgreSQL's int4).
MAX_MINOR = 2**31 - 1
ESTIMATE_DAY_HOURS = 24
ESTIMATE_MONTH_HOURS = 720  # 30 days: the provider's own example, $0.46 x 720 = $331.20


class MoneyError(ValueError):
    """Not an amount or a currency this service understands."""


def check_currency(code: str) -> str:
    if not _CURRENCY.fullmatch(code):
        raise MoneyError("currency must be an ISO 4217 code of three capital letters, e.g. USD")
    return code


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def to_minor(text: str, currency: str) -> int:
    """ "0.46" USD -> 46; refuses more decimals than the currency has, negatives, floats."""
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text.strip()):
        raise MoneyError(
            f'an amount is a non-negative decimal written as text, e.g. "0.46"; got {text!r}'
        )
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise MoneyError(f"{text!r} is not a number") from exc
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{text} has more decimals than {currency} has ({exponent(currency)})")
    if scaled > MAX_MINOR:
        most = format_minor(MAX_MINOR, currency)
        raise MoneyError(f"{text} is more than a price can be ({most} {currency})")
    return int(scaled)


def format_minor(amount: int, currency: str) -> str:
    """46 USD -> "0.46"; -1234 -> "-12.34"."""
    places = exponent(currency)
    value = Decimal(amount).scaleb(-places)
    return f"{value:.{places}f}"


def line_amount(hourly_minor: int, seconds: int, fraction: Decimal = Decimal(1)) -> int:
    """The one rounding: rate x seconds x fraction / 3600, half to even, whole minor units."""
    exact = Decimal(hourly_minor) * seconds * fraction / SECONDS_PER_HOUR
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def capped(total: int, cap: int | None) -> int:
    return total if cap is None else min(total, cap)
