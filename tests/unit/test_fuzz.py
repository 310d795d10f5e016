"""Fuzzing the two parsers of client input: bandwidth text and the effectiveDate/revertAt
date-times (BandwidthUpdate's validator). Example counts come from the hypothesis profile:
100 each under `make test`, IOD_FUZZ_EXAMPLES (20,000) each under `make fuzz`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.domain.bandwidth import MAX_MBPS, BandwidthError, format_bandwidth, parse_bandwidth
from tests.unit.test_bandwidth import CANONICAL, valid_texts

# Any JSON value a client could send in place of a string (JSON has no NaN or infinity).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
# Text biased towards what a parser meets: digits, separators, units, unicode look-alikes.
near_bandwidth = st.text(
    alphabet=st.sampled_from(list("0123456789.,+-eE_ MmGgBbPpSsKkTt\t\n\u00a0\u0660\uff11")),
    max_size=24,
)


# -- bandwidth -------------------------------------------------------------------------------


@given(st.text() | near_bandwidth)
@example("1" * 10 + " Mbps")
@example("0.0000001 Gbps")
@example("\uff11\uff10\uff10 Mbps")  # full-width digits
def test_fuzz_bandwidth_parses_or_raises_bandwidth_error(text: str) -> None:
    try:
        mbps = parse_bandwidth(text)
    except BandwidthError:
        return
    assert type(mbps) is int and 1 <= mbps <= MAX_MBPS
    canonical = format_bandwidth(mbps)
    assert CANONICAL.fullmatch(canonical)
    assert parse_bandwidth(canonical) == mbps


@given(valid_texts())
def test_fuzz_every_valid_spelling_parses_to_its_value(case: tuple[str, int]) -> None:
    text, mbps = case
    assert parse_bandwidth(text) == mbps


@given(json_values | near_bandwidth)
def test_fuzz_bandwidth_on_the_wire_is_canonical_or_a_validation_error(value: Any) -> None:
    bodies = [
        (ConnectionRequest, {"bandwidth": value, "locationId": "PL0001247634"}),
        (BandwidthUpdate, {"bandwidth": value}),  # an unknown locationId would be an error
    ]
    for model, body in bodies:
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            assert exc.errors()[0]["loc"][0] == "bandwidth"
            continue
        assert CANONICAL.fullmatch(parsed.bandwidth)


# -- effectiveDate and revertAt --------------------------------------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@st.composite
def rfc3339_spellings(draw: st.DrawFn) -> tuple[str, datetime]:
    """An RFC 3339 text in any spelling the API accepts, and the instant it means."""
    moment = draw(aware)
    digits = draw(st.sampled_from([0, 1, 3, 6]))
    scale = 10 ** (6 - digits)
    moment = moment.replace(microsecond=moment.microsecond // scale * scale if digits else 0)
    text = moment.replace(tzinfo=None).isoformat(sep=draw(st.sampled_from("Tt ")))
    if digits == 0:
        text = text.split(".")[0]
    elif "." not in text:
        text += "." + "0" * digits
    else:
        text = text[: text.index(".") + 1 + digits].ljust(text.index(".") + 1 + digits, "0")
    offset = moment.utcoffset()
    assert offset is not None
    if offset == timedelta(0) and draw(st.booleans()):
        suffix = draw(st.sampled_from("Zz"))
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        suffix = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text + suffix, moment


@given(rfc3339_spellings())
@example(("2030-01-01T09:00:00Z", datetime(2030, 1, 1, 9, tzinfo=UTC)))
@example(("2030-01-01t09:00:00.123456789+02:00", None))
def test_fuzz_rfc3339_dates_parse_to_their_instant(case: tuple[str, datetime | None]) -> None:
    text, moment = case
    for field in ("effectiveDate", "revertAt"):
        try:
            parsed = getattr(BandwidthUpdate.model_validate({"bandwidth": "1 Gbps", field: text}),
                             field)  # fmt: skip
        except ValidationError:
            assert moment is None, text  # nine fraction digits: refused, politely
            continue
        assert parsed.tzinfo is not None
        if moment is not None:
            assert parsed == moment


@pytest.mark.parametrize("field", ["effectiveDate", "revertAt"])
@given(value=json_values | st.text(alphabet=st.sampled_from(list("0123456789-:.TtZz+ ")),
                                   max_size=40))  # fmt: skip
@example(value="2030-02-30T00:00:00Z")
@example(value="2030-01-01T24:00:00Z")
@example(value="2030-01-01T09:00:00+24:00")
@example(value="9999-12-31T23:59:59-23:59")
@example(value="0001-01-01T00:00:00+00:01")
@example(value="2030-01-01T09:00:00")
def test_fuzz_dates_parse_or_are_a_validation_error_on_the_field(field: str, value: Any) -> None:
    try:
        parsed = BandwidthUpdate.model_validate({"bandwidth": "1 Gbps", field: value})
    except ValidationError as exc:
        assert [e["loc"][0] for e in exc.errors()] == [field]
        return
    moment = getattr(parsed, field)
    assert isinstance(value, str) and moment.tzinfo is not None
    moment.astimezone(UTC)  # comparable with the service's clock, never an overflow later
