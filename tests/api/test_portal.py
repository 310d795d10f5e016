"""The portal's security rules through the app (TestClient), on SQLite and PostgreSQL:
sign-in links and passwords, session rotation (fixation), CSRF, lockout, idle and absolute
expiry (frozen clock), roles checked on the server, and tenancy: another customer's
anything is a 404."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from functools import cache
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import Services
from iod.customers import service as customers
from iod.infra.clock import FrozenClock, rfc3339
from iod.infra.config import Settings
from iod.locations import catalog
from iod.models import AuditEvent, Client, PortalSession, PortalUser
from iod.portal import service as people
from iod.portal.endpoints import SESSION_COOKIE
from tests.conftest import counts, run_jobs

PASSWORD = "violet kestrel under 9 lanterns"


@cache
def password_hash() -> str:
    """argon2id with the lightest parameters (verification reads them from the hash): the
    same code path as the service's own hashes, in a millisecond instead of ~0.4 s."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        simulated_provision_seconds=0,
        simulated_change_seconds=0,
        job_backoff_seconds=0,
        client_cache_seconds=0,
        rate_limit_reads_per_second=0,
        rate_limit_writes_per_second=0,
        periodic_tasks=False,
        portal_max_failed_sign_ins=3,
        portal_lockout_seconds=600,
        portal_session_idle_seconds=300,
        portal_session_absolute_seconds=3600,
        portal_sign_ins_per_minute=0,
    )


def make_user(services: Services, customer_id: str, email: str, role: str) -> str:
    with services.db.write() as session:
        user = people.create_user(session, services.clock, customer_id, email, role)
        user.password_hash = password_hash()
        return user.id


def customer(services: Services, name: str) -> str:
    with services.db.write() as session:
        return customers.create_customer(session, services.clock, name).id


def browser(api: TestClient) -> TestClient:
    """A browser of its own (its own cookies) on the same app."""
    return TestClient(api.app, follow_redirects=False, raise_server_exceptions=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> TestClient:
    page = client.get("/portal/sign-in")
    response = client.post(
        "/portal/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": password},
    )
    assert response.status_code == 303, response.text
    return client


def signed_in(api: TestClient, services: Services, customer_id: str, role: str) -> TestClient:
    """A browser with a session made directly (no argon2 verification)."""
    email = f"{role}-{customer_id[-6:]}@example.com"
    user_id = make_user(services, customer_id, email, role)
    with services.db.write() as session:
        user = session.get(PortalUser, user_id)
        assert user is not None
        new = people.start_session(
            session,
            services.clock,
            services.secret_hasher,
            user,
            people.PortalPolicy.of(services.settings),
            "test",
        )
    client = browser(api)
    client.cookies.set(SESSION_COOKIE, new.session_id, domain="testserver.local", path="/portal")
    return client


def page_csrf(client: TestClient, path: str = "/portal/connections") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


def order(client: TestClient, bandwidth: str = "100 Mbps") -> str:
    token = page_csrf(client)
    response = client.post(
        "/portal/order",
        data={
            "csrf": token,
            "locationId": catalog.DEMO_LOCATION_ID,
            "bandwidth": bandwidth,
            "step": "confirm",
        },
    )
    assert response.status_code == 303, response.text
    found = re.search(r"/portal/connections/(con_\w+)", response.headers["location"])
    assert found
    return found.group(1)


def audit_actions(services: Services) -> list[str]:
    with services.db.read() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# Flows through the pages whose storage is plain rows: SQLite is enough (the argon2 hash
# of a new password costs a second on a busy machine); the rules with locks run on both.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_sign_in_link_sets_a_checked_password_once(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    policy = people.PortalPolicy.of(services.settings)
    with services.db.write() as session:
        user = people.create_user(session, services.clock, cid, "Ana@Example.com", "admin")
        token = people.issue_link(session, services.clock, services.secret_hasher, user, policy)
    client = browser(api)
    page = client.get(f"/portal/welcome?token={token}")
    assert page.status_code == 200 and "ana@example.com" in page.text
    form = {"csrf": csrf_of(page.text)}
    for password, pointer, message in [
        ("short", "/password", "at least 12 characters"),
        ("password123456", "/password", "commonly used password"),
        ("aaaaaaaaaaaaaaaa", "/password", "too easy to guess"),
        (PASSWORD, "/passwordAgain", "differ"),
    ]:
        again = password if pointer == "/password" else PASSWORD + "x"
        answer = client.post(
            f"/portal/welcome?token={token}",
            data={**form, "password": password, "passwordAgain": again},
        )
        assert answer.status_code == 400
        assert message in answer.text and f'id="err{pointer.replace("/", "-")}"' in answer.text
    with services.db.read() as session:
        assert session.scalars(select(PortalUser.password_hash)).one() is None
    done = client.post(
        f"/portal/welcome?token={token}",
        data={**form, "password": PASSWORD, "passwordAgain": PASSWORD},
    )
    assert done.status_code == 303 and done.headers["location"] == "/portal/connections"
    assert client.get("/portal/connections").status_code == 200  # signed in
    with services.db.read() as session:
        stored = session.scalars(select(PortalUser.password_hash)).one()
        assert stored is not None and stored.startswith("$argon2id$")
    # Used: the link is gone; the token itself is not in the database.
    assert browser(api).get(f"/portal/welcome?token={token}").status_code == 404
    assert "portal.password_set" in audit_actions(services)


