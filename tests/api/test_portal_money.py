"""The portal's money pages through the app (TestClient), on SQLite and PostgreSQL, with a
frozen clock: the price on the order and change forms (a quote, redeemed on confirm; an
expired one is a message and a fresh price, not a 500), usage with its chart, statements,
their CSV (the API's), roles, CSRF and tenancy."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import Services
from iod.billing import demo, metering
from iod.billing import service as billing
from iod.customers import service as customers
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.locations import catalog
from iod.locations import repository as locations_repo
from iod.models import Connection, Quote
from tests.api.test_portal import csrf_of, customer, page_csrf, signed_in
from tests.conftest import counts, get_token, run_jobs

LOC = catalog.DEMO_LOCATION_ID
START = datetime(2030, 1, 31, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's, with sessions that outlive the hours these tests move the clock by."""
    return settings.model_copy(
        update={"portal_session_idle_seconds": 86400, "portal_session_absolute_seconds": 86400}
    )


@pytest.fixture
def priced(services: Services, clock: FrozenClock) -> Services:
    with services.db.write() as session:
        places = [(x.id, list(x.tiers_mbps)) for x in locations_repo.list_all(session)]
        billing.import_prices(session, clock, demo.demo_prices(places))
    return services


def quote_id_of(html: str) -> str:
    found = re.search(r'name="quoteId" value="(quo_\w+)"', html)
    assert found, html[:2000]
    return found.group(1)


def review_order(client: TestClient, bandwidth: str = "100 Mbps") -> tuple[str, str]:
    """The review page of an order: its CSRF token and its quote."""
    page = client.post(
        "/portal/order",
        data={"csrf": page_csrf(client), "locationId": LOC, "bandwidth": bandwidth},
    )
    assert page.status_code == 200, page.text
    return csrf_of(page.text), quote_id_of(page.text)


def confirm_order(client: TestClient, csrf: str, quote_id: str, bandwidth: str = "100 Mbps"):  # type: ignore[no-untyped-def]
    return client.post(
        "/portal/order",
        data={"csrf": csrf, "locationId": LOC, "bandwidth": bandwidth, "step": "confirm",
              "quoteId": quote_id},
    )  # fmt: skip


def quote_row(services: Services, quote_id: str) -> Quote:
    with services.db.read() as session:
        found = session.get(Quote, quote_id)
        assert found is not None
        session.expunge(found)
        return found


