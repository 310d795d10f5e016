"""Opaque, URL-safe, time-ordered identifiers."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iod.infra.ids import looks_like_id, new_id, new_ids
from tests.conftest import thorough

# Crockford base32, written out independently of the module under test.
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
BODY_LENGTH = 29
RANDOM_BITS = 96
MAX_MS = (1 << 48) - 1


def decode(identifier: str) -> tuple[str, int, int]:
    """prefix, milliseconds, random part."""
    prefix, _, body = identifier.partition("_")
    value = 0
    for char in body:
        value = value * 32 + CROCKFORD.index(char)
    return prefix, value >> RANDOM_BITS, value & ((1 << RANDOM_BITS) - 1)


@pytest.mark.parametrize("prefix", ["con", "cus", "cli", "chg", "job", "jti", "ab", "abcde"])
def test_new_id_shape(prefix: str) -> None:
    identifier = new_id(prefix)
    assert identifier.startswith(f"{prefix}_")
    assert len(identifier) == len(prefix) + 1 + BODY_LENGTH
    assert looks_like_id(identifier)
    assert set(identifier[len(prefix) + 1 :]) <= set(CROCKFORD)


def test_new_id_is_url_safe() -> None:
    for _ in range(200):
        identifier = new_id("con")
        assert quote(identifier, safe="") == identifier
        assert identifier.isascii()
        assert identifier == identifier.lower()


def test_new_id_is_unique() -> None:
    ids = [new_id("con") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_new_id_with_the_same_millisecond_differs() -> None:
    ids = {new_id("con", now_ms=1_700_000_000_000) for _ in range(5_000)}
    assert len(ids) == 5_000


def test_new_id_encodes_the_given_time() -> None:
    for now_ms in (0, 1, 1_700_000_000_000, 1_893_456_000_000, MAX_MS):
        prefix, millis, _ = decode(new_id("con", now_ms=now_ms))
        assert prefix == "con"
        assert millis == now_ms


def test_new_id_defaults_to_the_system_clock() -> None:
    before = int(time.time() * 1000)
    identifier = new_id("con")
    after = int(time.time() * 1000)
    _, millis, _ = decode(identifier)
    assert before <= millis <= after


def test_new_id_carries_96_random_bits() -> None:
    """Every one of the 96 low bits varies, and they do not leak into the time field."""
    seen_or = 0
    seen_and = (1 << RANDOM_BITS) - 1
    for _ in range(400):
        _, millis, random_part = decode(new_id("con", now_ms=42))
        assert millis == 42
        seen_or |= random_part
        seen_and &= random_part
    assert seen_or == (1 << RANDOM_BITS) - 1  # each bit was set at least once
    assert seen_and == 0  # and clear at least once


@settings(max_examples=thorough(300))
@given(
    st.integers(min_value=0, max_value=MAX_MS - 1),
    st.integers(min_value=1, max_value=MAX_MS),
)
def test_ids_sort_by_creation_time(earlier: int, gap: int) -> None:
    later = min(earlier + gap, MAX_MS)
    assert new_id("con", now_ms=earlier) < new_id("con", now_ms=later)
    # many at once (`new_ids`): each sorts after every id of an earlier millisecond
    first, second = new_ids("con", 50, now_ms=earlier), new_ids("con", 50, now_ms=later)
    assert max(first) < min(second)
    assert max(first) < new_id("con", now_ms=later)
    assert new_id("con", now_ms=earlier) < min(second)


def test_a_sequence_of_ids_sorts_in_creation_order() -> None:
    times = [1_700_000_000_000 + step for step in range(0, 5_000, 7)]
    ids = [new_id("chg", now_ms=ms) for ms in times]
    assert sorted(ids) == ids
    assert sorted(reversed(ids)) == ids


@pytest.mark.parametrize(
    "value",
    [
        "",
        "con",
        "con_",
        "con_" + "0" * 28,
        "con_" + "0" * 30,
        "c_" + "0" * 29,
        "abcdef_" + "0" * 29,
        "CON_" + "0" * 29,
        "con_" + "A" * 29,
        "con_" + "i" * 29,
        "con_" + "l" * 29,
        "con_" + "o" * 29,
        "con_" + "u" * 29,
        "con-" + "0" * 29,
        "con" + "0" * 29,
        "c0n_" + "0" * 29,
        "con_" + "0" * 28 + "-",
        "con_" + "0" * 29 + "\n",
        " con_" + "0" * 29,
        "con_" + "0" * 29 + " ",
        "con_con_" + "0" * 29,
        "../../etc/passwd",
    ],
)
def test_looks_like_id_rejects(value: str) -> None:
    assert not looks_like_id(value)


@pytest.mark.parametrize(
    "value", ["con_" + "0" * 29, "ab_" + "z" * 29, "abcde_" + "0123456789abcdefghjkmnpqr"]
)
def test_looks_like_id_shape_only(value: str) -> None:
    # The last example is short: make sure the check is about shape, not about new_id.
    assert looks_like_id(value) is (len(value.partition("_")[2]) == 29)


@settings(max_examples=thorough(300))
@given(st.text())
def test_looks_like_id_is_total(value: str) -> None:
    result = looks_like_id(value)
    assert isinstance(result, bool)
    if result:
        prefix, _, body = value.partition("_")
        assert 2 <= len(prefix) <= 5 and prefix.isalpha() and prefix.islower()
        assert len(body) == 29 and set(body) <= set(CROCKFORD)


# --- new_ids: many at once (the schedule planner's batches) ---------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 1000])
def test_new_ids_have_the_shape_of_new_id(count: int) -> None:
    ids = new_ids("chg", count)
    assert len(ids) == count
    for identifier in ids:
        assert looks_like_id(identifier) and identifier.startswith("chg_")
        assert len(identifier) == len("chg_") + BODY_LENGTH


def test_new_ids_are_unique_and_encode_the_time() -> None:
    ids = new_ids("chg", 20_000, now_ms=1_700_000_000_123)
    assert len(set(ids)) == len(ids)
    assert {decode(identifier)[:2] for identifier in ids} == {("chg", 1_700_000_000_123)}


def test_new_ids_carry_96_random_bits() -> None:
    seen_or = 0
    seen_and = (1 << RANDOM_BITS) - 1
    for identifier in new_ids("con", 400, now_ms=42):
        _, millis, random_part = decode(identifier)
        assert millis == 42
        seen_or |= random_part
        seen_and &= random_part
    assert seen_or == (1 << RANDOM_BITS) - 1
    assert seen_and == 0


def test_new_ids_default_to_the_system_clock() -> None:
    before = int(time.time() * 1000)
    ids = new_ids("con", 3)
    after = int(time.time() * 1000)
    for identifier in ids:
        assert before <= decode(identifier)[1] <= after