def test_setting_the_password_uses_up_the_users_other_links(
    api: TestClient, services: Services
) -> None:
    """`make run` prints a new link at every start: once one of them set the password, an
    older one (still within its hour) must not set it again."""
    cid = customer(services, "Acme")
    policy = people.PortalPolicy.of(services.settings)
    with services.db.write() as session:
        user = people.create_user(session, services.clock, cid, "cy@example.com", "admin")
        other = people.create_user(session, services.clock, cid, "di@example.com", "viewer")
        older = people.issue_link(session, services.clock, services.secret_hasher, user, policy)
        newer = people.issue_link(session, services.clock, services.secret_hasher, user, policy)
        others = people.issue_link(session, services.clock, services.secret_hasher, other, policy)
    client = browser(api)
    page = client.get(f"/portal/welcome?token={newer}")
    assert page.status_code == 200
    done = client.post(
        f"/portal/welcome?token={newer}",
        data={"csrf": csrf_of(page.text), "password": PASSWORD, "passwordAgain": PASSWORD},
    )
    assert done.status_code == 303, done.text
    assert browser(api).get(f"/portal/welcome?token={older}").status_code == 404
    assert browser(api).get(f"/portal/welcome?token={others}").status_code == 200  # not theirs


def test_an_expired_link_is_refused(api: TestClient, services: Services) -> None:
    clock = services.clock
    assert isinstance(clock, FrozenClock)
    cid = customer(services, "Acme")
    with services.db.write() as session:
        user = people.create_user(session, clock, cid, "bo@example.com", "viewer")
        token = people.issue_link(
            session, clock, services.secret_hasher, user, people.PortalPolicy.of(services.settings)
        )
    clock.advance(timedelta(seconds=services.settings.portal_sign_in_link_seconds + 1))
    answer = browser(api).get(f"/portal/welcome?token={token}")
    assert answer.status_code == 404 and "expired" in answer.text


