"""The portal in a real browser: Debian's Chromium driven by Playwright against `iod serve`.

One server and one browser for the module. Skipped only when Chromium (or Playwright) is
missing and IOD_REQUIRE_BROWSER is not set (.ci/run sets it and installs chromium). With
IOD_PORTAL_SCREENSHOTS=DIR the journey also saves the screenshots of docs/portal/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.e2e.conftest import Server, base_env, iod, token_for

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("IOD_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("IOD_REQUIRE_BROWSER") == "1"
PASSWORD = "plum tractor 47 quietly"
ZONE = "Europe/Paris"  # the browser's; the portal shows times in it and stores UTC
SHOTS = os.environ.get("IOD_PORTAL_SCREENSHOTS")

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


def _need_browser() -> None:
    missing = sync_playwright is None or shutil.which(CHROMIUM) is None
    if missing and REQUIRED:
        pytest.fail(f"IOD_REQUIRE_BROWSER=1 but {CHROMIUM} or playwright is missing")
    if missing:
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium) and playwright")


class Portal:
    """The served process, its demo data, the browser, and what the pages logged."""

    def __init__(self, server: Server, demo: dict[str, Any], browser: Browser, env: Any) -> None:
        self.server = server
        self.url = server.url
        self.demo = demo
        self.browser = browser
        self.env = env
        self.console_errors: list[str] = []

    def context(self) -> BrowserContext:
        context = self.browser.new_context(timezone_id=ZONE, base_url=self.url)
        context.set_default_timeout(15_000)
        context.on("page", self._watch)
        return context

    def _watch(self, page: Page) -> None:
        page.on(
            "console",
            lambda m: (
                self.console_errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.console_errors.append(f"{page.url}: {e}"))


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    yield from served_portal(tmp_path_factory.mktemp("browser"))


def served_portal(tmp: Path, **env_extra: str) -> Iterator[Portal]:
    """`iod serve` with the demo data (and `env_extra`), and Chromium, until closed."""
    _need_browser()
    env = base_env(tmp, "sqlite", IOD_PORTAL_SIGN_INS_PER_MINUTE="0", **env_extra)
    server = Server(env, tmp / "server.log")
    demo = json.loads(iod(env, "demo", "--json", "--url", server.url).stdout)
    server.start()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield Portal(server, demo, browser, env)
        finally:
            browser.close()
            server.stop()


def shot(page: Page, name: str) -> None:
    """The page at both widths, when screenshots are asked for."""
    if not SHOTS:
        return
    for width in (360, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(Path(SHOTS) / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def set_password(page: Page, link: str) -> None:
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("The same again", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Set password and sign in").click()
    expect(page).to_have_url(re.compile(r":\d+/portal/connections$"))


def nav(page: Page, name: str) -> Any:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def local_input(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M")


def review_and_confirm(page: Page) -> None:
    """The change form's two steps: its price (a quote), then the change at that price."""
    page.locator("form.change").get_by_role(
        "button", name="Review the change and its price"
    ).click()
    expect(page.get_by_role("heading", name="Confirm the change")).to_be_visible()
    expect(page.locator("#hourly-rate")).to_contain_text("USD an hour")
    page.get_by_role("button", name="Confirm the change").click()


