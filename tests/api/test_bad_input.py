"""Bad input through the real ASGI app: each gets its documented status as RFC 9457
problem+json (with the request id and JSON Pointers), and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from iod.app import Services
from iod.customers import service as customers
from iod.infra import middleware
from iod.infra.clock import FrozenClock, rfc3339
from iod.infra.ids import new_id
from iod.models import Client
from tests.conftest import nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"  # Denver: 10 Gbps, the default tiers
BOISE = "PL0002290011"  # 1 Gbps, so tiers up to 1 Gbps
LIMIT = 64 * 1024

JSON_HEADERS = {"Content-Type": "application/json"}

# --- helpers ---------------------------------------------------------------------------------


def assert_problem(
    response: httpx.Response, status: int, pointer: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 document with the request id; `pointer` must be the one invalid field."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    request_id = response.headers["x-request-id"]
    assert request_id
    assert body["requestId"] == request_id
    for error in body.get("errors", []):
        assert set(error) >= {"pointer", "detail"}
        assert error["pointer"] == "" or error["pointer"].startswith("/")
        assert isinstance(error["detail"], str) and error["detail"]
    if pointer is not None:
        assert [e["pointer"] for e in body.get("errors", [])] == [pointer], body
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


class QuietLog:
    """Stands in for the middleware's logger where a 500 is expected: rendering the
    traceback costs seconds and says nothing the assertion does not."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []

    def exception(self, event: str, **kw: Any) -> None:
        self.exceptions.append(event)

    def info(self, event: str, **kw: Any) -> None:
        pass


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def bearer(services: Services):  # type: ignore[no-untyped-def]
    """Headers with a valid access token for a new customer.

    The client row is written directly and the token minted by the service's TokenService, so
    these tests skip argon2; the token endpoint itself is covered in test_oauth.py.
    """

    def make(scopes: str = "read write", name: str = "Acme") -> dict[str, str]:
        with services.db.write() as session:
            customer = customers.create_customer(session, services.clock, name)
            client_id = new_id("cli")
            session.add(
                Client(
                    id=client_id,
                    customer_id=customer.id,
                    name="",
                    secret_hash="!not-a-hash",
                    scopes=scopes,
                    enabled=True,
                    created_at=services.clock.now(),
                )
            )
        token = services.tokens.issue(client_id, customer.id, scopes.split())
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def auth(bearer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return bearer()  # type: ignore[no-any-return]


def create(
    api: TestClient, auth: dict[str, str], bandwidth: str = "100 Mbps", location: str = LOC
) -> dict[str, Any]:
    response = api.post(BASE, json={"bandwidth": bandwidth, "locationId": location}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def conn(api: TestClient, auth: dict[str, str], services: Services) -> dict[str, Any]:
    """An active 100 Mbps connection at LOC."""
    body = create(api, auth)
    run_jobs(services)
    return body


@contextmanager
def connection_unchanged(
    api: TestClient, auth: dict[str, str], services: Services, connection_id: str
) -> Iterator[None]:
    before = api.get(f"{BASE}/{connection_id}", headers=auth).json()
    with nothing_written(services):
        yield
    assert api.get(f"{BASE}/{connection_id}", headers=auth).json() == before


# --- bodies -----------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b'{"bandwidth": "100 Mbps",', id="truncated"),
    pytest.param(b"{bandwidth: 100}", id="unquoted"),
    pytest.param(b"{'bandwidth': '100 Mbps'}", id="single-quotes"),
    pytest.param(b'{"bandwidth": "100 Mbps"} trailing', id="trailing"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"{", id="brace"),
]

NOT_AN_OBJECT = [
    pytest.param(b"[]", id="list"),
    pytest.param(b'[{"bandwidth": "100 Mbps", "locationId": "PL0001247634"}]', id="list-of-body"),
    pytest.param(b"null", id="null"),
    pytest.param(b'"100 Mbps"', id="string"),
    pytest.param(b"100", id="number"),
    pytest.param(b"true", id="bool"),
]


@pytest.mark.parametrize("content", MALFORMED)
def test_create_malformed_json_is_400(api, auth, services, content: bytes) -> None:
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    assert_problem(response, 400)


@pytest.mark.parametrize("content", MALFORMED)
def test_update_malformed_json_is_400(api, auth, services, conn, content: bytes) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", content=content, headers={**auth, **JSON_HEADERS}
        )
    assert_problem(response, 400)


UNPARSEABLE = [
    pytest.param(
        b'{"bandwidth": "1 Gbps", "locationId": "PL0001247634", "x": '
        + b"[" * 30_000
        + b"]" * 30_000
        + b"}",
        "it is nested too deeply",
        id="nested-30000-deep",
    ),
    pytest.param(
        b'{"bandwidth": ' + b"1" * 5000 + b', "locationId": "PL0001247634"}',
        "a number in it has too many digits",
        id="5000-digit-number",
    ),
]


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(("content", "reason"), UNPARSEABLE)
def test_json_the_parser_gives_up_on_is_a_documented_400(
    api, auth, services, conn, method: str, content: bytes, reason: str
) -> None:
    url = BASE if method == "POST" else f"{BASE}/{conn['id']}/bandwidth"
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.request(method, url, content=content, headers={**auth, **JSON_HEADERS})
    body = assert_problem(response, 400)
    assert api.get(body["type"]).status_code == 200, body["type"]
    # Like every other body error: the reason, with the pointer to the whole body.
    assert body["errors"] == [{"pointer": "", "detail": f"the body is not valid JSON: {reason}"}]