def test_sign_in_rotates_the_session_id_against_fixation(
    api: TestClient, services: Services
) -> None:
    cid = customer(services, "Acme")
    make_user(services, cid, "ana@example.com", "operator")
    planted = "A" * 43  # an id an attacker set in the victim's browser before sign-in
    client = browser(api)
    client.cookies.set(SESSION_COOKIE, planted, domain="testserver.local", path="/portal")
    sign_in(client, "ana@example.com")
    first = client.cookies.get(SESSION_COOKIE)
    assert first and first != planted
    attacker = browser(api)
    attacker.cookies.set(SESSION_COOKIE, planted, domain="testserver.local", path="/portal")
    assert attacker.get("/portal/connections").status_code == 303  # to the sign-in page
    # Signing in again replaces the session: the previous id no longer works.
    sign_in(client, "ana@example.com")
    second = client.cookies.get(SESSION_COOKIE)
    assert second and second != first
    old = browser(api)
    old.cookies.set(SESSION_COOKIE, first, domain="testserver.local", path="/portal")
    assert old.get("/portal/connections").status_code == 303
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(PortalSession)) == 1
    cookie = client.post(
        "/portal/sign-in",
        data={
            "csrf": csrf_of(client.get("/portal/sign-in").text),
            "email": "ana@example.com",
            "password": PASSWORD,
        },
    ).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/portal" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure:
    secure = TestClient(api.app, base_url="https://testserver", follow_redirects=False)
    form = {"csrf": csrf_of(secure.get("/portal/sign-in").text)}
    answer = secure.post(
        "/portal/sign-in", data={**form, "email": "ana@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]


def test_lockout_after_repeated_failures(api: TestClient, services: Services) -> None:
    clock = services.clock
    assert isinstance(clock, FrozenClock)
    cid = customer(services, "Acme")
    make_user(services, cid, "ana@example.com", "viewer")
    client = browser(api)
    token = csrf_of(client.get("/portal/sign-in").text)

    def attempt(password: str) -> int:
        data = {"csrf": token, "email": "ana@example.com", "password": password}
        return client.post("/portal/sign-in", data=data).status_code

    assert [attempt("wrong one"), attempt("wrong two"), attempt("wrong three")] == [400] * 3
    assert attempt(PASSWORD) == 429  # locked: even the right password is refused
    clock.advance(timedelta(seconds=601))
    assert attempt(PASSWORD) == 303
    actions = audit_actions(services)
    assert actions.count("portal.sign_in_failed") == 4
    assert "portal.locked" in actions and actions[-1] == "portal.signed_in"
    # An unknown address: the same answer as a wrong password, and audited.
    assert (
        client.post(
            "/portal/sign-in", data={"csrf": token, "email": "nobody@example.com", "password": "x"}
        ).status_code
        == 400
    )
    assert audit_actions(services)[-1] == "portal.sign_in_failed"


def test_sessions_expire_when_idle_and_absolutely(api: TestClient, services: Services) -> None:
    clock = services.clock
    assert isinstance(clock, FrozenClock)
    cid = customer(services, "Acme")
    client = signed_in(api, services, cid, "viewer")
    clock.advance(timedelta(seconds=299))
    assert client.get("/portal/connections").status_code == 200
    clock.advance(timedelta(seconds=299))  # used 299 s ago: still within the idle time
    assert client.get("/portal/connections").status_code == 200
    clock.advance(timedelta(seconds=301))
    answer = client.get("/portal/connections")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/portal/sign-in")
    # Absolute: used every few minutes, it still ends an hour after sign-in.
    client = signed_in(api, services, cid, "operator")
    for _ in range(14):
        clock.advance(timedelta(seconds=250))
        assert client.get("/portal/connections").status_code == 200
    clock.advance(timedelta(seconds=250))
    assert client.get("/portal/connections").status_code == 303


def test_every_form_needs_its_sessions_csrf_token(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    client = signed_in(api, services, cid, "admin")
    other = signed_in(api, services, cid, "operator")
    before = counts(services)
    form = {"locationId": catalog.DEMO_LOCATION_ID, "bandwidth": "100 Mbps", "step": "confirm"}
    missing = client.post("/portal/order", data=form)
    assert missing.status_code == 403 and "/problems/form-refused" in missing.text
    assert client.post("/portal/order", data={**form, "csrf": "x" * 43}).status_code == 403
    # Another session's token (even of the same customer) is not this one's.
    assert client.post("/portal/order", data={**form, "csrf": page_csrf(other)}).status_code == 403
    token = page_csrf(client)
    cross = client.post(
        "/portal/order",
        data={**form, "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert client.post("/portal/api-clients", data={"name": "x"}).status_code == 403
    assert client.post("/portal/sign-out-everywhere", data={}).status_code == 403
    # The sign-in form too (login CSRF): its token is bound to this browser's cookie.
    anonymous = browser(api)
    anonymous.get("/portal/sign-in")
    stranger = browser(api)
    stolen = csrf_of(stranger.get("/portal/sign-in").text)
    refused = anonymous.post(
        "/portal/sign-in", data={"csrf": stolen, "email": "a@example.com", "password": "x"}
    )
    assert refused.status_code == 403
    assert counts(services) == before
    assert client.post("/portal/order", data={**form, "csrf": token}).status_code == 303


def test_forms_are_strict(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    client = signed_in(api, services, cid, "operator")
    token = page_csrf(client)
    base = {"csrf": token, "locationId": catalog.DEMO_LOCATION_ID, "bandwidth": "100 Mbps"}
    unknown = client.post("/portal/order", data={**base, "bandwith": "1 Gbps"})
    assert unknown.status_code == 400 and "<code>/bandwith</code>: unknown field" in unknown.text
    twice = client.post(
        "/portal/order", content=f"csrf={token}&bandwidth=1+Gbps&bandwidth=10+Mbps",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert twice.status_code == 400 and "duplicate field" in twice.text
    bad_tier = client.post("/portal/order", data={**base, "bandwidth": "3 Mbps", "step": "confirm"})
    assert bad_tier.status_code == 400
    assert 'id="err-bandwidth"' in bad_tier.text and "not offered" in bad_tier.text


def test_a_viewer_cannot_change_anything(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    operator = signed_in(api, services, cid, "operator")
    con = order(operator)
    run_jobs(services)
    viewer = signed_in(api, services, cid, "viewer")
    token = page_csrf(viewer)
    page = viewer.get(f"/portal/connections/{con}")
    assert page.status_code == 200 and "Change bandwidth</button>" not in page.text
    before = counts(services), audit_actions(services)
    forged = [
        ("/portal/order", {"locationId": catalog.DEMO_LOCATION_ID, "bandwidth": "100 Mbps",
                           "step": "confirm"}),
        (f"/portal/connections/{con}/bandwidth", {"bandwidth": "1 Gbps", "when": "now"}),
        (f"/portal/connections/{con}/suspend", {}),
        (f"/portal/connections/{con}/terminate", {}),
        ("/portal/api-clients", {"name": "mine", "scopes": "read write"}),
        ("/portal/users", {"email": "x@example.com", "role": "admin"}),
    ]  # fmt: skip
    for path, data in forged:
        answer = viewer.post(path, data={**data, "csrf": token})
        assert answer.status_code == 403, (path, answer.text)
        assert "needs the" in answer.text and "/problems/insufficient-role" in answer.text
    assert viewer.get("/portal/api-clients").status_code == 403
    assert viewer.get("/portal/users").status_code == 403
    assert operator.get("/portal/users").status_code == 403
    assert (counts(services), audit_actions(services)) == before


def test_one_customers_user_never_sees_or_changes_anothers(
    api: TestClient, services: Services
) -> None:
    acme, globex = customer(services, "Acme"), customer(services, "Globex")
    theirs = signed_in(api, services, globex, "admin")
    con = order(theirs)
    run_jobs(services)
    token = page_csrf(theirs)
    answer = theirs.post(
        f"/portal/connections/{con}/bandwidth",
        data={"csrf": token, "bandwidth": "1 Gbps", "when": "at",
              "effectiveDate": "2030-02-01T10:00", "timeZone": "UTC"},
    )  # fmt: skip
    assert answer.status_code == 303
    changes = re.findall(
        r"/changes/(chg_\w+)/cancel", theirs.get(f"/portal/connections/{con}").text
    )
    assert changes
    with services.db.write() as session:
        client_id = customers.create_client(
            session, services.clock, globex, "read", hasher=services.secret_hasher
        ).client_id
        their_user = session.scalars(
            select(PortalUser.id).where(PortalUser.customer_id == globex)
        ).one()
    mine = signed_in(api, services, acme, "admin")
    token = page_csrf(mine)
    for path in (
        f"/portal/connections/{con}",
        f"/portal/connections/{con}/version",
    ):
        assert mine.get(path).status_code == 404, path
    listing = mine.get("/portal/connections?status=active")
    assert con not in listing.text
    assert con not in mine.get("/portal/events").text
    assert client_id not in mine.get("/portal/api-clients").text
    assert their_user not in mine.get("/portal/users").text
    before = counts(services), audit_actions(services)
    for path, data in [
        (f"/portal/connections/{con}/bandwidth", {"bandwidth": "10 Mbps", "when": "now"}),
        (f"/portal/connections/{con}/changes/{changes[0]}/cancel", {}),
        (f"/portal/connections/{con}/suspend", {}),
        (f"/portal/connections/{con}/terminate", {}),
        (f"/portal/api-clients/{client_id}/rotate", {"grace": "0"}),
        (f"/portal/api-clients/{client_id}/disable", {}),
        (f"/portal/users/{their_user}/role", {"role": "viewer"}),
        (f"/portal/users/{their_user}/disable", {}),
        (f"/portal/users/{their_user}/link", {}),
    ]:
        answer = mine.post(path, data={**data, "csrf": token})
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])
    assert (counts(services), audit_actions(services)) == before


def test_sign_out_and_sign_out_everywhere(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    make_user(services, cid, "ana@example.com", "viewer")
    laptop, phone, tablet = (sign_in(browser(api), "ana@example.com") for _ in range(3))
    answer = laptop.post("/portal/sign-out", data={"csrf": page_csrf(laptop)})
    assert answer.status_code == 303
    assert laptop.get("/portal/connections").status_code == 303
    assert phone.get("/portal/connections").status_code == 200
    phone.post("/portal/sign-out-everywhere", data={"csrf": page_csrf(phone)})
    assert phone.get("/portal/connections").status_code == 303
    assert tablet.get("/portal/connections").status_code == 303
    actions = audit_actions(services)
    assert actions.count("portal.signed_out") == 2 and actions.count("portal.signed_in") == 3


def test_expired_sessions_and_links_are_purged(api: TestClient, services: Services) -> None:
    clock = services.clock
    assert isinstance(clock, FrozenClock)
    cid = customer(services, "Acme")
    policy = people.PortalPolicy.of(services.settings)
    stale = signed_in(api, services, cid, "viewer")
    with services.db.write() as session:
        user = people.create_user(session, clock, cid, "new@example.com", "viewer")
        people.issue_link(session, clock, services.secret_hasher, user, policy)
    clock.advance(timedelta(seconds=200))
    fresh = signed_in(api, services, cid, "operator")
    clock.advance(timedelta(seconds=150))  # the first is idle for 350 s (> 300), not the other
    with services.db.write() as session:
        assert people.purge(session, clock.now(), policy) == 1
    clock.advance(timedelta(seconds=3600))  # the link (1 h) and the other session too
    with services.db.write() as session:
        assert people.purge(session, clock.now(), policy) == 2
    assert stale.get("/portal/connections").status_code == 303
    assert fresh.get("/portal/connections").status_code == 303


def test_a_time_zone_that_names_a_directory_or_no_file_is_a_400(
    api: TestClient, services: Services
) -> None:
    """`America` is a directory of the zone files, 300 characters no file name: the form's
    error page looked them up to show times and answered 500."""
    client = signed_in(api, services, customer(services, "Acme"), "operator")
    con = order(client)
    run_jobs(services)
    token = page_csrf(client)
    for zone in ("America", "Etc", "x" * 300, "../../etc/passwd", "localtime"):
        for step in ("review", "confirm"):
            answer = client.post(
                f"/portal/connections/{con}/bandwidth",
                data={"csrf": token, "bandwidth": "1 Gbps", "when": "at", "step": step,
                      "effectiveDate": "2030-02-01T10:00", "timeZone": zone},
            )  # fmt: skip
            assert answer.status_code == 400, (zone, step, answer.text[:300])
            assert 'id="err-timeZone" role="alert"' in answer.text, (zone, step)


def test_times_are_the_users_and_stored_in_utc() -> None:
    from datetime import UTC, datetime

    from iod.infra.errors import ValidationFailed
    from iod.portal import views

    winter = views.parse_local("2030-01-15T09:30", "Europe/Paris", "/effectiveDate")
    assert winter == datetime(2030, 1, 15, 8, 30, tzinfo=UTC)
    summer = views.parse_local("2030-07-15T09:30", "Europe/Paris", "/effectiveDate")
    assert summer == datetime(2030, 7, 15, 7, 30, tzinfo=UTC)
    assert views.local(summer, "America/Denver") == "2030-07-15 01:30 MDT"
    with pytest.raises(ValidationFailed) as bad:
        views.parse_local("tomorrow", "UTC", "/revertAt")
    assert bad.value.errors[0].pointer == "/revertAt"
    with pytest.raises(ValidationFailed) as long:  # a long value is clipped, and says so
        views.parse_local("x" * 300, "UTC", "/revertAt")
    assert long.value.errors[0].detail.startswith(repr("x" * 40 + "…") + " is not a date")
    with pytest.raises(ValidationFailed):
        views.check_zone("Mars/Olympus")
    # As the CLI's --at: a skipped wall time is refused, a repeated one is the first.
    with pytest.raises(ValidationFailed, match="clocks skip it") as skipped:
        views.parse_local("2027-03-14T02:30", "America/New_York", "/effectiveDate")
    assert skipped.value.errors[0].pointer == "/effectiveDate"
    repeated = views.parse_local("2027-11-07T01:30", "America/New_York", "/effectiveDate")
    assert repeated == datetime(2027, 11, 7, 5, 30, tzinfo=UTC), "01:30 EDT, the first"


# Flows through the pages whose storage is plain rows: SQLite is enough (the argon2 hash
# of a new password costs a second on a busy machine); the rules with locks run on both.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_admins_manage_users_and_api_clients(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    admin = signed_in(api, services, cid, "admin")
    token = page_csrf(admin, "/portal/users")
    invited = admin.post("/portal/users", data={"csrf": token, "email": "Eve@Example.com",
                                                "role": "operator"})  # fmt: skip
    assert invited.status_code == 201
    link = re.search(r'id="sign-in-link">[^<]*(/portal/welcome\?token=[\w-]+)<', invited.text)
    assert link, invited.text
    again = admin.post("/portal/users", data={"csrf": token, "email": "eve@example.com",
                                              "role": "viewer"})  # fmt: skip
    assert again.status_code == 400 and "already has a portal account" in again.text
    eve = browser(api)
    page = eve.get(link.group(1))
    done = eve.post(
        link.group(1),
        data={"csrf": csrf_of(page.text), "password": PASSWORD, "passwordAgain": PASSWORD},
    )
    assert done.status_code == 303 and eve.get("/portal/order").status_code == 200
    with services.db.read() as session:
        eve_id = session.scalars(
            select(PortalUser.id).where(PortalUser.email == "eve@example.com")
        ).one()
    assert admin.post(f"/portal/users/{eve_id}/role", data={"csrf": token, "role": "viewer"})
    assert eve.get("/portal/order").status_code == 403  # the role is read on every request
    admin.post(f"/portal/users/{eve_id}/disable", data={"csrf": token})
    assert eve.get("/portal/connections").status_code == 303  # her sessions ended
    # Nobody locks themselves out.
    with services.db.read() as session:
        admin_id = session.scalars(
            select(PortalUser.id).where(PortalUser.role == "admin", PortalUser.customer_id == cid)
        ).one()
    own = admin.post(f"/portal/users/{admin_id}/role", data={"csrf": token, "role": "viewer"})
    assert own.status_code == 400 and "from yourself" in own.text
    # API clients: created with its secret shown once; disabled, its secret stops working.
    created = admin.post("/portal/api-clients", data={"csrf": token, "name": "robot"})
    assert created.status_code == 201
    client_id = re.search(r'id="client-id">([^<]+)<', created.text)
    secret = re.search(r'id="client-secret">([^<]+)<', created.text)
    assert client_id and secret
    credentials = (client_id.group(1), secret.group(1))
    form = {"grant_type": "client_credentials"}
    assert api.post("/oauth2/token", data=form, auth=credentials).status_code == 200
    assert secret.group(1) not in admin.get("/portal/api-clients").text
    admin.post(f"/portal/api-clients/{client_id.group(1)}/disable", data={"csrf": token})
    assert api.post("/oauth2/token", data=form, auth=credentials).status_code == 401
    admin.post(f"/portal/api-clients/{client_id.group(1)}/enable", data={"csrf": token})
    assert api.post("/oauth2/token", data=form, auth=credentials).status_code == 200
    actions = audit_actions(services)
    for action in (
        "portal.created",
        "portal.link_issued",
        "portal.role_changed",
        "portal.disabled",
        "client.create",
        "client.disable",
        "client.enable",
    ):
        assert action in actions, action  # fmt: skip


@pytest.mark.parametrize("what", ["role", "disable"])
def test_two_admins_acting_on_each_other_at_once_leave_one_admin(
    api: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Each request read its admin's role with the session, before its write: two admins
    demoting (or disabling) each other at once both passed and left the customer with no
    admin at all (found against `make run`: both POSTs 303, both users viewers). The role
    is read again, locked, in the write: the second one is refused."""
    cid = customer(services, "Acme")
    first = signed_in(api, services, cid, "admin")
    with services.db.read() as session:
        first_id = session.scalars(select(PortalUser.id).where(PortalUser.customer_id == cid)).one()
    second_id = make_user(services, cid, "second@example.com", "admin")
    form = {"csrf": page_csrf(first, "/portal/users")}
    if what == "role":
        form["role"] = "viewer"
    resolve = people.resolve

    def second_acts_meanwhile(*args: object, **kwargs: object) -> people.CurrentUser | None:
        """The first admin's session is read; the second admin's request on the first
        commits before the first admin's write begins."""
        current = resolve(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(people, "resolve", resolve)
        with services.db.write() as session:
            second = session.get(PortalUser, second_id)
            assert second is not None
            acting = people.CurrentUser(second.id, cid, second.email, "admin", "UTC", "", "")
            if what == "role":
                people.set_role(session, services.clock, acting, first_id, "viewer")
            else:
                people.set_disabled(session, services.clock, acting, first_id, True)
        return current

    monkeypatch.setattr(people, "resolve", second_acts_meanwhile)
    answer = first.post(f"/portal/users/{second_id}/{what}", data=form)
    assert answer.status_code == 403, answer.text
    with services.db.read() as session:
        users = {u.id: u for u in session.scalars(select(PortalUser)).all()}
    assert users[second_id].role == "admin" and users[second_id].disabled_at is None


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_forged_cookies_and_tokens_cost_no_argon2(
    api: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SecretHasher.hash` takes anything not shaped like a generated secret for a person's
    password (argon2, ~0.4 s of CPU): a forged cookie or link must never get there."""
    import iod.auth.passwords

    def refuse(password: str) -> str:
        raise AssertionError("argon2 hash of a forged value")

    monkeypatch.setattr(iod.auth.passwords, "hash_password", refuse)
    client = browser(api)
    for value in ("x", "not-a-session-id!", "%" * 43, "A" * 500):
        client.cookies.set(SESSION_COOKIE, value, domain="testserver.local", path="/portal")
        assert client.get("/portal/connections").status_code == 303
        client.cookies.clear()
        assert client.get("/portal/welcome", params={"token": value}).status_code == 404
        client.cookies.set("iod_portal_pre", value, domain="testserver.local", path="/portal")
        assert client.get("/portal/sign-in").status_code == 200
        client.cookies.clear()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_connections_table_filters_and_pages(api: TestClient, services: Services) -> None:
    from iod.connections import service as connections
    from iod.connections.schemas import ConnectionRequest

    cid = customer(services, "Acme")
    viewer = signed_in(api, services, cid, "viewer")
    principal = people.CurrentUser("usr_x", cid, "", "operator", "UTC", "", "").principal
    with services.db.write() as session:
        for n in range(27):
            # Ids sort by their millisecond, then at random (docs/security.md: 96 random
            # bits): 2 ms apart, the table's order is the creation order.
            time.sleep(0.002)
            connections.create_connection(
                session, services.clock, principal,
                ConnectionRequest(bandwidth="10 Mbps", locationId=catalog.DEMO_LOCATION_ID,
                                  description=f"site {n:02d}"),
                services.policy,
            )  # fmt: skip
    first = viewer.get("/portal/connections")
    assert first.status_code == 200 and first.text.count("<tr>") == 1 + 25  # header + rows
    assert "site 00" in first.text and "site 25" not in first.text
    found = re.search(r'href="(/portal/connections\?cursor=con_\w+)" rel="next"', first.text)
    assert found
    second = viewer.get(found.group(1))
    assert second.text.count("<tr>") == 1 + 2 and "site 26" in second.text
    assert 'rel="next"' not in second.text and "First page" in second.text
    assert "site 00" not in viewer.get("/portal/connections?status=active").text  # provisioning
    assert "site 00" in viewer.get("/portal/connections?status=provisioning").text
    bad = viewer.get("/portal/connections?status=sleeping")
    assert bad.status_code == 400 and "<code>/status</code>" in bad.text
    assert viewer.get("/portal/connections?cursor=nope").status_code == 400


def test_the_connection_page_shows_the_latest_changes_only(
    api: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule makes thousands of changes over the years: the page lists the latest
    CHANGES_SHOWN and says how many older ones it leaves to the API."""
    from iod.connections import service as connections
    from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
    from iod.portal import endpoints as portal_endpoints

    monkeypatch.setattr(portal_endpoints, "CHANGES_SHOWN", 5)
    cid = customer(services, "Acme")
    viewer = signed_in(api, services, cid, "viewer")
    principal = people.CurrentUser("usr_x", cid, "", "operator", "UTC", "", "").principal
    with services.db.write() as session:
        made = connections.create_connection(
            session, services.clock, principal,
            ConnectionRequest(bandwidth="10 Mbps", locationId=catalog.DEMO_LOCATION_ID),
            services.policy,
        )  # fmt: skip
    run_jobs(services)
    for hours, mbps in enumerate((20, 50, 100, 200, 300, 500, 1000), start=1):
        with services.db.write() as session:
            at = rfc3339(services.clock.now() + timedelta(hours=hours))
            connections.update_bandwidth(
                session, services.clock, principal, made.id,
                BandwidthUpdate(bandwidth=f"{mbps} Mbps", effectiveDate=at), services.policy,
            )  # fmt: skip
    page = viewer.get(f"/portal/connections/{made.id}")
    assert page.status_code == 200
    table = page.text[page.text.index('id="changes-h"') :]
    assert table.count("<tr>") == 1 + 5  # header + the five latest
    assert "1 Gbps" in table and "2 older changes not shown" in table


def form_fields(html: str, action: str) -> dict[str, str]:
    """The hidden fields (csrf, once) of the form that posts to `action`."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}"[^>]*>(.*?)</form>', html, re.S)
    assert form, html[:1000]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))


def test_a_reloaded_form_does_not_act_twice(api: TestClient, services: Services) -> None:
    """Reloading the page a POST answered sends the same form again: the second time
    nothing is created or rotated (the secret shown first stays the one that works), and
    the page says why. A new form (a new page) acts again."""
    from iod.models import Client

    cid = customer(services, "Reloader")
    admin = signed_in(api, services, cid, "admin")
    page = admin.get("/portal/api-clients").text
    create = form_fields(page, "/portal/api-clients") | {"name": "robot"}
    assert set(create) == {"csrf", "once", "name"}
    first = admin.post("/portal/api-clients", data=create)
    assert first.status_code == 201
    client_id = re.search(r'id="client-id">([^<]+)<', first.text)
    assert client_id
    came_from = {"Referer": "http://testserver/portal/api-clients"}
    again = admin.post("/portal/api-clients", data=create, headers=came_from)
    assert again.status_code == 409 and "Nothing was done again" in again.text
    assert 'href="/portal/api-clients">Back to the page you came from' in again.text
    elsewhere = {"Referer": "https://evil.example/portal/api-clients"}
    other = admin.post("/portal/api-clients", data=create, headers=elsewhere)
    assert other.status_code == 409 and "Back to the page you came from" not in other.text
    with services.db.read() as session:
        names = session.scalars(select(Client.name).where(Client.customer_id == cid)).all()
    assert names.count("robot") == 1

    rotate_at = f"/portal/api-clients/{client_id.group(1)}/rotate"
    rotate = form_fields(admin.get("/portal/api-clients").text, rotate_at) | {"grace": "0"}
    rotated = admin.post(rotate_at, data=rotate)
    assert rotated.status_code == 200
    secret = re.search(r'id="client-secret">([^<]+)<', rotated.text)
    assert secret
    assert admin.post(rotate_at, data=rotate).status_code == 409
    credentials = (client_id.group(1), secret.group(1))
    form = {"grant_type": "client_credentials"}
    assert api.post("/oauth2/token", data=form, auth=credentials).status_code == 200
    # A form from a new page acts; a form value that is not one of ours is a 400.
    fresh = form_fields(admin.get("/portal/api-clients").text, "/portal/api-clients")
    assert admin.post("/portal/api-clients", data=fresh | {"name": "two"}).status_code == 201
    bad = fresh | {"name": "three", "once": "x"}
    assert admin.post("/portal/api-clients", data=bad).status_code == 400
    # A refused form (a 400) is not used up: corrected, the same form acts.
    form_page = form_fields(admin.get("/portal/api-clients").text, "/portal/api-clients")
    assert admin.post("/portal/api-clients", data=form_page | {"name": ""}).status_code == 400
    too_long = admin.post("/portal/api-clients", data=form_page | {"name": "n" * 256})
    assert too_long.status_code == 400 and "a name has 1 to 255 characters" in too_long.text
    assert admin.post("/portal/api-clients", data=form_page | {"name": "four"}).status_code == 201
    # The sign-in link of an invitation is shown once too.
    invite = form_fields(admin.get("/portal/users").text, "/portal/users")
    invite |= {"email": "once@example.com", "role": "viewer"}
    assert admin.post("/portal/users", data=invite).status_code == 201
    assert admin.post("/portal/users", data=invite).status_code == 409


def stored(services: Services) -> tuple[int, int, int]:
    """Rows in portal_users, clients and audit_events."""
    with services.db.read() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (PortalUser, Client, AuditEvent)
        )


# Control characters (a NUL PostgreSQL cannot store) and invisible format characters (U+202E,
# a right-to-left override; a zero-width space): what the API's text fields refuse.
BAD_TEXT = ["a\x00b", "a\x1bb", "a\u202eb", "a\u200bb"]


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_portal_text_fields_follow_the_apis_text_rule(
    api: TestClient, services: Services, bad: str
) -> None:
    cid = customer(services, "Acme")
    admin = signed_in(api, services, cid, "admin")
    before = stored(services)
    invite = form_fields(admin.get("/portal/users").text, "/portal/users")
    email = bad.replace("b", "") + "@b.example"
    refused = admin.post("/portal/users", data=invite | {"email": email, "role": "viewer"})
    assert refused.status_code == 400, refused.text
    assert "<code>/email</code>" in refused.text and "\x00" not in refused.text
    form = form_fields(admin.get("/portal/api-clients").text, "/portal/api-clients")
    named = admin.post("/portal/api-clients", data=form | {"name": bad})
    assert named.status_code == 400, named.text
    assert "<code>/name</code>" in named.text and "must not contain" in named.text
    # Signing in with such an address is refused before anything is looked up or audited.
    stranger = browser(api)
    page = stranger.get("/portal/sign-in")
    sign_in = stranger.post(
        "/portal/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": PASSWORD},
    )
    assert sign_in.status_code == 400, sign_in.text
    assert "\x00" not in sign_in.text
    assert stored(services) == before
    # The same forms still take ordinary text.
    ok = form_fields(admin.get("/portal/api-clients").text, "/portal/api-clients")
    assert admin.post("/portal/api-clients", data=ok | {"name": "Zoë's robot"}).status_code == 201


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_pages_never_output_control_characters(api: TestClient, services: Services) -> None:
    """A row stored before the forms refused them (SQLite took a NUL) is shown with U+FFFD."""
    cid = customer(services, "Acme")
    admin = signed_in(api, services, cid, "admin")
    user_id = make_user(services, cid, "old@b.example", "viewer")
    with services.db.write() as session:
        user = session.get(PortalUser, user_id)
        assert user is not None
        user.email = "old\x00@b.example"
    page = admin.get("/portal/users")
    assert page.status_code == 200
    assert "\x00" not in page.text and "old\ufffd@b.example" in page.text