def connection_of(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text
    found = re.search(r"/portal/connections/(con_\w+)", response.headers["location"])
    assert found
    return found.group(1)


def test_an_order_shows_its_price_and_is_charged_at_it(api: TestClient, priced: Services) -> None:
    operator = signed_in(api, priced, customer(priced, "Acme"), "operator")
    page = operator.post(
        "/portal/order",
        data={"csrf": page_csrf(operator), "locationId": LOC, "bandwidth": "100 Mbps"},
    )
    assert page.status_code == 200
    # The demo book: 0.46 an hour, 11.04 a day, 331.20 a month (its cap).
    for shown in ("0.46 USD an hour", "11.04 USD", "331.20 USD", "Confirm the order"):
        assert shown in page.text, shown
    quote_id = quote_id_of(page.text)
    made = connection_of(confirm_order(operator, csrf_of(page.text), quote_id))
    used = quote_row(priced, quote_id)
    assert used.used_connection_id == made and used.used_at is not None
    # The same quote again: used; the page says so and shows a fresh price, orders nothing.
    before = counts(priced)
    again = confirm_order(operator, csrf_of(page.text), quote_id)
    assert again.status_code == 409
    assert 'id="err-quoteId"' in again.text and "already used" in again.text
    assert quote_id_of(again.text) != quote_id
    assert counts(priced) == before


def test_an_expired_quote_is_a_message_and_a_fresh_price(
    api: TestClient, priced: Services, clock: FrozenClock
) -> None:
    operator = signed_in(api, priced, customer(priced, "Acme"), "operator")
    csrf, quote_id = review_order(operator)
    clock.advance(timedelta(seconds=priced.settings.quote_ttl_seconds))
    before = counts(priced)
    late = confirm_order(operator, csrf, quote_id)
    assert late.status_code == 409, late.text
    message = re.search(r'<p class="error" id="err-quoteId" role="alert">([^<]+)</p>', late.text)
    assert message and "expired at 2030-01-31 10:15" in message.group(1)
    assert 'aria-describedby="err-quoteId"' in late.text
    assert counts(priced) == before
    fresh = quote_id_of(late.text)
    assert fresh != quote_id
    assert quote_row(priced, fresh).expires_at > clock.now()
    made = connection_of(confirm_order(operator, csrf_of(late.text), fresh))
    assert quote_row(priced, fresh).used_connection_id == made
    # A quote of another tier (a forged form) is refused the same way, at /quoteId.
    csrf, other = review_order(operator, "1 Gbps")
    wrong = confirm_order(operator, csrf, other, bandwidth="100 Mbps")
    assert wrong.status_code == 400 and 'id="err-quoteId"' in wrong.text
    assert quote_row(priced, other).used_at is None


def test_a_change_shows_its_price_now_at_a_time_and_as_a_boost(
    api: TestClient, priced: Services, clock: FrozenClock
) -> None:
    operator = signed_in(api, priced, customer(priced, "Acme"), "operator")
    csrf, quote_id = review_order(operator)
    con = connection_of(confirm_order(operator, csrf, quote_id))
    run_jobs(priced)
    url = f"/portal/connections/{con}/bandwidth"
    form = {"bandwidth": "1 Gbps", "when": "boost", "effectiveDate": "", "step": "review",
            "revertAt": "2030-01-31T13:00", "timeZone": "Europe/Paris"}  # fmt: skip
    page = operator.post(url, data={**form, "csrf": page_csrf(operator)})
    assert page.status_code == 200, page.text
    assert "2.08 USD an hour" in page.text and "Confirm the change" in page.text
    assert "2030-01-31 13:00 CET" in page.text  # the boost's end, in the zone given
    boost_quote = quote_id_of(page.text)
    assert quote_row(priced, boost_quote).revert_at == datetime(2030, 1, 31, 12, tzinfo=UTC)
    done = operator.post(
        url, data={**form, "step": "confirm", "quoteId": boost_quote, "csrf": csrf_of(page.text)}
    )
    assert done.status_code == 303, done.text
    assert quote_row(priced, boost_quote).used_change_id is not None
    # At a time: quoted for then; an expired quote is a message next to a fresh price.
    at = {**form, "bandwidth": "500 Mbps", "when": "at", "effectiveDate": "2030-02-01T09:00",
          "revertAt": "", "timeZone": "UTC"}  # fmt: skip
    page = operator.post(url, data={**at, "csrf": page_csrf(operator)})
    assert "1.39 USD an hour" in page.text and "2030-02-01 09:00 UTC" in page.text
    stale = quote_id_of(page.text)
    clock.advance(timedelta(minutes=20))
    before = counts(priced)
    late = operator.post(
        url, data={**at, "step": "confirm", "quoteId": stale, "csrf": csrf_of(page.text)}
    )
    assert late.status_code == 409 and "expired" in late.text and 'id="err-quoteId"' in late.text
    assert counts(priced) == before
    fresh = quote_id_of(late.text)
    done = operator.post(
        url, data={**at, "step": "confirm", "quoteId": fresh, "csrf": csrf_of(late.text)}
    )
    assert done.status_code == 303
    assert quote_row(priced, fresh).effective_at == datetime(2030, 2, 1, 9, tzinfo=UTC)
    # A bad time is shown next to the form's field, as before.
    bad = operator.post(url, data={**at, "effectiveDate": "soon", "csrf": page_csrf(operator)})
    assert bad.status_code == 400 and 'id="err-effectiveDate"' in bad.text


def test_a_tier_without_a_price_is_said_and_still_orderable(
    api: TestClient, services: Services
) -> None:
    operator = signed_in(api, services, customer(services, "Acme"), "operator")
    page = operator.post(
        "/portal/order",
        data={"csrf": page_csrf(operator), "locationId": LOC, "bandwidth": "100 Mbps"},
    )
    assert page.status_code == 200 and "No price is published for this tier" in page.text
    assert 'name="quoteId"' not in page.text
    made = operator.post(
        "/portal/order",
        data={"csrf": csrf_of(page.text), "locationId": LOC, "bandwidth": "100 Mbps",
              "step": "confirm"},
    )  # fmt: skip
    connection_of(made)


def test_a_viewer_gets_no_quote_and_forms_need_their_token(
    api: TestClient, priced: Services
) -> None:
    acme = customer(priced, "Acme")
    viewer = signed_in(api, priced, acme, "viewer")
    operator = signed_in(api, priced, acme, "operator")
    csrf, quote_id = review_order(operator)
    con = connection_of(confirm_order(operator, csrf, quote_id))
    token = page_csrf(viewer)
    with priced.db.read() as session:
        quotes_before = session.scalar(select(func.count()).select_from(Quote))
    order = {"locationId": LOC, "bandwidth": "100 Mbps"}
    change = {"bandwidth": "1 Gbps", "when": "now", "step": "review"}
    for path, form in [
        ("/portal/order", order),
        ("/portal/order", {**order, "step": "confirm"}),
        (f"/portal/connections/{con}/bandwidth", change),
    ]:
        assert viewer.post(path, data={**form, "csrf": token}).status_code == 403, path
        # Without the session's token (or another session's), even an operator is refused.
        assert operator.post(path, data=form).status_code == 403, path
        assert operator.post(path, data={**form, "csrf": token}).status_code == 403, path
    # Another customer's operator: the connection is not theirs (404), nor the quote (400).
    stranger = signed_in(api, priced, customer(priced, "Other"), "operator")
    theirs = page_csrf(stranger)
    url = f"/portal/connections/{con}/bandwidth"
    assert stranger.post(url, data={**change, "csrf": theirs}).status_code == 404
    forged = stranger.post(
        "/portal/order", data={**order, "step": "confirm", "quoteId": quote_id, "csrf": theirs}
    )
    assert forged.status_code == 400 and "not one of yours" in forged.text
    with priced.db.read() as session:
        # The forged confirm was answered with a fresh quote of the stranger's own, only.
        assert session.scalar(select(func.count()).select_from(Quote)) == quotes_before + 1
        assert session.scalar(select(func.count()).select_from(Connection)) == 1


def meter(services: Services) -> int:
    with services.db.write() as session:
        return metering.rate_due(
            session, services.clock.now(), fraction=Decimal(1), settle_seconds=60, batch=100,
            budget=10_000,
        )  # fmt: skip


def api_client(services: Services, customer_id: str) -> tuple[str, str]:
    with services.db.write() as session:
        new = customers.create_client(
            session, services.clock, customer_id, "read write", hasher=services.secret_hasher
        )
    return new.client_id, new.client_secret


def test_usage_and_statements_for_every_role_and_no_one_else(
    api: TestClient, priced: Services, clock: FrozenClock
) -> None:
    acme = customer(priced, "Acme")
    operator = signed_in(api, priced, acme, "operator")
    csrf, quote_id = review_order(operator)
    con = connection_of(confirm_order(operator, csrf, quote_id))
    run_jobs(priced)  # active at 10:00
    client_id, secret = api_client(priced, acme)
    bearer = {"Authorization": f"Bearer {get_token_for(api, client_id, secret)}"}
    clock.set(START + timedelta(minutes=20))  # 1 Gbps from 10:20: the first hour splits
    changed = api.put(
        f"/internet-on-demand/connections/{con}/bandwidth", json={"bandwidth": "1 Gbps"},
        headers=bearer,
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    run_jobs(priced)
    clock.set(START + timedelta(hours=3, minutes=5))
    assert meter(priced) == 3
    viewer = signed_in(api, priced, acme, "viewer")

    usage = viewer.get("/portal/usage")
    assert usage.status_code == 200, usage.text
    assert "<h1>Usage, 2030-01</h1>" in usage.text
    chart = re.search(r'<svg class="costs".*?</svg>', usage.text, re.S)
    assert chart, usage.text
    bars = re.findall(r"<title>(2030-01-\d\d): ([\d.]+) USD</title>", chart.group(0))
    # 0.46 x 20 min = 0.15, 2.08 x 40 min = 1.39, then two hours at 2.08: 5.70
    assert bars == [("2030-01-31", "5.70")]
    assert "5.70 USD in all" in chart.group(0)
    rows = re.findall(
        r"<tr><td><a href=\"/portal/connections/(con_\w+)\">con_\w+</a></td><td>([^<]+)</td>"
        r"<td>active</td><td class=\"num\">([\d.]+)</td><td class=\"num\">([\d.]+) USD</td>"
        r"<td class=\"num\">([\d.]+) USD</td></tr>",
        usage.text,
    )
    assert rows == [
        (con, "100 Mbps", "0.33", "0.46", "0.15"), (con, "1 Gbps", "2.67", "2.08", "5.55"),
    ]  # fmt: skip
    assert re.search(r'id="total-usd">5.70 USD<', usage.text)
    # The same as the API's usage of the month.
    monthly = api.get("/internet-on-demand/usage?granularity=month", headers=bearer).json()
    assert monthly["totals"] == [{"currency": "USD", "amount": "5.70"}]
    assert sorted((x["bandwidth"], x["amount"]) for x in monthly["lines"]) == [
        ("1 Gbps", "5.55"), ("100 Mbps", "0.15"),
    ]  # fmt: skip
    assert 'href="/portal/usage?month=2029-12"' in usage.text
    assert "No rated usage in 2029-12" in viewer.get("/portal/usage?month=2029-12").text
    assert viewer.get("/portal/usage?month=2030-13").status_code == 400

    listed = viewer.get("/portal/statements")
    assert listed.status_code == 200
    found = re.search(r'href="/portal/statements/(stm_\w+)">2030-01<', listed.text)
    assert found, listed.text
    sid = found.group(1)
    one = viewer.get(f"/portal/statements/{sid}")
    assert one.status_code == 200 and "<h1>Statement 2030-01</h1>" in one.text
    assert re.search(r'id="amount-usd"><strong>5.70</strong>', one.text)
    assert f"quote <code>{quote_id}</code>" in one.text  # the line's rate is the quote's

    # The CSV is the API's, byte for byte.
    from_api = api.get(
        f"/internet-on-demand/statements/{sid}", headers={**bearer, "Accept": "text/csv"}
    )
    csv = viewer.get(f"/portal/statements/{sid}/csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert 'filename="statement-2030-01.csv"' in csv.headers["content-disposition"]
    assert csv.content == from_api.content and b"TOTAL" in csv.content

    # Another customer: none of it.
    stranger = signed_in(api, priced, customer(priced, "Other"), "admin")
    assert stranger.get(f"/portal/statements/{sid}").status_code == 404
    assert stranger.get(f"/portal/statements/{sid}/csv").status_code == 404
    assert sid not in stranger.get("/portal/statements").text
    theirs = stranger.get("/portal/usage")
    assert theirs.status_code == 200 and con not in theirs.text and "No rated usage" in theirs.text
    assert stranger.get("/portal/statements/stm_nonsense").status_code == 404
    # Signed out: sent to sign in, nothing shown.
    anonymous = TestClient(api.app, follow_redirects=False)
    for path in ("/portal/usage", "/portal/statements", f"/portal/statements/{sid}/csv"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and "/portal/sign-in" in answer.headers["location"]


def get_token_for(api: TestClient, client_id: str, secret: str) -> str:
    from tests.conftest import Tenant

    return get_token(api, Tenant("", client_id, secret))
