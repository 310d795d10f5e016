"""Bandwidth text on the wire ("100 Mbps") and whole Mbps inside."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iod.domain.bandwidth import MAX_MBPS, BandwidthError, format_bandwidth, parse_bandwidth
from tests.conftest import thorough

# What the canonical form looks like: whole Mbps below 1000, otherwise Gbps without
# trailing zeros, never an exponent.
CANONICAL = re.compile(r"^(?:[1-9]\d{0,2} Mbps|[1-9]\d*(?:\.\d{0,2}[1-9])? Gbps)$")


@pytest.mark.parametrize(
    ("text", "mbps"),
    [
        ("100Mbps", 100),
        ("100 Mbps", 100),
        ("100 mbps", 100),
        ("100 MBPS", 100),
        ("100 mBpS", 100),
        (" 10 MBPS ", 10),
        ("\t10 Mbps\n", 10),
        ("1Gbps", 1000),
        ("1 Gbps", 1000),
        ("1 gbps", 1000),
        ("1.5 Gbps", 1500),
        ("1.5Gbps", 1500),
        ("1.25 Gbps", 1250),
        ("1.001 Gbps", 1001),
        ("0.001 Gbps", 1),
        ("0.5 Gbps", 500),
        ("10 Gbps", 10_000),
        ("1 Mbps", 1),
        ("1.0 Mbps", 1),
        ("100.000000 Mbps", 100),
        ("2.500000 Gbps", 2500),
        ("999999 Mbps", 999_999),
        ("1000000 Mbps", MAX_MBPS),
        ("1000 Gbps", MAX_MBPS),
        ("999.999 Gbps", 999_999),
    ],
)
def test_parse_accepts(text: str, mbps: int) -> None:
    result = parse_bandwidth(text)
    assert result == mbps
    assert type(result) is int


@pytest.mark.parametrize(
    "text",
    [
        "fast",
        "0 Mbps",
        "0 Gbps",
        "0.0 Gbps",
        "-1Gbps",
        "-1 Mbps",
        "+1 Mbps",
        "1e9 Mbps",
        "1E3 Mbps",
        "100 Mbit",
        "100 Mb/s",
        "100 Kbps",
        "100 Tbps",
        "",
        "   ",
        "0.5 Mbps",
        "1.5 Mbps",
        "0.0001 Gbps",
        "1.0005 Gbps",
        "100",
        "Mbps",
        "Gbps",
        "1,000 Mbps",
        "1_000 Mbps",
        "1.000,5 Mbps",
        "NaN Mbps",
        "nan Gbps",
        "inf Gbps",
        "Infinity Mbps",
        ".5 Gbps",
        "5. Gbps",
        "0x10 Mbps",
        "100 Mbps Mbps",
        "100 Mbps extra",
        "Mbps 100",
        "1000001 Mbps",
        "1000.001 Gbps",
        "1001 Gbps",
        "999999999 Gbps",
        "10000000000 Mbps",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(BandwidthError):
        parse_bandwidth(text)


def test_values_above_max_are_rejected_at_the_boundary() -> None:
    assert parse_bandwidth(f"{MAX_MBPS} Mbps") == MAX_MBPS
    with pytest.raises(BandwidthError):
        parse_bandwidth(f"{MAX_MBPS + 1} Mbps")
    with pytest.raises(BandwidthError):
        parse_bandwidth(f"{Decimal(MAX_MBPS + 1) / 1000} Gbps")


def test_bandwidth_error_is_a_value_error() -> None:
    # Callers (request validation) may catch ValueError generically.
    assert issubclass(BandwidthError, ValueError)
    with pytest.raises(ValueError, match="Mbps"):
        parse_bandwidth("fast")


@pytest.mark.parametrize(
    "text",
    ["\u0661\u0660\u0660 Mbps", "\uff11\uff10\uff10 Mbps", "100 mbp\u017f"],
    ids=["arabic-indic-digits", "fullwidth-digits", "long-s"],
)
def test_parse_rejects_non_ascii_lookalikes(text: str) -> None:
    with pytest.raises(BandwidthError):
        parse_bandwidth(text)


@pytest.mark.parametrize(
    ("mbps", "text"),
    [
        (1, "1 Mbps"),
        (5, "5 Mbps"),
        (100, "100 Mbps"),
        (999, "999 Mbps"),
        (1000, "1 Gbps"),
        (1001, "1.001 Gbps"),
        (1010, "1.01 Gbps"),
        (1500, "1.5 Gbps"),
        (2000, "2 Gbps"),
        (10_000, "10 Gbps"),
        (100_000, "100 Gbps"),
        (123_456, "123.456 Gbps"),
        (MAX_MBPS, "1000 Gbps"),
    ],
)
def test_format_is_canonical(mbps: int, text: str) -> None:
    assert format_bandwidth(mbps) == text


@pytest.mark.parametrize("mbps", [0, -1, -1000])
def test_format_rejects_non_positive(mbps: int) -> None:
    with pytest.raises(ValueError):
        format_bandwidth(mbps)


def test_round_trip_every_integer_up_to_max() -> None:
    bad = [m for m in range(1, MAX_MBPS + 1) if parse_bandwidth(format_bandwidth(m)) != m]
    assert bad == []


@settings(max_examples=thorough(300))
@given(st.integers(min_value=1, max_value=MAX_MBPS))
@example(1)
@example(999)
@example(1000)
@example(10_000)
@example(MAX_MBPS)
def test_format_output_is_canonical_text(mbps: int) -> None:
    text = format_bandwidth(mbps)
    assert CANONICAL.fullmatch(text), text
    # The canonical text is already in canonical form.
    assert format_bandwidth(parse_bandwidth(text)) == text


@st.composite
def valid_texts(draw: st.DrawFn) -> tuple[str, int]:
    """A valid bandwidth text in any accepted spelling, and the Mbps it means."""
    mbps = draw(st.integers(min_value=1, max_value=MAX_MBPS))
    use_gbps = draw(st.booleans())
    if use_gbps:
        number = format(Decimal(mbps) / 1000, "f")
        unit = "gbps"
    else:
        number = str(mbps)
        unit = "mbps"
    integer, _, fraction = number.partition(".")
    # Pad with trailing zeros, at most six decimals in all.
    pad = draw(st.integers(min_value=0, max_value=6 - len(fraction)))
    fraction = fraction + "0" * pad
    number = f"{integer}.{fraction}" if fraction else integer
    unit = "".join(c.upper() if draw(st.booleans()) else c for c in unit)
    space = draw(st.sampled_from(["", " "]))
    lead = draw(st.sampled_from(["", " ", "  ", "\t", "\n"]))
    trail = draw(st.sampled_from(["", " ", "  ", "\t", "\n"]))
    return f"{lead}{number}{space}{unit}{trail}", mbps


@settings(max_examples=thorough(500))
@given(valid_texts())
def test_generated_valid_texts_parse_to_their_value(case: tuple[str, int]) -> None:
    text, mbps = case
    assert parse_bandwidth(text) == mbps


@settings(max_examples=thorough(500))
@given(valid_texts())
def test_format_of_parse_is_idempotent(case: tuple[str, int]) -> None:
    text, _ = case
    canonical = format_bandwidth(parse_bandwidth(text))
    assert format_bandwidth(parse_bandwidth(canonical)) == canonical
    assert CANONICAL.fullmatch(canonical)


def _check_total(text: str) -> None:
    try:
        result = parse_bandwidth(text)
    except BandwidthError:
        return
    assert type(result) is int
    assert 1 <= result <= MAX_MBPS


@settings(max_examples=thorough(400))
@given(st.text())
@example("1e9 Mbps")
@example("NaN Mbps")
@example("0.0000001 Gbps")
def test_arbitrary_text_parses_or_raises_bandwidth_error(text: str) -> None:
    _check_total(text)


@settings(max_examples=thorough(200))
@given(st.from_regex(r"\s*[-+]?[0-9.,eE_]{0,14} ?[MmGgKkTt]?[Bb]?[Pp]?[Ss]?\s*", fullmatch=True))
def test_near_miss_text_parses_or_raises_bandwidth_error(text: str) -> None:
    _check_total(text)


@pytest.mark.parametrize(
    "text", ["1.0000000001 Gbps", "0.00000000000000000001 Gbps", "2.1234567 Mbps"]
)
def test_a_fraction_of_a_mbps_is_refused_as_such(text: str) -> None:
    """Up to 20 decimals (more than the six before) are read, and a fraction of a Mbps is
    refused for what it is."""
    with pytest.raises(BandwidthError, match="whole number of Mbps"):
        parse_bandwidth(text)