@pytest.mark.parametrize("content", NOT_AN_OBJECT)
def test_create_body_that_is_not_an_object_is_400(api, auth, services, content: bytes) -> None:
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    assert_problem(response, 400, pointer="")


@pytest.mark.parametrize("content", NOT_AN_OBJECT)
def test_update_body_that_is_not_an_object_is_400(
    api, auth, services, conn, content: bytes
) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", content=content, headers={**auth, **JSON_HEADERS}
        )
    assert_problem(response, 400, pointer="")


def test_empty_bodies_are_400(api, auth, services, conn) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        assert_problem(api.post(BASE, content=b"", headers={**auth, **JSON_HEADERS}), 400)
        assert_problem(api.post(BASE, headers=auth), 400)
        url = f"{BASE}/{conn['id']}/bandwidth"
        assert_problem(api.put(url, content=b"", headers={**auth, **JSON_HEADERS}), 400)
        assert_problem(api.put(url, headers=auth), 400)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param({"bandwidth": 100, "locationId": LOC}, "/bandwidth", id="bandwidth-number"),
        pytest.param({"bandwidth": 1.5, "locationId": LOC}, "/bandwidth", id="bandwidth-float"),
        pytest.param({"bandwidth": True, "locationId": LOC}, "/bandwidth", id="bandwidth-bool"),
        pytest.param({"bandwidth": None, "locationId": LOC}, "/bandwidth", id="bandwidth-null"),
        pytest.param(
            {"bandwidth": ["100 Mbps"], "locationId": LOC}, "/bandwidth", id="bandwidth-list"
        ),
        pytest.param(
            {"bandwidth": {"value": 100, "unit": "Mbps"}, "locationId": LOC},
            "/bandwidth",
            id="bandwidth-object",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": 1247634}, "/locationId", id="location-number"
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": None}, "/locationId", id="location-null"
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": [LOC]}, "/locationId", id="location-list"
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": LOC, "description": 42},
            "/description",
            id="description-number",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": LOC, "description": None},
            "/description",
            id="description-null",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": LOC, "description": ["a"]},
            "/description",
            id="description-list",
        ),
        pytest.param({"locationId": LOC}, "/bandwidth", id="missing-bandwidth"),
        pytest.param({"bandwidth": "100 Mbps"}, "/locationId", id="missing-location"),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": "PL9999999999"},
            "/locationId",
            id="unknown-location",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": LOC.lower()},
            "/locationId",
            id="location-wrong-case",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": ""}, "/locationId", id="location-empty"
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": "P" * 65}, "/locationId", id="location-long"
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": "PL0001247634\u0000"},
            "/locationId",
            id="location-nul",
        ),
        pytest.param(
            {"bandwidth": "100 Mbps", "locationId": "x' OR '1'='1"},
            "/locationId",
            id="location-sql",
        ),
        pytest.param({"bandwidth": "2 Mbps", "locationId": LOC}, "/bandwidth", id="not-a-tier"),
        pytest.param(
            {"bandwidth": "1.5 Gbps", "locationId": LOC}, "/bandwidth", id="not-a-tier-decimal"
        ),
        pytest.param(
            {"bandwidth": "20 Gbps", "locationId": LOC}, "/bandwidth", id="above-capacity"
        ),
        pytest.param(
            {"bandwidth": "10 Gbps", "locationId": BOISE}, "/bandwidth", id="tier-not-at-boise"
        ),
        pytest.param(
            {"bandwidth": "20 Mbps", "locationId": "PL0000381920"},
            "/bandwidth",
            id="tier-not-in-chicago-list",
        ),
    ],
)
def test_create_invalid_field_is_400_with_pointer(
    api, auth, services, body: dict[str, Any], pointer: str
) -> None:
    with nothing_written(services):
        response = api.post(BASE, json=body, headers=auth)
    assert_problem(response, 400, pointer=pointer)


def test_create_with_nothing_reports_each_missing_field(api, auth, services) -> None:
    with nothing_written(services):
        response = api.post(BASE, json={}, headers=auth)
    body = assert_problem(response, 400)
    assert sorted(e["pointer"] for e in body["errors"]) == ["/bandwidth", "/locationId"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param({}, "/bandwidth", id="missing-bandwidth"),
        pytest.param({"effectiveDate": "2030-06-01T00:00:00Z"}, "/bandwidth", id="only-date"),
        pytest.param({"bandwidth": 500}, "/bandwidth", id="bandwidth-number"),
        pytest.param({"bandwidth": None}, "/bandwidth", id="bandwidth-null"),
        pytest.param({"bandwidth": ["1 Gbps"]}, "/bandwidth", id="bandwidth-list"),
        pytest.param({"bandwidth": "2 Mbps"}, "/bandwidth", id="not-a-tier"),
        pytest.param({"bandwidth": "20 Gbps"}, "/bandwidth", id="above-capacity"),
    ],
)
def test_update_invalid_field_is_400_with_pointer(
    api, auth, services, conn, body: dict[str, Any], pointer: str
) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(f"{BASE}/{conn['id']}/bandwidth", json=body, headers=auth)
    assert_problem(response, 400, pointer=pointer)


def test_update_to_a_tier_boise_does_not_offer_is_400(api, auth, services) -> None:
    boise = create(api, auth, "1 Gbps", BOISE)
    with connection_unchanged(api, auth, services, boise["id"]):
        response = api.put(
            f"{BASE}/{boise['id']}/bandwidth", json={"bandwidth": "10 Gbps"}, headers=auth
        )
    assert_problem(response, 400, pointer="/bandwidth")


