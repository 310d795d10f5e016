"""The portal's webhook endpoint and schedule pages through the app (TestClient), on SQLite
and PostgreSQL: what each role may do (checked on the server, also for forged POSTs), CSRF,
errors next to their field, the secret shown once, and tenancy: another customer's
endpoint, delivery or schedule is a 404 and nothing is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services
from iod.infra.config import Settings
from iod.models import AuditEvent, BandwidthChange, Schedule, WebhookDelivery, WebhookEndpoint
from tests.api import test_portal
from tests.api.test_portal import audit_actions, customer, order, page_csrf, signed_in
from tests.conftest import counts, run_jobs

# A receiver nobody listens on: attempts fail at once (connection refused), no DNS.
HOOK_URL = "https://127.0.0.1:9/iod"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The portal tests' settings, with loopback receivers allowed."""
    portal: Settings = test_portal.settings.__wrapped__(tmp_path)
    return portal.model_copy(
        update={"webhook_allow_networks": "127.0.0.0/8", "webhook_retry_schedule": "0,0"}
    )


SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def state(services: Services) -> Any:
    """Everything these pages can change, to compare before and after a refused request."""
    with services.db.read() as session:
        endpoints = session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.enabled, WebhookEndpoint.secret)
            .order_by(WebhookEndpoint.id)
        ).all()  # fmt: skip
        deliveries = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.generation, WebhookDelivery.status)
            .order_by(WebhookDelivery.id)
        ).all()  # fmt: skip
        schedules = session.execute(
            select(Schedule.id, Schedule.paused, Schedule.version).order_by(Schedule.id)
        ).all()
    return endpoints, deliveries, schedules, counts(services), audit_actions(services)


def create_endpoint(client: TestClient, **fields: str) -> tuple[str, str]:
    answer = client.post(
        "/portal/webhooks",
        data={"csrf": page_csrf(client, "/portal/webhooks"), "url": HOOK_URL, **fields},
    )
    assert answer.status_code == 201, answer.text
    endpoint_id = re.search(r'id="endpoint-id">(whe_\w+)<', answer.text)
    secret = SECRET.search(answer.text)
    assert endpoint_id and secret
    return endpoint_id.group(1), secret.group(0)


def deliveries_of(services: Services, endpoint_id: str) -> list[str]:
    with services.db.read() as session:
        return list(
            session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        )


def create_schedule(client: TestClient, con: str, **fields: str) -> Any:
    form = {
        "csrf": page_csrf(client, f"/portal/connections/{con}/schedule"),
        "timeZone": "America/New_York",
        "defaultBandwidth": "100 Mbps",
        "rules": "1 Gbps MO-FR 08:00-18:00\n\n500 Mbps weekends 10:00-16:00",
        **fields,
    }
    return client.post(f"/portal/connections/{con}/schedule/new", data=form)


def schedule_of(services: Services, con: str) -> Schedule | None:
    with services.db.read() as session:
        return session.scalars(select(Schedule).where(Schedule.connection_id == con)).first()


def world(api: TestClient, services: Services, cid: str) -> tuple[TestClient, str, str, str, str]:
    """An admin of the customer, its endpoint, a connection with a schedule, a delivery."""
    admin = signed_in(api, services, cid, "admin")
    endpoint_id, _ = create_endpoint(admin)
    con = order(admin)
    run_jobs(services)
    assert create_schedule(admin, con).status_code == 303
    schedule = schedule_of(services, con)
    assert schedule is not None
    return admin, endpoint_id, con, schedule.id, deliveries_of(services, endpoint_id)[0]


