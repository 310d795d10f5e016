"""Money (issue 15): catalog, quotes, orders with a quote, metering, usage, statements, on
both databases, with a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from iod.app import Services
from iod.billing import demo, metering
from iod.billing import service as billing
from iod.billing import statements as statement_docs
from iod.infra.clock import FrozenClock
from iod.locations import repository as locations_repo
from iod.models import Event, Price, Quote, Statement, UsageHour, UsageLine
from tests.conftest import get_token, nothing_written, run_jobs

BASE = "/internet-on-demand"
LOC = "PL0001247634"
START = datetime(2030, 1, 31, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def priced(services: Services, clock: FrozenClock) -> Services:
    with services.db.write() as session:
        places = [(loc.id, list(loc.tiers_mbps)) for loc in locations_repo.list_all(session)]
        billing.import_prices(session, clock, demo.demo_prices(places))
    return services


def meter(services: Services, fraction: Decimal = Decimal(1)) -> int:
    with services.db.write() as session:
        return metering.rate_due(
            session, services.clock.now(), fraction=fraction, settle_seconds=60, batch=2,
            budget=10_000,
        )  # fmt: skip


def order(api: TestClient, headers: dict[str, str], **extra: Any) -> Any:
    body = {"bandwidth": "100 Mbps", "locationId": LOC, **extra}
    return api.post(f"{BASE}/connections", json=body, headers=headers)


def quote(api: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return api.post(f"{BASE}/quotes", json=body, headers=headers)


def test_catalog_shows_tiers_capacity_and_prices(api, headers, priced) -> None:
    answer = api.get(f"{BASE}/locations", headers=headers)
    assert answer.status_code == 200
    places = {loc["id"]: loc for loc in answer.json()["locations"]}
    denver = places[LOC]
    tiers = {t["bandwidth"]: t for t in denver["tiers"]}
    assert tiers["100 Mbps"]["price"]["hourlyRate"] == "0.46"
    assert tiers["100 Mbps"]["price"]["monthlyCap"] == "331.20"
    assert tiers["100 Mbps"]["orderable"] is True
    assert denver["availableCapacity"] == "10 Gbps"
    # The small site (100 Mbps port): once 100 Mbps are committed nothing fits any more.
    small = "PL0000774102"
    assert order(api, headers, locationId=small).status_code == 201
    one = api.get(f"{BASE}/locations/{small}", headers=headers).json()
    assert one["availableCapacity"] == "0 Mbps"
    assert not any(t["orderable"] for t in one["tiers"])
    assert api.get(f"{BASE}/locations/nowhere", headers=headers).status_code == 404


def test_quote_then_order_with_it(api, headers, priced, tenant) -> None:
    answer = quote(api, headers, locationId=LOC, bandwidth="100mbps")
    assert answer.status_code == 201, answer.text
    q = answer.json()
    assert (q["hourlyRate"], q["estimatedDailyCost"], q["estimatedMonthlyCost"]) == (
        "0.46", "11.04", "331.20",
    )  # fmt: skip
    assert q["currency"] == "USD" and q["bandwidth"] == "100 Mbps"
    assert datetime.fromisoformat(q["expiresAt"]) == START + timedelta(minutes=15)
    assert api.get(f"{BASE}/quotes/{q['id']}", headers=headers).json()["id"] == q["id"]
    made = order(api, headers, quoteId=q["id"])
    assert made.status_code == 201, made.text
    used = api.get(f"{BASE}/quotes/{q['id']}", headers=headers).json()
    assert used["usedAt"]
    # Used already: a clear 409, nothing stored.
    with nothing_written(priced):
        again = order(api, headers, quoteId=q["id"])
    assert again.status_code == 409 and "already used" in again.json()["detail"]
    with priced.db.read() as session:
        names = session.scalars(select(Event.name).where(Event.name == "quote.created")).all()
    assert names == ["quote.created"]


def test_a_quote_promises_a_price_not_capacity(api, headers, priced) -> None:
    """docs/money.md: a quote is made for an order the location cannot take now; the order
    redeeming it is refused for capacity (409) and leaves the quote unused, to be used once
    there is room."""
    small = "PL0000774102"  # a 100 Mbps port
    q = quote(api, headers, locationId=small, bandwidth="100 Mbps")
    assert q.status_code == 201, q.text
    first = order(api, headers, locationId=small)
    assert first.status_code == 201, first.text
    with nothing_written(priced):
        full = order(api, headers, locationId=small, quoteId=q.json()["id"])
    assert full.status_code == 409 and full.json()["type"] == "/problems/capacity-exceeded"
    assert "usedAt" not in api.get(f"{BASE}/quotes/{q.json()['id']}", headers=headers).json()


def test_unusable_quotes_store_nothing(api, headers, priced, make_tenant, clock) -> None:
    q = quote(api, headers, locationId=LOC, bandwidth="100 Mbps").json()
    with nothing_written(priced):
        wrong = order(api, headers, bandwidth="1 Gbps", quoteId=q["id"])
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["pointer"] == "/quoteId"
    other = make_tenant(name="Other")
    other_headers = {"Authorization": f"Bearer {get_token(api, other)}"}
    with nothing_written(priced):
        foreign = order(api, other_headers, quoteId=q["id"])
    assert foreign.status_code == 400 and foreign.json()["errors"][0]["pointer"] == "/quoteId"
    assert api.get(f"{BASE}/quotes/{q['id']}", headers=other_headers).status_code == 404
    clock.advance(timedelta(minutes=15))
    with nothing_written(priced):
        late = order(api, headers, quoteId=q["id"])
    assert late.status_code == 409 and "expired" in late.json()["detail"]


@pytest.mark.parametrize(
    "body, status, pointer",
    [
        ({"bandwidth": "100 Mbps"}, 400, "/locationId"),
        ({"bandwidth": "100 Mbps", "locationId": LOC, "connectionId": "con_x"}, 400, "/locationId"),
        ({"bandwidth": "100 Mbps", "locationId": LOC, "colour": "red"}, 400, "/colour"),
        ({"bandwidth": "fast", "locationId": LOC}, 400, "/bandwidth"),
        ({"bandwidth": "100 Mbps", "locationId": LOC, "effectiveDate": "2030-02-01T00:00:00Z"},
         400, "/effectiveDate"),
        ({"bandwidth": "100 Mbps", "locationId": "nowhere"}, 400, "/locationId"),
        ({"bandwidth": "100 Mbps", "connectionId": "con_00000000000000000000000000000"}, 404,
         None),
    ],
)  # fmt: skip
def test_bad_quotes(api, headers, priced, body, status, pointer) -> None:
    answer = quote(api, headers, **body)
    assert answer.status_code == status, answer.text
    if pointer:
        assert [e["pointer"] for e in answer.json()["errors"]] == [pointer]


def test_duplicate_keys_are_refused(api, headers, priced) -> None:
    raw = b'{"bandwidth": "100 Mbps", "locationId": "PL0001247634", "bandwidth": "1 Gbps"}'
    answer = api.post(
        f"{BASE}/quotes", content=raw, headers={**headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400


def test_unpriced_tier_is_a_conflict(api, headers, priced, services) -> None:
    with services.db.write() as session:
        session.execute(delete(Price).where(Price.tier_mbps == 5))
    answer = quote(api, headers, locationId=LOC, bandwidth="5 Mbps")
    assert answer.status_code == 409 and "no price" in answer.json()["detail"]


def test_what_will_i_pay(api, headers, priced, clock) -> None:
    """The README walkthrough: catalog, quote, order with the quote, a change at 10:20,
    a price rise that the quote shields, an hour later the usage."""
    q = quote(api, headers, locationId=LOC, bandwidth="100 Mbps").json()
    conn = order(api, headers, quoteId=q["id"]).json()
    run_jobs(priced)  # active at 10:00:00
    with priced.db.write() as session:  # 100 Mbps costs more from 10:00; the quote holds
        billing.import_prices(session, clock, [
            {"locationId": LOC, "bandwidth": "100 Mbps", "currency": "USD", "hourlyRate": "0.50",
             "effectiveFrom": "2030-01-31T10:00:00Z"},
        ])  # fmt: skip
    clock.advance(timedelta(minutes=20))
    changed = api.put(
        f"{BASE}/connections/{conn['id']}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers
    )
    assert changed.status_code == 200
    run_jobs(priced)  # 1 Gbps in force from 10:20:00
    clock.set(START + timedelta(hours=1, minutes=2))
    assert meter(priced) == 1
    assert meter(priced) == 0  # rated once
    usage = api.get(
        f"{BASE}/usage",
        params={"from": "2030-01-31T10:00:00Z", "to": "2030-01-31T11:00:00Z"},
        headers=headers,
    ).json()
    lines = [(x["bandwidth"], x["seconds"], x["hourlyRate"], x["amount"]) for x in usage["lines"]]
    # 0.46 * 1200/3600 = 0.1533 → 0.15; 2.08 * 2400/3600 = 1.3867 → 1.39
    assert lines == [("100 Mbps", 1200, "0.46", "0.15"), ("1 Gbps", 2400, "2.08", "1.39")]
    assert usage["totals"] == [{"currency": "USD", "amount": "1.54"}]
    statements = api.get(f"{BASE}/statements", headers=headers).json()["statements"]
    assert [(s["month"], s["status"]) for s in statements] == [("2030-01", "open")]
    sid = statements[0]["id"]
    doc = api.get(f"{BASE}/statements/{sid}", headers=headers).json()
    assert doc["totals"][0]["amount"] == "1.54"
    assert doc["lines"][0]["rateSource"] == "quote" and doc["lines"][0]["quoteId"] == q["id"]
    with priced.db.read() as session:  # the maintained intervals = those the lines make
        statement = session.get(Statement, sid)
        assert statement is not None
        kept = statement_docs.maintained(session, statement)
        assert kept == statement_docs.recomputed(session, statement.customer_id, "2030-01")
        assert len(kept) == 2
    csv_text = api.get(f"{BASE}/statements/{sid}", headers={**headers, "Accept": "text/csv"})
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert "1 Gbps" in csv_text.text and "TOTAL" in csv_text.text
    # The month ends (31 January): every hour rated up to then, the statement closes.
    clock.set(datetime(2030, 2, 1, 0, 1, 30, tzinfo=UTC))
    meter(priced)
    closed = api.get(f"{BASE}/statements/{sid}", headers=headers).json()
    assert closed["status"] == "closed"
    # 13:00 … 23:59 at 1 Gbps: 14 more hours at 2.08 (10:00-11:00 was 1.54)
    assert closed["totals"][0]["amount"] == str(Decimal("1.54") + 13 * Decimal("2.08"))
    with priced.db.read() as session:
        names = session.scalars(select(Event.name).where(Event.name.like("statement.%"))).all()
        hours = session.scalar(select(func.count()).select_from(UsageHour))
    assert names == ["statement.closed"] and hours == 14
    # Closed is final: a later price or line cannot change it.
    assert api.get(f"{BASE}/statements/{sid}", headers=headers).json() == closed


def test_tenancy(api, headers, priced, make_tenant, clock) -> None:
    conn = order(api, headers).json()
    run_jobs(priced)
    clock.advance(timedelta(hours=1, minutes=2))
    meter(priced)
    mine = api.get(f"{BASE}/statements", headers=headers).json()["statements"]
    assert len(mine) == 1
    other = make_tenant(name="Other")
    theirs = {"Authorization": f"Bearer {get_token(api, other)}"}
    assert api.get(f"{BASE}/statements", headers=theirs).json() == {"statements": []}
    assert api.get(f"{BASE}/statements/{mine[0]['id']}", headers=theirs).status_code == 404
    usage = api.get(f"{BASE}/usage", params={"connectionId": conn["id"]}, headers=theirs)
    assert usage.status_code == 404
    assert api.get(f"{BASE}/usage", headers=theirs).json()["lines"] == []
    q = quote(api, theirs, connectionId=conn["id"], bandwidth="1 Gbps")
    assert q.status_code == 404


def test_suspended_hours_follow_the_setting(api, headers, priced, clock) -> None:
    conn = order(api, headers).json()
    run_jobs(priced)
    clock.advance(timedelta(minutes=30))
    api.post(f"{BASE}/connections/{conn['id']}/suspend", headers=headers)
    run_jobs(priced)
    clock.set(START + timedelta(hours=1, minutes=5))
    meter(priced, Decimal("0.5"))
    with priced.db.read() as session:
        rows = session.execute(
            select(UsageLine.status, UsageLine.seconds, UsageLine.amount_minor).order_by(
                UsageLine.start_at
            )
        ).all()
    # 30 min active: 23 cents; 30 min suspended at half: 11.5 → 12 (half to even)
    assert [tuple(r) for r in rows] == [("active", 1800, 23), ("suspended", 1800, 12)]


def test_change_with_a_quote_and_boost(api, headers, priced, clock) -> None:
    conn = order(api, headers).json()
    run_jobs(priced)
    revert = (START + timedelta(minutes=30)).isoformat()
    q = quote(api, headers, connectionId=conn["id"], bandwidth="1 Gbps", revertAt=revert)
    assert q.status_code == 201, q.text
    url = f"{BASE}/connections/{conn['id']}/bandwidth"
    with nothing_written(priced):  # the quote was for a boost: a plain change mismatches
        plain = api.put(url, json={"bandwidth": "1 Gbps", "quoteId": q.json()["id"]},
                        headers=headers)  # fmt: skip
    assert plain.status_code == 400 and plain.json()["errors"][0]["pointer"] == "/quoteId"
    boosted = api.put(
        url, json={"bandwidth": "1 Gbps", "revertAt": revert, "quoteId": q.json()["id"]},
        headers=headers,
    )  # fmt: skip
    assert boosted.status_code == 200, boosted.text
    run_jobs(priced)
    clock.set(START + timedelta(minutes=30))
    run_jobs(priced)  # the revert
    clock.set(START + timedelta(hours=1, minutes=5))
    meter(priced)
    with priced.db.read() as session:
        rows = session.execute(
            select(UsageLine.tier_mbps, UsageLine.seconds, UsageLine.source).order_by(
                UsageLine.start_at
            )
        ).all()
        used = session.scalar(select(Quote.used_change_id))
    assert [(r[0], r[1], r[2].split(":")[0]) for r in rows] == [
        (1000, 1800, "quote"), (100, 1800, "price"),
    ]  # fmt: skip
    assert used is not None


def test_usage_parameters(api, headers, priced, clock) -> None:
    conn = order(api, headers).json()
    run_jobs(priced)
    clock.set(START + timedelta(hours=3, minutes=5))
    meter(priced)
    for bad in ({"to": "0.5"}, {"from": "2030-01-31T10:00:00"}, {"granularity": "week"}):
        answer = api.get(f"{BASE}/usage", params=bad, headers=headers)
        assert answer.status_code == 400, (bad, answer.text)
    days = api.get(f"{BASE}/usage", params={"granularity": "day"}, headers=headers).json()
    assert [(x["connectionId"], x["seconds"], x["amount"]) for x in days["lines"]] == [
        (conn["id"], 3 * 3600, "1.38")
    ]
    reversed_window = api.get(
        f"{BASE}/usage",
        params={"from": "2030-02-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        headers=headers,
    )
    assert reversed_window.status_code == 400
    assert reversed_window.json()["errors"] == [
        {"pointer": "/query/to", "detail": "must not be before from"}
    ]
    empty = api.get(
        f"{BASE}/usage",
        params={"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        headers=headers,
    ).json()
    assert empty["lines"] == [] and empty["totals"] == []


@pytest.mark.parametrize(
    "times, pointer",
    [
        ({"effectiveDate": "9999-12-31T00:00:00Z"}, "/effectiveDate"),
        ({"effectiveDate": (START + timedelta(days=366)).isoformat()}, "/effectiveDate"),
        ({"revertAt": (START + timedelta(days=366)).isoformat()}, "/revertAt"),
        ({"effectiveDate": (START + timedelta(days=2)).isoformat(),
          "revertAt": (START + timedelta(days=1)).isoformat()}, "/revertAt"),
    ],
)  # fmt: skip
def test_a_quote_has_the_bandwidth_changes_time_rules(
    api, headers, priced, times: dict[str, str], pointer: str
) -> None:
    """Whatever `PUT …/bandwidth` refuses, a quote for it refuses the same way (a quote its
    change could never use is never made)."""
    conn = order(api, headers).json()
    run_jobs(priced)
    put = api.put(
        f"{BASE}/connections/{conn['id']}/bandwidth",
        json={"bandwidth": "1 Gbps", **times},
        headers=headers,
    )
    assert put.status_code == 400, put.text
    with nothing_written(priced):
        quoted = quote(api, headers, connectionId=conn["id"], bandwidth="1 Gbps", **times)
    assert quoted.status_code == 400, quoted.text
    assert quoted.json()["errors"] == put.json()["errors"]
    assert [e["pointer"] for e in quoted.json()["errors"]] == [pointer]
    # A year ahead, to the day, is a change (and a quote) like any other.
    ahead = {"effectiveDate": (START + timedelta(days=365)).isoformat()}
    assert (
        quote(api, headers, connectionId=conn["id"], bandwidth="1 Gbps", **ahead).status_code == 201
    )