def api_get(portal: Portal, path: str) -> Any:
    token = token_for(portal.url, portal.demo["client_id"], portal.demo["client_secret"])
    response = httpx.get(
        portal.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_an_admin_orders_changes_and_manages_api_clients(portal: Portal) -> None:
    context = portal.context()
    page = context.new_page()
    # `iod demo` printed the demo admin's one-time link (make run shows it).
    set_password(page, portal.demo["portal_sign_in_link"])
    shot(page, "connections-empty")

    # Order: pick a location and a tier, review, confirm.
    nav(page, "Order").click()
    page.get_by_label("Location", exact=True).select_option(portal.demo["location_id"])
    page.get_by_role("button", name="Show its tiers").click()
    page.get_by_label("Bandwidth", exact=True).select_option("100 Mbps")
    page.get_by_label("Description (optional)", exact=True).fill("Browser office")
    shot(page, "order")
    page.get_by_role("button", name="Review the order").click()
    expect(page.get_by_role("heading", name="Confirm the order")).to_be_visible()
    page.get_by_role("button", name="Confirm the order").click()
    expect(page.get_by_role("heading", name="Browser office")).to_be_visible()
    # Live: the page reloads itself when provisioning is done (a worker's job, under load).
    expect(page.locator("#status")).to_have_text("active", timeout=60_000)
    connection_id = page.url.split("/portal/connections/")[1].split("?")[0]
    timeline = page.locator("svg.timeline desc")
    assert "1 Gbps" not in (timeline.text_content() or "")

    # Change now: the timeline shows the new step once applied.
    form = page.locator("form.change")
    expect(page.get_by_label("Times are in the time zone")).to_have_value(ZONE)
    form.get_by_label("New bandwidth", exact=True).select_option("1 Gbps")
    form.get_by_label("Now", exact=True).check()
    review_and_confirm(page)
    expect(page.locator("#current-bandwidth")).to_have_text("1 Gbps", timeout=60_000)
    expect(timeline).to_contain_text("1 Gbps from")

    # Schedule in two days at 09:30 the user's time; it is stored in UTC.
    when = (datetime.now(ZoneInfo(ZONE)) + timedelta(days=2)).replace(
        hour=9, minute=30, second=0, microsecond=0
    )
    form.get_by_label("New bandwidth", exact=True).select_option("500 Mbps")
    form.get_by_label("At a time", exact=True).check()
    form.get_by_label("At (for").fill(local_input(when))
    review_and_confirm(page)
    expect(page.locator(".notice")).to_have_text("Change recorded.")
    shot(page, "connection")
    api = api_get(portal, f"/internet-on-demand/connections/{connection_id}")
    pending = api["pendingBandwidthChanges"]
    assert [p["bandwidth"] for p in pending] == ["500 Mbps"]
    stored = datetime.fromisoformat(pending[0]["effectiveDate"].replace("Z", "+00:00"))
    assert stored == when  # the same instant: 09:30 in Paris is 08:30 UTC in winter
    expect(timeline).to_contain_text("500 Mbps planned from")

    # Cancel it.
    page.get_by_role("button", name=re.compile(r"^Cancel the change to 500 Mbps")).click()
    expect(page.locator(".notice")).to_have_text("Change cancelled.")
    expect(page.locator("tbody tr").filter(has_text="500 Mbps").first).to_contain_text("cancelled")

    # Boost to 200 Mbps until an hour from now, then back to 1 Gbps by itself.
    form.get_by_label("New bandwidth", exact=True).select_option("200 Mbps")
    form.get_by_label("Boost until").check()
    form.get_by_label("Until (for a boost)", exact=True).fill(
        local_input(datetime.now(ZoneInfo(ZONE)) + timedelta(hours=1))
    )
    review_and_confirm(page)
    expect(page.locator("#current-bandwidth")).to_have_text("200 Mbps", timeout=60_000)
    expect(page.locator("tbody tr").filter(has_text="reverts a boost")).to_contain_text("1 Gbps")
    expect(timeline).to_contain_text("1 Gbps planned from")

    # The events feed shows what happened.
    nav(page, "Events").click()
    expect(page.locator("table")).to_contain_text("bandwidth_change.applied")
    shot(page, "events")

    # API clients: create, use the secret once shown, rotate, the old secret stops.
    nav(page, "API clients").click()
    page.get_by_label("Name", exact=True).fill("browser-robot")
    page.get_by_role("button", name="Create API client").click()
    client_id = page.locator("#client-id").inner_text()
    secret = page.locator("#client-secret").inner_text()
    shot(page, "api-clients")
    token = token_for(portal.url, client_id, secret)
    listed = httpx.get(
        f"{portal.url}/internet-on-demand/connections",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert connection_id in listed.text
    page.get_by_role("button", name=f"Rotate the secret of {client_id}").click()
    rotated = page.locator("#client-secret").inner_text()
    assert rotated != secret
    refused = httpx.post(
        f"{portal.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert refused.status_code == 401
    assert token_for(portal.url, client_id, rotated)
    page.goto("/portal/api-clients")  # the secret was shown once: not on the page any more
    assert rotated not in page.content() and "client-secret" not in page.content()

    nav(page, "Users").click()
    shot(page, "users")
    nav(page, "Connections").click()
    shot(page, "connections")

    # Sign out: back to the sign-in page, and the pages need a session again.
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in")
    page.goto(f"/portal/connections/{connection_id}")
    expect(page).to_have_url(re.compile(r"/portal/sign-in\?next="))
    # Signing in again lands on the page asked for.
    page.get_by_label("Email", exact=True).fill(portal.demo["portal_email"])
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Browser office")).to_be_visible()
    context.close()
    assert portal.console_errors == []


def ensure_a_connection(portal: Portal) -> None:
    """The customer has a connection to look at, whichever test of the module ran first."""
    if api_get(portal, "/internet-on-demand/connections")["connections"]:
        return
    token = token_for(portal.url, portal.demo["client_id"], portal.demo["client_secret"])
    made = httpx.post(
        portal.url + "/internet-on-demand/connections",
        json={"locationId": portal.demo["location_id"], "bandwidth": "100 Mbps"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert made.status_code == 201, made.text


def test_a_viewer_cannot_change_anything_even_by_forged_post(portal: Portal) -> None:
    ensure_a_connection(portal)
    made = iod(
        portal.env, "users", "create", "--customer", portal.demo["customer_id"],
        "--email", "viewer@demo.example", "--role", "viewer", "--url", portal.url, "--json",
    )  # fmt: skip
    link = json.loads(made.stdout)["sign_in_link"]
    context = portal.context()
    page = context.new_page()
    set_password(page, link)
    # Keyboard: the first Tab reaches the skip link, which leads to the main content.
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    expect(nav(page, "Order")).to_have_count(0)
    expect(nav(page, "API clients")).to_have_count(0)
    page.locator("tbody a").first.click()
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Review the change"))).to_have_count(0)
    connection_id = page.url.split("/portal/connections/")[1]
    before = api_get(portal, f"/internet-on-demand/connections/{connection_id}")
    # A forged POST with the viewer's own valid session and CSRF token: refused.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for path, form in [
        (f"/portal/connections/{connection_id}/bandwidth", {"bandwidth": "10 Mbps"}),
        (f"/portal/connections/{connection_id}/terminate", {}),
        ("/portal/api-clients", {"name": "sneaky"}),
    ]:
        answer = page.request.post(path, form={**form, "csrf": csrf or ""})
        assert answer.status == 403, (path, answer.status)
    after = api_get(portal, f"/internet-on-demand/connections/{connection_id}")
    assert after == before
    page.goto("/portal/api-clients")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    context.close()
    # The refused page itself is logged by Chromium as a 403 resource: that one is expected.
    refused = f"{portal.url}/portal/api-clients: Failed to load resource: the server responded"
    assert [e for e in portal.console_errors if not e.startswith(refused)] == []
    portal.console_errors.clear()


def test_csrf_and_session_fixation(portal: Portal) -> None:
    made = iod(
        portal.env, "users", "create", "--customer", portal.demo["customer_id"],
        "--email", "operator@demo.example", "--role", "operator", "--url", portal.url, "--json",
    )  # fmt: skip
    link = json.loads(made.stdout)["sign_in_link"]
    context = portal.context()
    page = context.new_page()
    set_password(page, link)
    page.get_by_role("button", name="Sign out", exact=True).click()
    # Fixation: an id planted in the browser before sign-in is not the one signed in.
    planted = "P" * 43
    context.add_cookies([{"name": "iod_portal", "value": planted, "url": portal.url + "/portal"}])
    page.get_by_label("Email", exact=True).fill("operator@demo.example")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r":\d+/portal/connections$"))
    issued = [c for c in context.cookies() if c["name"] == "iod_portal" and c["value"] != planted]
    assert len(issued) == 1 and issued[0]["httpOnly"] and issued[0]["sameSite"] == "Lax"
    attacker = portal.context()
    attacker.add_cookies([{"name": "iod_portal", "value": planted, "url": portal.url + "/portal"}])
    spy = attacker.new_page()
    spy.goto("/portal/connections")
    expect(spy).to_have_url(re.compile(r"/portal/sign-in"))
    attacker.close()
    # CSRF: a POST from this signed-in browser without the form's token, or with a stale
    # one, is refused and changes nothing.
    count = len(api_get(portal, "/internet-on-demand/connections")["connections"])
    form = {"locationId": portal.demo["location_id"], "bandwidth": "100 Mbps", "step": "confirm"}
    assert page.request.post("/portal/order", form=form).status == 403
    assert page.request.post("/portal/order", form={**form, "csrf": "0" * 43}).status == 403
    # Another site's page posting a form here: the session cookie (SameSite=Lax) is not
    # sent, and the Origin would be refused anyway.
    evil = context.new_page()
    evil.set_content(
        f'<form method="post" action="{portal.url}/portal/order">'
        + "".join(f'<input name="{k}" value="{v}">' for k, v in form.items())
        + '<button id="go">go</button></form>'
    )
    evil.click("#go")
    evil.wait_for_load_state()
    assert "/portal/connections/con_" not in evil.url
    assert len(api_get(portal, "/internet-on-demand/connections")["connections"]) == count
    context.close()
    portal.console_errors = [e for e in portal.console_errors if "about:blank" not in e]
    assert portal.console_errors == []