# --- bandwidth strings ------------------------------------------------------------------------

BAD_BANDWIDTHS = [
    "fast",
    "0 Mbps",
    "0Gbps",
    "0.0 Gbps",
    "-1Gbps",
    "-100 Mbps",
    "+100 Mbps",
    "1e9 Mbps",
    "1e2 Mbps",
    "100 Mbit",
    "100 Mb/s",
    "100",
    "Mbps",
    "",
    " ",
    "100  Mbps",
    "100 Kbps",
    "100 Tbps",
    "0.5 Mbps",
    "1.0005 Gbps",
    "1,5 Gbps",
    "0x64 Mbps",
    "100\u0000 Mbps",
    "9999999999 Mbps",
    "999999999 Gbps",
    "NaN Mbps",
    "Infinity Gbps",
    "100 Mbps; DROP TABLE connections",
]


def _bad_bandwidth_id(value: str) -> str:
    return repr(value)


@pytest.mark.parametrize("bandwidth", BAD_BANDWIDTHS, ids=_bad_bandwidth_id)
def test_create_with_bad_bandwidth_is_400(api, auth, services, bandwidth: str) -> None:
    with nothing_written(services):
        response = api.post(BASE, json={"bandwidth": bandwidth, "locationId": LOC}, headers=auth)
    assert_problem(response, 400, pointer="/bandwidth")


@pytest.mark.parametrize("bandwidth", BAD_BANDWIDTHS, ids=_bad_bandwidth_id)
def test_update_with_bad_bandwidth_is_400(api, auth, services, conn, bandwidth: str) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": bandwidth}, headers=auth
        )
    assert_problem(response, 400, pointer="/bandwidth")


NON_ASCII_DIGITS = [
    pytest.param("\uff11\uff10\uff10 Mbps", id="full-width"),
    pytest.param("\u0661\u0660\u0660 Mbps", id="arabic-indic"),
    pytest.param("\U0001d7cf\U0001d7ce\U0001d7ce Mbps", id="mathematical-bold"),
]


@pytest.mark.parametrize("bandwidth", NON_ASCII_DIGITS)
def test_create_with_non_ascii_digits_is_400(api, auth, services, bandwidth: str) -> None:
    with nothing_written(services):
        response = api.post(BASE, json={"bandwidth": bandwidth, "locationId": LOC}, headers=auth)
    assert_problem(response, 400, pointer="/bandwidth")


@pytest.mark.parametrize("bandwidth", NON_ASCII_DIGITS)
def test_update_with_non_ascii_digits_is_400(api, auth, services, conn, bandwidth: str) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": bandwidth}, headers=auth
        )
    assert_problem(response, 400, pointer="/bandwidth")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("100mbps", "100 Mbps"),
        ("1GBPS", "1 Gbps"),
        ("1000 Mbps", "1 Gbps"),
        ("0.5 Gbps", "500 Mbps"),
    ],
)
def test_accepted_spellings_are_canonicalised(api, auth, given: str, canonical: str) -> None:
    assert create(api, auth, given)["bandwidth"] == canonical


# --- effectiveDate ----------------------------------------------------------------------------

BAD_DATES = [
    pytest.param("2030-01-01T10:00:00", id="no-offset"),
    pytest.param("2030-01-01 10:00:00", id="no-offset-space"),
    pytest.param("tomorrow", id="word"),
    pytest.param("now", id="now"),
    pytest.param("2030-13-01T00:00:00Z", id="month-13"),
    pytest.param("2030-02-30T00:00:00Z", id="feb-30"),
    pytest.param("2031-02-29T00:00:00Z", id="not-a-leap-year"),
    pytest.param("2030-01-01T24:00:00Z", id="hour-24"),
    pytest.param("2030-01-01T10:60:00Z", id="minute-60"),
    pytest.param("2030-01-01T10:00:00+24:00", id="offset-24h"),
    pytest.param("2030-01-01", id="date-only"),
    pytest.param("10:00:00Z", id="time-only"),
    pytest.param("20300101T100000Z", id="basic-format"),
    pytest.param("2030-W01-1T10:00:00Z", id="week-date"),
    pytest.param("2030-01-01T10:00Z", id="no-seconds"),
    pytest.param("2030-01-01T10:00:00 Z", id="space-before-z"),
    pytest.param("2030-01-01T10:00:00+0200", id="offset-without-colon"),
    pytest.param("Tue, 01 Jan 2030 10:00:00 GMT", id="http-date"),
    pytest.param("", id="empty"),
    pytest.param(1893492000, id="epoch-number"),
    pytest.param(1893492000.5, id="epoch-float"),
    pytest.param(None, id="null"),
    pytest.param(True, id="bool"),
    pytest.param({"date": "2030-01-01T10:00:00Z"}, id="object"),
    pytest.param(["2030-01-01T10:00:00Z"], id="list"),
    pytest.param("9999-12-31T23:59:59Z", id="year-9999"),
    pytest.param("\uff12\uff10\uff13\uff10-06-01T10:00:00Z", id="full-width-year"),
    pytest.param("9999-12-31T23:59:59-01:00", id="year-9999-overflows-utc"),
]


@pytest.mark.parametrize("effective", BAD_DATES)
def test_update_with_bad_effective_date_is_400(api, auth, services, conn, effective: Any) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth",
            json={"bandwidth": "500 Mbps", "effectiveDate": effective},
            headers=auth,
        )
    assert_problem(response, 400, pointer="/effectiveDate")


