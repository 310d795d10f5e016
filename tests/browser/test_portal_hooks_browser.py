"""The webhook endpoint and schedule pages in a real browser (Debian's Chromium, Playwright)
against `iod serve`: the demo admin creates an endpoint and sees its secret once, then
creates a connection's schedule in the short rule grammar and pauses it.

One server and one browser for the module (the `portal` fixture of the portal's other
browser test, made anew for this module); skipped like it when Chromium is missing.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_portal_browser import (
    ZONE,
    Portal,
    api_get,
    ensure_a_connection,
    nav,
    portal,  # noqa: F401  (the module's served process and browser)
    set_password,
    shot,
)

pytestmark = pytest.mark.e2e


def test_an_admin_creates_a_webhook_endpoint_and_a_paused_schedule(portal: Portal) -> None:  # noqa: F811
    ensure_a_connection(portal)
    context = portal.context()
    page = context.new_page()
    set_password(page, portal.demo["portal_sign_in_link"])

    # A webhook endpoint: the secret is shown once, on the creation's answer only.
    nav(page, "Webhooks").click()
    page.get_by_label("URL", exact=True).fill("https://hooks.example.com/iod")
    page.get_by_label("Event types (optional)", exact=True).fill("connection. schedule.")
    page.get_by_label("Description (optional)", exact=True).fill("Office receiver")
    page.get_by_role("button", name="Create webhook endpoint").click()
    secret = page.locator("#webhook-secret").inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{20,}", secret), secret
    endpoint_id = page.locator("#endpoint-id").inner_text()
    shot(page, "webhooks")
    page.goto("/portal/webhooks")
    expect(page.get_by_role("link", name="https://hooks.example.com/iod")).to_be_visible()
    assert secret not in page.content() and "webhook-secret" not in page.content()
    page.get_by_role("link", name="https://hooks.example.com/iod").click()
    expect(page.locator("#endpoint-state")).to_have_text("enabled")
    assert endpoint_id in page.content() and secret not in page.content()
    listed = api_get(portal, "/internet-on-demand/webhook-endpoints")["webhookEndpoints"]
    assert [(e["id"], e["eventTypes"]) for e in listed] == [
        (endpoint_id, ["connection.", "schedule."])
    ]

    # A schedule on a connection: a rule the grammar does not read is shown at its field.
    nav(page, "Connections").click()
    page.locator("tbody a").first.click()
    # The page updates itself once the connection is active (a worker's job, under load).
    expect(page.locator("#status")).to_have_text("active", timeout=60_000)
    connection_id = page.url.split("/portal/connections/")[1].split("?")[0]
    page.get_by_role("link", name="Recurring schedule").click()
    expect(page.get_by_text("This connection has no schedule.")).to_be_visible()
    expect(page.get_by_label("Time zone of the rules")).to_have_value(ZONE)  # the browser's
    page.get_by_label("Default bandwidth", exact=True).select_option("100 Mbps")
    rules = page.get_by_label("Rules, one a line", exact=True)
    rules.fill("1 Gbps MO-FR 08:00-18:00\n1 Gbps someday 08:00")
    page.get_by_role("button", name="Create the schedule").click()
    expect(page.locator("#err-rules")).to_contain_text("rule 2: '1 Gbps someday 08:00'")
    expect(rules).to_have_attribute("aria-invalid", "true")
    rules.fill("1 Gbps MO-FR 08:00-18:00\n200 Mbps weekends 10:00-16:00")
    page.get_by_role("button", name="Create the schedule").click()
    expect(page.locator(".notice")).to_have_text("Schedule created.")
    expect(page.locator("#schedule-state")).to_have_text("active")
    expect(page.get_by_role("region", name="Next transitions")).to_contain_text("1 Gbps")
    shot(page, "schedule")
    found = api_get(portal, f"/internet-on-demand/connections/{connection_id}/schedules")
    (schedule,) = found["schedules"]
    assert schedule["timeZone"] == ZONE and schedule["paused"] is False
    assert [r["recurrence"] for r in schedule["rules"]] == [
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
        "FREQ=WEEKLY;BYDAY=SA,SU",
    ]

    page.get_by_role("button", name="Pause the schedule").click()
    expect(page.locator(".notice")).to_contain_text("Schedule paused")
    expect(page.locator("#schedule-state")).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume the schedule")).to_be_visible()
    found = api_get(portal, f"/internet-on-demand/connections/{connection_id}/schedules")
    assert found["schedules"][0]["paused"] is True
    context.close()
    # The refused form's answer (400) is logged by Chromium as a resource: that one is expected.
    refused = f"{portal.url}/portal/connections/{connection_id}/schedule/new: Failed to load "
    assert [e for e in portal.console_errors if not e.startswith(refused)] == []