def test_an_admin_manages_webhook_endpoints_and_resends(
    api: TestClient, services: Services
) -> None:
    cid = customer(services, "Acme")
    admin = signed_in(api, services, cid, "admin")
    # Bad input: the API's messages, next to their field.
    token = page_csrf(admin, "/portal/webhooks")
    for data, pointer, message in [
        ({"url": "ftp://hooks.example.com/x"}, "/url", "https://"),
        ({"url": "https://10.1.2.3/x"}, "/url", "10.1.2.3"),
        ({"url": HOOK_URL, "eventTypes": "connection. conection.activated"}, "/eventTypes",
         "entry 1 must be an event type"),  # the API's words: entries count from 0
    ]:  # fmt: skip
        answer = admin.post("/portal/webhooks", data={"csrf": token, **data})
        assert answer.status_code == 400, answer.text
        shown = re.search(rf'id="err{pointer.replace("/", "-")}"[^>]*>([^<]*)<', answer.text)
        assert message in shown.group(1), (pointer, answer.text[-3000:])
        assert 'aria-invalid="true"' in answer.text
    assert state(services)[0] == []

    endpoint_id, secret = create_endpoint(
        admin, eventTypes="connection., bandwidth_change.applied", description="office"
    )
    listing = admin.get("/portal/webhooks")
    assert endpoint_id in listing.text and HOOK_URL in listing.text and "office" in listing.text
    assert secret not in listing.text and "whsec_" not in listing.text  # shown once
    assert listing.headers["cache-control"] == "no-store"

    # An event the endpoint subscribes to makes a delivery: it is listed, and can be resent.
    con = order(admin)
    run_jobs(services)  # activated: deliveries made, their attempts failed (no such host)
    made = deliveries_of(services, endpoint_id)
    assert made
    page = admin.get(f"/portal/webhooks/{endpoint_id}")
    assert page.status_code == 200 and "connection.activated" in page.text
    assert all(d in page.text for d in made) and secret not in page.text
    assert f"Attempts of {made[0]}" in page.text and "ms: " in page.text  # refused at once
    with services.db.read() as session:
        before = session.get(WebhookDelivery, made[0])
        assert before is not None
        generation = before.generation
    answer = admin.post(
        f"/portal/webhooks/{endpoint_id}/deliveries/{made[0]}/retry",
        data={"csrf": page_csrf(admin, f"/portal/webhooks/{endpoint_id}")},
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("notice=resent")
    with services.db.read() as session:
        after = session.get(WebhookDelivery, made[0])
        assert after is not None and after.generation == generation + 1
    assert admin.get(f"/portal/webhooks/{endpoint_id}?status=failed").status_code == 200
    bad = admin.get(f"/portal/webhooks/{endpoint_id}?status=lost")
    assert bad.status_code == 400 and "/status" in bad.text
    bad = admin.get(f"/portal/webhooks/{endpoint_id}?cursor=x' OR 1=1")
    assert bad.status_code == 400 and "/cursor" in bad.text

    # Disable: a resend is refused (409) on the page; enable again.
    token = page_csrf(admin, f"/portal/webhooks/{endpoint_id}")
    assert admin.post(f"/portal/webhooks/{endpoint_id}/disable", data={"csrf": token}).is_redirect
    refused = admin.post(
        f"/portal/webhooks/{endpoint_id}/deliveries/{made[0]}/retry", data={"csrf": token}
    )
    assert refused.status_code == 409 and "disabled" in refused.text
    assert 'id="endpoint-state">disabled' in refused.text
    assert admin.post(f"/portal/webhooks/{endpoint_id}/enable", data={"csrf": token}).is_redirect
    assert 'id="endpoint-state">enabled' in admin.get(f"/portal/webhooks/{endpoint_id}").text

    # Rotate: a new secret, shown once on the answer.
    rotated = admin.post(f"/portal/webhooks/{endpoint_id}/rotate", data={"csrf": token})
    assert rotated.status_code == 200
    new = SECRET.search(rotated.text)
    assert new and new.group(0) != secret
    assert "whsec_" not in admin.get(f"/portal/webhooks/{endpoint_id}").text

    # Delete: gone, with its deliveries.
    gone = admin.post(f"/portal/webhooks/{endpoint_id}/delete", data={"csrf": token})
    assert gone.status_code == 303 and gone.headers["location"] == "/portal/webhooks?notice=deleted"
    assert admin.get(f"/portal/webhooks/{endpoint_id}").status_code == 404
    assert deliveries_of(services, endpoint_id) == []
    assert con


def test_an_operator_manages_a_connections_schedule(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    operator = signed_in(api, services, cid, "operator")
    con = order(operator)
    run_jobs(services)
    page = operator.get(f"/portal/connections/{con}/schedule")
    assert page.status_code == 200 and "has no schedule" in page.text
    assert f"/portal/connections/{con}/schedule" in operator.get(f"/portal/connections/{con}").text

    # Errors next to their field: a rule the grammar does not read, a tier not offered, a
    # zone that does not exist; nothing is written.
    before = state(services)
    for fields, pointer, message in [
        ({"rules": "1 Gbps MO-FR 08:00-18:00\n1 Gbps someday 08:00"}, "/rules", "rule 2:"),
        ({"rules": "7 Gbps daily 08:00-09:00"}, "/rules", "rule 1 bandwidth: 7 Gbps is not"),
        ({"rules": "1 Gbps XX 08:00-09:00"}, "/rules", "is not a day"),
        ({"rules": "1 Gbps daily 08:00-08:00"}, "/rules", "must differ from start"),
        ({"timeZone": "Mars/Olympus"}, "/timeZone", "not an IANA time zone"),
        ({"defaultBandwidth": "3 Mbps"}, "/defaultBandwidth", "not offered"),
    ]:
        answer = create_schedule(operator, con, **fields)
        assert answer.status_code == 400, (fields, answer.text[-2000:])
        shown = re.search(rf'id="err{pointer.replace("/", "-")}"[^>]*>([^<]*)<', answer.text)
        assert shown and message in shown.group(1).replace("&#39;", "'"), (fields, answer.text)
        kept = fields.get("rules", fields.get("timeZone", ""))
        assert kept.split("\n")[0] in answer.text  # the form keeps what was typed
    assert state(services) == before

    answer = create_schedule(operator, con, description="office hours")
    assert answer.status_code == 303, answer.text
    schedule = schedule_of(services, con)
    assert schedule is not None and not schedule.paused
    assert [r["recurrence"] for r in schedule.rules] == [
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
        "FREQ=WEEKLY;BYDAY=SA,SU",
    ]
    assert schedule.time_zone == "America/New_York" and schedule.created_by.startswith("usr_")
    page = operator.get(f"/portal/connections/{con}/schedule")
    assert 'id="schedule-state">active' in page.text and "office hours" in page.text
    assert "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR" in page.text
    # The next 7 days hold transitions to 1 Gbps (weekdays) and 500 Mbps (the weekend).
    table = page.text.split('id="next-h"')[1]
    assert "1 Gbps" in table and "500 Mbps" in table and "100 Mbps" in table
    assert create_schedule(operator, con).status_code == 409  # one a connection

    # Pause: its planned changes are cancelled; resume plans them again; delete.
    token = page_csrf(operator, f"/portal/connections/{con}/schedule")
    base = f"/portal/connections/{con}/schedule/{schedule.id}"
    assert operator.post(f"{base}/pause", data={"csrf": token}).status_code == 303
    with services.db.read() as session:
        planned = session.scalars(
            select(BandwidthChange.status).where(BandwidthChange.schedule_id == schedule.id)
        ).all()
        assert "scheduled" not in planned
    page = operator.get(f"/portal/connections/{con}/schedule")
    assert 'id="schedule-state">paused' in page.text and "Resume the schedule" in page.text
    assert operator.post(f"{base}/resume", data={"csrf": token}).status_code == 303
    resumed = schedule_of(services, con)
    assert resumed is not None and not resumed.paused
    assert operator.post(f"{base}/delete", data={"csrf": token}).status_code == 303
    assert schedule_of(services, con) is None
    with services.db.read() as session:  # audited as the user's doing, like the API's
        audited = session.execute(
            select(AuditEvent.action, AuditEvent.actor_type, AuditEvent.actor_id)
            .where(AuditEvent.action.startswith("schedule."))
            .order_by(AuditEvent.id)
        ).all()  # fmt: skip
    assert [a for a, _, _ in audited] == [
        "schedule.create", "schedule.update", "schedule.update", "schedule.delete"
    ]  # fmt: skip
    assert {(t, i) for _, t, i in audited} == {("user", schedule.created_by)}
    assert operator.post(f"{base}/pause", data={"csrf": token}).status_code == 404


def test_roles_are_checked_on_the_server_even_for_forged_posts(
    api: TestClient, services: Services
) -> None:
    cid = customer(services, "Acme")
    _, endpoint_id, con, schedule_id, delivery = world(api, services, cid)
    viewer = signed_in(api, services, cid, "viewer")
    operator = signed_in(api, services, cid, "operator")
    # Reading is for every role, without the forms of what the role may not do.
    for client in (viewer, operator):
        listing = client.get("/portal/webhooks")
        assert listing.status_code == 200 and endpoint_id in listing.text
        assert "Create webhook endpoint" not in listing.text
        detail = client.get(f"/portal/webhooks/{endpoint_id}")
        assert detail.status_code == 200 and delivery in detail.text
        assert "Resend" not in detail.text and "Rotate secret" not in detail.text
    page = viewer.get(f"/portal/connections/{con}/schedule")
    assert page.status_code == 200 and "Pause the schedule" not in page.text
    assert "Pause the schedule" in operator.get(f"/portal/connections/{con}/schedule").text
    before = state(services)
    hooks = [
        ("/portal/webhooks", {"url": HOOK_URL}),
        (f"/portal/webhooks/{endpoint_id}/disable", {}),
        (f"/portal/webhooks/{endpoint_id}/rotate", {}),
        (f"/portal/webhooks/{endpoint_id}/delete", {}),
        (f"/portal/webhooks/{endpoint_id}/deliveries/{delivery}/retry", {}),
    ]
    base = f"/portal/connections/{con}/schedule"
    plans = [
        (f"{base}/new", {"timeZone": "UTC", "defaultBandwidth": "100 Mbps"}),
        (f"{base}/{schedule_id}/pause", {}),
        (f"{base}/{schedule_id}/delete", {}),
    ]
    for client, forged in [(viewer, hooks + plans), (operator, hooks)]:
        token = page_csrf(client)
        for path, data in forged:
            answer = client.post(path, data={**data, "csrf": token})
            assert answer.status_code == 403, (path, answer.text[:300])
            assert "needs the" in answer.text
    assert state(services) == before


def test_csrf_guards_every_new_form(api: TestClient, services: Services) -> None:
    cid = customer(services, "Acme")
    admin, endpoint_id, con, schedule_id, _ = world(api, services, cid)
    other = signed_in(api, services, cid, "operator")  # another session's token
    before = state(services)
    base = f"/portal/connections/{con}/schedule"
    for path, data in [
        ("/portal/webhooks", {"url": HOOK_URL}),
        (f"/portal/webhooks/{endpoint_id}/rotate", {}),
        (f"/portal/webhooks/{endpoint_id}/delete", {}),
        (f"{base}/{schedule_id}/pause", {}),
        (f"{base}/{schedule_id}/delete", {}),
    ]:
        for token in (None, "0" * 43, page_csrf(other)):
            form = data if token is None else {**data, "csrf": token}
            answer = admin.post(path, data=form)
            assert answer.status_code == 403, (path, token, answer.text[:300])
        evil = admin.post(
            path,
            data={**data, "csrf": page_csrf(admin)},
            headers={"Origin": "https://evil.example"},
        )
        assert evil.status_code == 403 and "another site" in evil.text
    assert state(services) == before


def test_another_customers_endpoints_deliveries_and_schedules_are_404(
    api: TestClient, services: Services
) -> None:
    acme, globex = customer(services, "Acme"), customer(services, "Globex")
    _, endpoint_id, con, schedule_id, delivery = world(api, services, globex)
    mine = signed_in(api, services, acme, "admin")
    my_endpoint, _ = create_endpoint(mine)
    my_con = order(mine)
    run_jobs(services)
    assert endpoint_id not in mine.get("/portal/webhooks").text
    for path in (
        f"/portal/webhooks/{endpoint_id}",
        f"/portal/connections/{con}/schedule",
        "/portal/webhooks/whe_nothing",
    ):
        assert mine.get(path).status_code == 404, path
    before = state(services)
    token = page_csrf(mine)
    base = f"/portal/connections/{con}/schedule"
    for path, data in [
        (f"/portal/webhooks/{endpoint_id}/disable", {}),
        (f"/portal/webhooks/{endpoint_id}/rotate", {}),
        (f"/portal/webhooks/{endpoint_id}/delete", {}),
        (f"/portal/webhooks/{endpoint_id}/deliveries/{delivery}/retry", {}),
        # Their delivery under my own endpoint; their schedule under my own connection.
        (f"/portal/webhooks/{my_endpoint}/deliveries/{delivery}/retry", {}),
        (f"/portal/connections/{my_con}/schedule/{schedule_id}/pause", {}),
        (f"{base}/new", {"timeZone": "UTC", "defaultBandwidth": "100 Mbps"}),
        (f"{base}/{schedule_id}/pause", {}),
        (f"{base}/{schedule_id}/resume", {}),
        (f"{base}/{schedule_id}/delete", {}),
    ]:
        answer = mine.post(path, data={**data, "csrf": token})
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])
    assert state(services) == before


def test_a_reloaded_webhook_form_does_not_act_twice(api: TestClient, services: Services) -> None:
    """Creating an endpoint and rotating its secret show the secret once: sending the same
    form again (a reload) makes no second endpoint and no second secret."""
    from tests.api.test_portal import form_fields

    admin = signed_in(api, services, customer(services, "Hooks reload"), "admin")
    create = form_fields(admin.get("/portal/webhooks").text, "/portal/webhooks")
    create |= {"url": HOOK_URL, "eventTypes": "connection."}
    assert admin.post("/portal/webhooks", data=create).status_code == 201
    before = state(services)
    again = admin.post("/portal/webhooks", data=create)
    assert again.status_code == 409 and "Nothing was done again" in again.text
    assert state(services)[0] == before[0]
    endpoint_id = before[0][0].id
    at = f"/portal/webhooks/{endpoint_id}/rotate"
    rotate = form_fields(admin.get(f"/portal/webhooks/{endpoint_id}").text, at)
    assert admin.post(at, data=rotate).status_code == 200
    rotated = state(services)[0]
    assert rotated != before[0]
    assert admin.post(at, data=rotate).status_code == 409
    assert state(services)[0] == rotated