@pytest.mark.parametrize(
    "ahead",
    [
        pytest.param(timedelta(days=365, seconds=1), id="a-year-and-a-second"),
        pytest.param(timedelta(days=366), id="366-days"),
        pytest.param(timedelta(days=3650), id="ten-years"),
    ],
)
def test_update_more_than_a_year_ahead_is_400(
    api, auth, services, conn, clock: FrozenClock, ahead: timedelta
) -> None:
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth",
            json={"bandwidth": "500 Mbps", "effectiveDate": rfc3339(clock.now() + ahead)},
            headers=auth,
        )
    assert_problem(response, 400, pointer="/effectiveDate")


def test_update_more_than_a_year_ahead_in_another_offset_is_400(
    api, auth, services, conn, clock: FrozenClock
) -> None:
    # 366 days ahead in UTC, written with a -10:00 offset (so the local date looks earlier).
    when = (clock.now() + timedelta(days=366)).astimezone(timezone(timedelta(hours=-10)))
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth",
            json={"bandwidth": "500 Mbps", "effectiveDate": when.isoformat()},
            headers=auth,
        )
    assert_problem(response, 400, pointer="/effectiveDate")


@pytest.mark.parametrize(
    "effective",
    [
        pytest.param("2030-06-01T10:00:00Z", id="z"),
        pytest.param("2030-06-01t10:00:00z", id="lowercase"),
        pytest.param("2030-06-01T10:00:00+02:00", id="offset"),
        pytest.param("2030-06-01T10:00:00.123456789-05:30", id="nanoseconds"),
        pytest.param("2030-06-01 10:00:00Z", id="space"),
    ],
)
def test_valid_rfc3339_dates_are_accepted(api, auth, conn, effective: str) -> None:
    response = api.put(
        f"{BASE}/{conn['id']}/bandwidth",
        json={"bandwidth": "500 Mbps", "effectiveDate": effective},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["change"]["status"] == "scheduled"


def test_exactly_a_year_ahead_is_accepted(api, auth, conn, clock: FrozenClock) -> None:
    when = rfc3339(clock.now() + timedelta(days=365))
    response = api.put(
        f"{BASE}/{conn['id']}/bandwidth",
        json={"bandwidth": "500 Mbps", "effectiveDate": when},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["change"]["effectiveDate"] == when


# --- size and media type ----------------------------------------------------------------------


def _padded(size: int, **fields: Any) -> bytes:
    """A JSON object of exactly `size` bytes, padded with whitespace (unknown fields are
    refused)."""
    data = raw(fields)
    data = data[:-1] + b" " * (size - len(data)) + data[-1:]
    assert len(data) == size
    return data


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT * 4])
def test_create_body_over_64_kib_is_413(api, auth, services, size: int) -> None:
    content = _padded(size, bandwidth="100 Mbps", locationId=LOC)
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    assert response.request.headers["content-length"] == str(size)
    assert_problem(response, 413)


def test_update_body_over_64_kib_is_413(api, auth, services, conn) -> None:
    content = _padded(LIMIT + 1, bandwidth="1 Gbps")
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", content=content, headers={**auth, **JSON_HEADERS}
        )
    assert_problem(response, 413)


def test_body_of_exactly_64_kib_is_not_too_large(api, auth, services) -> None:
    content = _padded(LIMIT, bandwidth="100 Mbps", locationId=LOC)
    response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    assert response.status_code == 201, response.text


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_chunked_body_over_64_kib_is_413(api, auth, services, conn, method: str) -> None:
    fields = {"bandwidth": "1 Gbps", "locationId": LOC}
    content = _padded(LIMIT + 100, **fields)
    url = BASE if method == "POST" else f"{BASE}/{conn['id']}/bandwidth"
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.request(
            method, url, content=_chunks(content), headers={**auth, **JSON_HEADERS}
        )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413)


def test_small_chunked_body_is_accepted(api, auth) -> None:
    content = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    response = api.post(BASE, content=_chunks(content, 7), headers={**auth, **JSON_HEADERS})
    assert response.status_code == 201, response.text


def test_413_does_not_need_a_token(api, services) -> None:
    content = _padded(LIMIT + 1, bandwidth="100 Mbps", locationId=LOC)
    with nothing_written(services):
        assert_problem(api.post(BASE, content=content, headers=JSON_HEADERS), 413)


@pytest.mark.parametrize(
    "description",
    [
        pytest.param("x" * 256, id="256-chars"),
        pytest.param("é" * 256, id="256-accented"),
        pytest.param("\U0001f600" * 256, id="256-emoji"),
        pytest.param("x" * 60_000, id="60k-chars"),
        pytest.param("office\u0000uplink", id="nul"),
        pytest.param("\u0000", id="only-nul"),
        pytest.param("bell\u0007", id="bel"),
        pytest.param("escape\u001b[31m", id="ansi-escape"),
        pytest.param("del\u007f", id="del"),
        pytest.param("invoice \u202efdp.exe", id="right-to-left-override"),
        pytest.param("zero\u200bwidth", id="zero-width-space"),
        pytest.param("\u2066isolate\u2069", id="isolates"),
        pytest.param("\u2067rtl\u2069", id="rtl-isolate"),
        pytest.param("soft\u00adhyphen", id="soft-hyphen"),
        pytest.param("\ufeffbom", id="byte-order-mark"),
        pytest.param("tag\U000e0041", id="tag-character"),
    ],
)
def test_bad_description_is_400(api, auth, services, description: str) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "description": description}
    with nothing_written(services):
        response = api.post(BASE, json=body, headers=auth)
    assert_problem(response, 400, pointer="/description")


