"""The portal's money pages in a real browser (Debian's Chromium, Playwright) against
`iod serve`: order with the price shown, change with the price shown, then usage (the cost
chart) and a statement with its CSV.

A server of its own, without periodic tasks: the test rates the hours itself, after moving
its connection's history three hours back (no hour can be rated while it is going on), so
nothing else rates them first. With IOD_PORTAL_SCREENSHOTS=DIR it saves the screenshots of
these pages in docs/portal/.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from iod.billing import metering
from iod.billing.statements import month_of
from iod.infra.db import Database, make_engine
from iod.models import Connection, StatusTransition
from tests.browser.test_portal_browser import Portal, nav, served_portal, set_password, shot
from tests.e2e.conftest import token_for

pytestmark = pytest.mark.e2e

with contextlib.suppress(ImportError):  # the dev extra installs it; else the fixture skips
    from playwright.sync_api import expect

BACK = timedelta(hours=3)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    yield from served_portal(tmp_path_factory.mktemp("money-browser"), IOD_PERIODIC_TASKS="false")


def api(portal: Portal, path: str, accept: str = "application/json") -> httpx.Response:
    token = token_for(portal.url, portal.demo["client_id"], portal.demo["client_secret"])
    response = httpx.get(
        portal.url + path,
        headers={"Authorization": f"Bearer {token}", "Accept": accept},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def three_hours_rated(portal: Portal, connection_id: str) -> str:
    """The connection's history moved three hours back, and the hours since rated, as the
    worker's metering task would; returns the month of its first line."""
    db = Database(make_engine(f"sqlite:///{Path(portal.env['IOD_DATA_DIR']) / 'iod.sqlite3'}"))
    try:
        with db.write() as session:
            connection = session.get(Connection, connection_id)
            assert connection is not None
            connection.created_at -= BACK
            query = select(StatusTransition).where(StatusTransition.connection_id == connection_id)
            for transition in session.scalars(query):
                transition.at -= BACK
            # Billing starts at activation: the month of the first line.
            first = min(t.at for t in session.scalars(query) if t.to_status == "active")
            session.flush()  # the sessions do not autoflush
            rated = metering.rate_due(
                session, datetime.now(UTC), fraction=Decimal(1), settle_seconds=0, batch=100,
                budget=1000,
            )  # fmt: skip
        assert rated >= 2, rated
    finally:
        db.dispose()
    return month_of(first.replace(tzinfo=UTC) if first.tzinfo is None else first)


def test_order_with_its_price_then_usage_and_a_statement(portal: Portal) -> None:
    context = portal.context()
    page = context.new_page()
    set_password(page, portal.demo["portal_sign_in_link"])

    # Order: the review shows the price of the tier; confirming orders at it.
    nav(page, "Order").click()
    page.get_by_label("Location", exact=True).select_option(portal.demo["location_id"])
    page.get_by_role("button", name="Show its tiers").click()
    page.get_by_label("Bandwidth", exact=True).select_option("100 Mbps")
    page.get_by_label("Description (optional)", exact=True).fill("Priced office")
    page.get_by_role("button", name="Review the order").click()
    expect(page.get_by_role("heading", name="Confirm the order")).to_be_visible()
    expect(page.locator("#hourly-rate")).to_have_text("0.46 USD an hour")
    expect(page.locator("#monthly-estimate")).to_have_text("331.20 USD")
    order_quote = page.locator("input[name=quoteId]").get_attribute("value")
    shot(page, "order-review")
    page.get_by_role("button", name="Confirm the order").click()
    expect(page.get_by_role("heading", name="Priced office")).to_be_visible()
    expect(page.locator("#status")).to_have_text("active")
    connection_id = page.url.split("/portal/connections/")[1].split("?")[0]
    used = api(portal, f"/internet-on-demand/quotes/{order_quote}").json()
    assert used["usedAt"] and used["hourlyRate"] == "0.46"

    # Change now: the review shows the new tier's price; confirming changes at it.
    form = page.locator("form.change")
    form.get_by_label("New bandwidth", exact=True).select_option("1 Gbps")
    form.get_by_label("Now", exact=True).check()
    form.get_by_role("button", name="Review the change and its price").click()
    expect(page.get_by_role("heading", name="Confirm the change")).to_be_visible()
    expect(page.locator("#hourly-rate")).to_have_text("2.08 USD an hour")
    change_quote = page.locator("input[name=quoteId]").get_attribute("value")
    shot(page, "change-review")
    page.get_by_role("button", name="Confirm the change").click()
    expect(page.locator("#current-bandwidth")).to_have_text("1 Gbps")
    assert api(portal, f"/internet-on-demand/quotes/{change_quote}").json()["usedAt"]

    # Three hours of it rated: the usage page draws them, a statement lists them.
    month = three_hours_rated(portal, connection_id)
    nav(page, "Usage").click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Usage, ")
    if heading.inner_text() != f"Usage, {month}":  # this month began less than 3 hours ago
        page.get_by_role("link", name=re.compile(r"^Previous month")).click()
    expect(page.get_by_role("heading", name=f"Usage, {month}")).to_be_visible()
    expect(page.locator("svg.costs desc")).to_contain_text("USD in all")
    expect(page.locator("svg.costs rect").first).to_be_attached()
    expect(page.locator("table.lines")).to_contain_text(connection_id)
    expect(page.locator("table.lines")).to_contain_text("0.46 USD")
    shot(page, "usage")

    nav(page, "Statements").click()
    expect(page.get_by_role("heading", name="Statements")).to_be_visible()
    shot(page, "statements")
    page.get_by_role("link", name=month, exact=True).click()
    expect(page.get_by_role("heading", name=f"Statement {month}")).to_be_visible()
    expect(page.locator("table.lines")).to_contain_text(connection_id)
    expect(page.locator("table.lines")).to_contain_text(f"quote {order_quote}")
    shot(page, "statement")
    statement_id = page.url.rsplit("/", 1)[1]
    csv_link = page.get_by_role("link", name="Download as CSV")
    download = page.request.get(csv_link.get_attribute("href") or "")
    assert download.status == 200 and download.headers["content-type"].startswith("text/csv")
    from_api = api(portal, f"/internet-on-demand/statements/{statement_id}", "text/csv")
    assert download.text() == from_api.text and connection_id in from_api.text
    context.close()
    assert portal.console_errors == []
