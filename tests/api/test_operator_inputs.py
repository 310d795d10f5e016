"""An operator's bad input (price files, durations) and an empty usage window: one-line
errors and nothing stored, never a database error (found by a tester, 2026-12-02)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import Services
from iod.billing import service as billing
from iod.cli import admin
from iod.domain import money
from iod.infra.errors import ValidationFailed
from iod.models import Price
from tests.api.test_money import BASE, LOC, meter, order
from tests.api.test_money import clock as clock  # a fixture
from tests.api.test_money import priced as priced  # a fixture
from tests.conftest import run_jobs

ROW = {"locationId": LOC, "bandwidth": "100 Mbps", "currency": "USD", "hourlyRate": "0.46"}


@pytest.mark.parametrize(
    ("row", "pointer"),
    [
        ({**ROW, "hourlyRate": "99999999999.99"}, "/1/hourlyRate"),  # beyond an int4 of cents
        ({**ROW, "hourlyRate": "21474836.48"}, "/1/hourlyRate"),
        ({**ROW, "monthlyCap": "999999999999"}, "/1/monthlyCap"),
        ({**ROW, "effectiveFrom": "0001-01-01T00:00:00+14:00"}, "/1/effectiveFrom"),
        ({**ROW, "effectiveFrom": "9999-12-31T23:59:59-12:00"}, "/1/effectiveFrom"),
    ],
)
def test_a_price_file_row_beyond_the_columns_is_named(
    services: Services, row: dict[str, Any], pointer: str
) -> None:
    with services.db.read() as session:
        before = session.scalar(select(func.count()).select_from(Price))
    with pytest.raises(ValidationFailed) as refused, services.db.write() as session:
        billing.import_prices(session, services.clock, [ROW, row])
    assert [e.pointer for e in refused.value.errors] == [pointer]
    with services.db.read() as session:  # nothing stored, the good row neither
        assert session.scalar(select(func.count()).select_from(Price)) == before


def test_the_largest_price_is_stored(services: Services) -> None:
    with services.db.write() as session:
        added, _ = billing.import_prices(
            session, services.clock, [{**ROW, "hourlyRate": "21474836.47"}]
        )
    assert added == 1 and money.MAX_MINOR == 2**31 - 1


def test_a_bom_is_not_a_column() -> None:
    rows = billing.read_price_file("p.csv", "\ufefflocationId,bandwidth,currency,hourlyRate\n"
                                   f"{LOC},100 Mbps,USD,0.46\n")  # fmt: skip
    assert rows == [ROW]


@pytest.mark.parametrize("text", ["9999999999d", "1000000d"])
def test_a_huge_duration_is_a_usage_error(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        admin._since(text)
    if text == "9999999999d":
        with pytest.raises(typer.BadParameter):
            admin._duration(text, "--grace")


def test_an_empty_usage_window_has_no_lines(
    api: TestClient, headers: dict[str, str], priced: Services, clock: Any
) -> None:
    order(api, headers)
    run_jobs(priced)
    clock.advance(timedelta(hours=2))
    assert meter(priced) >= 1
    at = "2030-01-31T10:30:00Z"
    usage = api.get(f"{BASE}/usage", params={"from": at, "to": at}, headers=headers).json()
    assert usage["lines"] == [] and usage["from"] == usage["to"]
    whole = api.get(f"{BASE}/usage", params={"from": at, "to": "2030-01-31T10:45:00Z"},
                    headers=headers).json()  # fmt: skip
    assert whole["lines"]  # a window within an hour still has its hour


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("locationId,bandwidth,currency,hourlyRate\nPL1,100 Mbps,USD,0.46,extra\n", "more fields"),
        ("locationId,bandwidth,currency,hourlyRate,currency\n", "each column once: currency"),
        ("locationId,bandwidth,currency,hourlyRate\n", "no rows"),
    ],
)
def test_a_malformed_price_csv_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        billing.read_price_file("p.csv", text)
    assert says in refused.value.detail


@pytest.mark.parametrize("name", ["Acme\x1b[31m", "Acme\x00", "Acme\u202e"])
def test_a_customer_name_follows_the_text_rule(services: Services, name: str) -> None:
    from iod.customers import service as customers

    with pytest.raises(ValidationFailed) as refused, services.db.write() as session:
        customers.create_customer(session, services.clock, name)
    assert [e.pointer for e in refused.value.errors] == ["/name"]


@pytest.mark.parametrize("name", ["ci\x1b[31m", "ci\x00", "ci\u202e", "c" * 256])
def test_a_client_name_follows_the_text_rule(services: Services, name: str) -> None:
    # `iod clients create --name` wrote it as given (the portal's form checks it first): a
    # NUL or a 256th character was a DataError on PostgreSQL, an escape sequence went to the
    # admin tables.
    from iod.customers import service as customers

    with services.db.write() as session:
        customer = customers.create_customer(session, services.clock, "Acme")
    with pytest.raises(ValidationFailed) as refused, services.db.write() as session:
        customers.create_client(
            session, services.clock, customer.id, "read", hasher=services.secret_hasher, name=name
        )
    assert [e.pointer for e in refused.value.errors] == ["/name"]