def test_invisible_format_character_is_named(api, auth, services) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "description": "a\u202eb"}
    with nothing_written(services):
        response = api.post(BASE, json=body, headers=auth)
    got = assert_problem(response, 400, pointer="/description")
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in got["errors"][0]["detail"]


@pytest.mark.parametrize(
    "description",
    [
        pytest.param("x" * 255, id="255-chars"),
        pytest.param("é" * 255, id="255-accented"),
        pytest.param("\U0001f600" * 255, id="255-emoji"),
        pytest.param("line one\nline two\ttabbed\r", id="whitespace"),
        pytest.param("", id="empty"),
        pytest.param("שלום office 東京 Ωmega", id="other-scripts"),
    ],
)
def test_description_up_to_255_characters_is_kept(api, auth, description: str) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "description": description}
    response = api.post(BASE, json=body, headers=auth)
    assert response.status_code == 201, response.text
    got = api.get(f"{BASE}/{response.json()['id']}", headers=auth).json()
    assert got.get("description", "") == description


@pytest.mark.parametrize(
    ("field", "pointer"),
    [("description", "/description"), ("locationId", "/locationId")],
)
def test_lone_surrogate_is_400(api, auth, services, monkeypatch, field: str, pointer: str) -> None:
    monkeypatch.setattr(middleware, "log", QuietLog())
    fields = {"bandwidth": "100 Mbps", "locationId": LOC, field: "PL\\ud800"}
    content = "{" + ", ".join(f'"{k}": "{v}"' for k, v in fields.items()) + "}"
    with nothing_written(services):
        response = api.post(BASE, content=content.encode(), headers={**auth, **JSON_HEADERS})
    assert_problem(response, 400, pointer=pointer)


MEDIA_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
    "application/jsonx",
]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_create_with_wrong_content_type_is_415(api, auth, services, media_type: str) -> None:
    content = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, "Content-Type": media_type})
    assert_problem(response, 415)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_update_with_wrong_content_type_is_415(api, auth, services, conn, media_type: str) -> None:
    content = raw({"bandwidth": "1 Gbps"})
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth",
            content=content,
            headers={**auth, "Content-Type": media_type},
        )
    assert_problem(response, 415)


def test_form_encoded_body_is_415(api, auth, services) -> None:
    with nothing_written(services):
        response = api.post(BASE, data={"bandwidth": "100 Mbps", "locationId": LOC}, headers=auth)
    assert_problem(response, 415)


def test_body_without_content_type_is_415(api, auth, services) -> None:
    content = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    with nothing_written(services):
        response = api.post(BASE, content=content, headers=auth)
    assert "content-type" not in response.request.headers
    assert_problem(response, 415)
    assert response.json()["detail"] == (
        "send the body as application/json, with a Content-Type header (none was sent)"
    )


@pytest.mark.parametrize(
    "media_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
def test_json_media_types_are_accepted(api, auth, media_type: str) -> None:
    content = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    response = api.post(BASE, content=content, headers={**auth, "Content-Type": media_type})
    assert response.status_code == 201, response.text


SCHEDULE = {
    "timeZone": "UTC",
    "defaultBandwidth": "100 Mbps",
    "rules": [
        {"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00", "recurrence": "FREQ=DAILY"}
    ],
}


@pytest.mark.parametrize(
    "media_type",
    ["application/json-patch+json", "application/vnd.x+json", "text/plain"],
)
def test_patch_takes_only_a_merge_patch(api, auth, services, conn, media_type: str) -> None:
    """PATCH bodies are JSON merge patches (RFC 7396): a JSON Patch (RFC 6902), whose
    operations would be read as fields, is 415 like any other type, with Accept-Patch."""
    made = api.post(f"{BASE}/{conn['id']}/schedules", json=SCHEDULE, headers=auth)
    assert made.status_code == 201, made.text
    url = f"{BASE}/{conn['id']}/schedules/{made.json()['id']}"
    with nothing_written(services):
        response = api.patch(
            url, content=raw({"paused": True}), headers={**auth, "Content-Type": media_type}
        )
    body = assert_problem(response, 415)
    assert response.headers["Accept-Patch"] == "application/merge-patch+json, application/json"
    if media_type == "application/json-patch+json":
        assert "JSON Patch" in body["detail"]
    for accepted in ("application/merge-patch+json", "application/json; charset=utf-8"):
        done = api.patch(
            url, content=raw({"paused": True}), headers={**auth, "Content-Type": accepted}
        )
        assert done.status_code == 200, done.text


def test_a_json_patch_body_is_415_on_any_method(api, auth, services) -> None:
    content = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    with nothing_written(services):
        response = api.post(
            BASE, content=content, headers={**auth, "Content-Type": "application/json-patch+json"}
        )
    assert_problem(response, 415)


# --- fields -----------------------------------------------------------------------------------


def test_unknown_fields_are_400_each_named(api, auth, services) -> None:
    body = {
        "bandwidth": "100 Mbps",
        "locationId": LOC,
        "colour": "blue",
        "nested": {"a": [1, 2, {"b": None}]},
        "bandwidthMbps": 5000,
    }
    with nothing_written(services):
        response = api.post(BASE, json=body, headers=auth)
    got = assert_problem(response, 400)
    errors = {e["pointer"]: e["detail"] for e in got["errors"]}
    assert set(errors) == {"/colour", "/nested", "/bandwidthMbps"}
    assert errors["/bandwidthMbps"] == "unknown field; did you mean `bandwidth`?"
    assert errors["/colour"].startswith("unknown field; the known fields are `bandwidth`")


def test_a_misspelt_effective_date_is_400_naming_the_right_one(api, auth, services, conn) -> None:
    # Before, the misspelling was ignored and the change applied now.
    body = {"bandwidth": "1 Gbps", "effectivedate": "2030-01-01T09:00:00Z"}
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(f"{BASE}/{conn['id']}/bandwidth", json=body, headers=auth)
    got = assert_problem(response, 400, pointer="/effectivedate")
    assert got["errors"][0]["detail"] == "unknown field; did you mean `effectiveDate`?"
    assert "/effectivedate: unknown field; did you mean `effectiveDate`?" in got["detail"]


def test_location_on_create_names_location_id(api, auth, services) -> None:
    with nothing_written(services):
        response = api.post(BASE, json={"bandwidth": "100 Mbps", "location": LOC}, headers=auth)
    got = assert_problem(response, 400)
    errors = {e["pointer"]: e["detail"] for e in got["errors"]}
    assert "`locationId`" in errors["/location"] and "request's field" in errors["/location"]
    assert "/locationId" in errors  # and the required one is missing


@pytest.mark.parametrize(
    ("content", "pointer"),
    [
        pytest.param(
            b'{"bandwidth": "100 Mbps", "locationId": "PL0001247634", "bandwidth": "10 Gbps"}',
            "/bandwidth",
            id="top-level",
        ),
        pytest.param(
            b'{"bandwidth": "100 Mbps", "locationId": "PL0001247634", "locationId": "x"}',
            "/locationId",
            id="location",
        ),
        pytest.param(
            b'{"bandwidth": "100 Mbps", "locationId": "PL0001247634", "x": {"a/b": 1, "a/b": 2}}',
            "/x/a~1b",
            id="nested-escaped",
        ),
    ],
)
def test_duplicate_keys_are_400_with_a_pointer(
    api, auth, services, content: bytes, pointer: str
) -> None:
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    got = assert_problem(response, 400)
    assert pointer in [e["pointer"] for e in got["errors"]], got
    duplicate = next(e for e in got["errors"] if e["pointer"] == pointer)
    assert "duplicate key" in duplicate["detail"]


def test_duplicate_keys_on_update_are_400(api, auth, services, conn) -> None:
    content = b'{"bandwidth": "1 Gbps", "bandwidth": "100 Mbps"}'
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(
            f"{BASE}/{conn['id']}/bandwidth", content=content, headers={**auth, **JSON_HEADERS}
        )
    assert_problem(response, 400, pointer="/bandwidth")


def test_duplicate_keys_without_a_token_are_401_first(api, services) -> None:
    content = b'{"bandwidth": "1 Gbps", "bandwidth": "100 Mbps", "locationId": "PL0001247634"}'
    with nothing_written(services):
        response = api.post(BASE, content=content, headers=JSON_HEADERS)
    assert response.status_code == 401, response.text


def test_server_owned_fields_cannot_be_set_on_create(api, auth, services) -> None:
    chosen = new_id("con")
    body = {
        "bandwidth": "100 Mbps",
        "locationId": LOC,
        "id": chosen,
        "status": "active",
        "createdAt": "2000-01-01T00:00:00Z",
        "updatedAt": "2000-01-01T00:00:00Z",
        "location": "PL0000381920",
        "customerId": "cus_someone_else",
        "pendingBandwidthChanges": [
            {"id": "chg_x", "bandwidth": "1 Gbps", "effectiveDate": "2030-01-01T00:00:00Z"}
        ],
    }
    with nothing_written(services):
        response = api.post(BASE, json=body, headers=auth)
    got = assert_problem(response, 400)
    assert {e["pointer"] for e in got["errors"]} == {f"/{k}" for k in body} - {
        "/bandwidth",
        "/locationId",
    }
    assert api.get(f"{BASE}/{chosen}", headers=auth).status_code == 404


def test_server_owned_fields_cannot_be_set_on_update(api, auth, services, conn) -> None:
    body = {
        "bandwidth": "1 Gbps",
        "id": new_id("con"),
        "status": "terminated",
        "location": BOISE,
        "createdAt": "2000-01-01T00:00:00Z",
        "change": {"status": "applied"},
    }
    with connection_unchanged(api, auth, services, conn["id"]):
        response = api.put(f"{BASE}/{conn['id']}/bandwidth", json=body, headers=auth)
    got = assert_problem(response, 400)
    assert {e["pointer"] for e in got["errors"]} == {f"/{k}" for k in body} - {"/bandwidth"}


# --- tenancy ----------------------------------------------------------------------------------


def test_another_customers_connection_is_404(api, auth, bearer, services, conn) -> None:
    other = bearer(name="Other")
    with connection_unchanged(api, auth, services, conn["id"]):
        got = api.get(f"{BASE}/{conn['id']}", headers=other)
        put = api.put(f"{BASE}/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=other)
    body = assert_problem(got, 404)
    assert assert_problem(put, 404)["type"] == body["type"]
    # The same answer as for an id that does not exist: nothing reveals that it does.
    missing = api.get(f"{BASE}/{new_id('con')}", headers=other)
    assert assert_problem(missing, 404)["title"] == body["title"]


def test_list_shows_only_own_connections(api, auth, bearer) -> None:
    other = bearer(name="Other")
    mine = {create(api, auth)["id"], create(api, auth, "200 Mbps")["id"]}
    theirs = {create(api, other, "50 Mbps")["id"]}
    listed = api.get(BASE, headers=auth)
    assert listed.status_code == 200
    assert {c["id"] for c in listed.json()["connections"]} == mine
    assert {c["id"] for c in api.get(BASE, headers=other).json()["connections"]} == theirs
    assert api.get(BASE, headers=bearer(name="Third")).json() == {"connections": []}


UNKNOWN_IDS = [
    pytest.param("nope", id="word"),
    pytest.param("con_" + "0" * 29, id="zeros"),
    pytest.param("con_" + "u" * 29, id="letter-not-in-alphabet"),
    pytest.param("CON_038GRGY41K4SFGGNWTBPZ53JZYWD0", id="upper-case"),
    pytest.param("chg_038grgy428bznbe7b33j2nm20jmcj", id="change-id"),
    pytest.param("x" * 2000, id="very-long"),
    pytest.param("%00", id="nul"),
    pytest.param("%E2%82%AC", id="euro"),
    pytest.param("%ED%A0%80", id="surrogate-bytes"),
    pytest.param("%FF", id="invalid-utf8"),
    pytest.param("' OR '1'='1", id="sql"),
    pytest.param("..", id="dot-dot"),
]


@pytest.mark.parametrize("connection_id", UNKNOWN_IDS)
def test_unknown_or_garbage_id_is_404(api, auth, services, conn, connection_id: str) -> None:
    assert_problem(api.get(f"{BASE}/{connection_id}", headers=auth), 404)
    with nothing_written(services):
        put = api.put(
            f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=auth
        )
    assert_problem(put, 404)


def test_unknown_real_looking_id_is_404(api, auth, services, conn) -> None:
    unknown = new_id("con")
    assert_problem(api.get(f"{BASE}/{unknown}", headers=auth), 404)
    with nothing_written(services):
        put = api.put(f"{BASE}/{unknown}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=auth)
    assert_problem(put, 404)


# --- request ids, unknown paths and methods --------------------------------------------------


def test_unknown_path_is_404_problem(api) -> None:
    for path in ("/nope", "/internet-on-demand", "/internet-on-demand/connection", "/%00"):
        assert_problem(api.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", BASE, {"GET", "POST"}),
        ("PATCH", BASE, {"GET", "POST"}),
        ("PUT", BASE, {"GET", "POST"}),
        ("DELETE", f"{BASE}/con_x", {"GET"}),
        ("POST", f"{BASE}/con_x", {"GET"}),
        ("GET", f"{BASE}/con_x/bandwidth", {"PUT"}),
        ("POST", f"{BASE}/con_x/bandwidth", {"PUT"}),
        ("GET", "/oauth2/token", {"POST"}),
        ("POST", "/.well-known/jwks.json", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    api, auth, services, method: str, path: str, allowed: set[str]
) -> None:
    with nothing_written(services):
        response = api.request(method, path, headers=auth, json={"bandwidth": "1 Gbps"})
    assert_problem(response, 405)
    allow = {m.strip() for m in response.headers["allow"].split(",") if m.strip()}
    assert allowed <= allow <= allowed | {"HEAD", "OPTIONS"}


def _requests(api: TestClient, conn_id: str, auth: dict[str, str], rid: dict[str, str]) -> list:
    big = _padded(LIMIT + 1, bandwidth="1 Gbps")
    return [
        api.get("/nope", headers=rid),
        api.delete(BASE, headers=rid),
        api.get(BASE, headers=rid),
        api.get(BASE, headers={**auth, **rid}),
        api.get(f"{BASE}/{conn_id}", headers={**auth, **rid}),
        api.get(f"{BASE}/{new_id('con')}", headers={**auth, **rid}),
        api.post(BASE, json={}, headers={**auth, **rid}),
        api.post(BASE, content=b"x", headers={**auth, **rid, "Content-Type": "text/plain"}),
        api.put(
            f"{BASE}/{conn_id}/bandwidth", content=big, headers={**auth, **rid, **JSON_HEADERS}
        ),
        api.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=rid),
        api.post("/oauth2/token", json={}, headers=rid),
        api.get("/.well-known/jwks.json", headers=rid),
        api.get("/.well-known/oauth-authorization-server", headers=rid),
        api.get("/problems/not-found", headers=rid),
    ]


def test_every_response_has_a_request_id(api, auth, conn) -> None:
    seen = set()
    responses = _requests(api, conn["id"], auth, {})
    for response in responses:
        request_id = response.headers.get("x-request-id")
        assert request_id, (response.request.method, response.request.url)
        seen.add(request_id)
        if response.headers["content-type"] == "application/problem+json":
            assert response.json()["requestId"] == request_id
    assert len(seen) == len(responses), "each request gets its own id"


@pytest.mark.parametrize("incoming", ["abc-123", "7f3e2b1c9d8a4e6f", "req.1:2_3", "x" * 128])
def test_incoming_request_id_is_logged_beside_ours_never_instead(
    api, auth, conn, incoming: str
) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        responses = _requests(api, conn["id"], auth, {"X-Request-ID": incoming})
    ours = set()
    for response in responses:
        request_id = response.headers["x-request-id"]
        assert request_id != incoming and len(request_id) == 32, response.request.url
        if response.headers["content-type"] == "application/problem+json":
            assert response.json()["requestId"] == request_id
        ours.add(request_id)
    access = [e for e in logs if e["event"] == "request"]
    assert len(access) == len(responses)
    assert {(e["request_id"], e["client_request_id"]) for e in access} == {
        (request_id, incoming) for request_id in ours
    }


@pytest.mark.parametrize(
    "incoming", ["has space", "x" * 129, "a\tb", "<script>", "é", "a/b"], ids=repr
)
def test_unsafe_incoming_request_id_is_replaced(api, incoming: str) -> None:
    response = api.get("/nope", headers={"X-Request-ID": incoming.encode("utf-8")})
    request_id = response.headers["x-request-id"]
    assert request_id and request_id != incoming
    assert response.json()["requestId"] == request_id


def test_server_error_still_has_request_id_and_problem(api, auth, services, monkeypatch) -> None:
    from iod.connections import service

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database exploded")

    monkeypatch.setattr(service, "list_connections", boom)
    log = QuietLog()
    monkeypatch.setattr(middleware, "log", log)
    response = api.get(BASE, headers={**auth, "X-Request-ID": "trace-500"})
    body = assert_problem(response, 500)
    assert response.headers["x-request-id"] != "trace-500"
    assert "exploded" not in response.text
    assert body["requestId"] == response.headers["x-request-id"]
    assert log.exceptions == ["request.failed"]


def test_problem_types_resolve(api, auth) -> None:
    responses = [
        api.get("/nope"),
        api.get(BASE),
        api.post(BASE, json={}, headers=auth),
        api.post(BASE, content=b"x", headers={**auth, "Content-Type": "text/plain"}),
        api.get(f"{BASE}/{new_id('con')}", headers=auth),
        api.delete(BASE),
    ]
    for response in responses:
        problem_type = response.json()["type"]
        described = api.get(problem_type)
        assert described.status_code == 200, problem_type
        assert described.json()["title"] == response.json()["title"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"bandwidth": "100 Mbps", "locationId": "\xff\xfe"}', id="in-a-string"),
        pytest.param(b'{"bandwidth": "100 Mbps", "description": "caf\xe9"}', id="latin-1"),
    ],
)
def test_a_body_that_is_not_utf8_says_so_with_a_pointer(
    api, auth, services, content: bytes
) -> None:
    with nothing_written(services):
        response = api.post(BASE, content=content, headers={**auth, **JSON_HEADERS})
    body = assert_problem(response, 400)
    assert body["type"] == "/problems/validation-error"
    assert body["errors"] == [
        {"pointer": "", "detail": "the body is not valid JSON: it is not UTF-8"}
    ]


def test_a_repeated_authorization_or_content_type_line_is_a_400(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """Each holds one value: with two, a layer reading the first and one reading the last
    would disagree about what the client meant (content type, or whose token)."""
    body = raw({"bandwidth": "100 Mbps", "locationId": LOC})
    token = headers["Authorization"]
    plain = [(k, v) for k, v in headers.items() if k.lower() not in ("authorization",)]
    cases = [
        ([*plain, ("Authorization", token), ("Authorization", token)], "/header/Authorization"),
        ([*plain, ("Authorization", token), ("Content-Type", "application/json"),
          ("Content-Type", "text/plain")], "/header/Content-Type"),
    ]  # fmt: skip
    for lines, pointer in cases:
        with nothing_written(services):
            assert_problem(api.post(BASE, content=body, headers=lines), 400, pointer)
        assert_problem(api.get(BASE, headers=lines), 400, pointer)
    single = [*plain, ("Authorization", token), ("Content-Type", "application/json")]
    assert api.post(BASE, content=body, headers=single).status_code == 201


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_body_of_thousands_of_errors_gets_a_small_answer(
    api, auth, services, conn, method
) -> None:
    """6,000 unknown keys in 64 KB: the first 20 errors are listed, the rest counted (each
    names the known fields: listing them all was a 1.5 MB answer)."""
    body = {"bandwidth": "100 Mbps", **{f"k{n}": 1 for n in range(6000)}}
    path = BASE if method == "POST" else f"{BASE}/{conn['id']}/bandwidth"
    with nothing_written(services):
        r = api.request(method, path, json=body, headers=auth)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert len(problem["errors"]) == 20
    assert "/k0" in [e["pointer"] for e in problem["errors"]]
    assert "more errors (the first 20 listed)" in problem["detail"]
    assert len(r.content) < 20_000


@pytest.mark.parametrize(
    "path",
    [
        "/{long}",
        "/{conn}/bandwidth-changes/{long}",
        "/{long}/bandwidth-changes",
        "/{conn}/bandwidth-changes?cursor={long}",
    ],
)
def test_a_long_id_is_not_echoed_whole(api, auth, conn, path: str) -> None:
    """An id of 3,000 characters (none is longer than a few dozen) is quoted in the
    problem's detail by its first 64 characters and an ellipsis."""
    long = "con_" + "a" * 3000
    r = api.get(BASE + path.format(long=long, conn=conn["id"]), headers=auth)
    assert r.status_code in (400, 404), r.text
    detail = r.json()["detail"]
    assert len(detail) < 300, detail
    assert "a" * 60 + "…'" in detail


def test_shown_quotes_short_values_as_repr_and_clips_long_ones() -> None:
    from iod.infra.errors import shown

    assert shown("con_1") == "'con_1'"
    assert shown("x" * 64) == repr("x" * 64)
    assert shown("x" * 65) == repr("x" * 64 + "…")
    assert shown("it's", 2) == repr("it…")
