"""Webhook endpoints and deliveries through the real ASGI app and worker, on SQLite and
PostgreSQL, delivering to a real local receiver (tests/webhook_receiver.py)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook

from iod.app import Services
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.models import Job, WebhookDelivery
from tests.conftest import Tenant, get_token, run_jobs
from tests.webhook_receiver import Receiver, serve

HOOKS = "/internet-on-demand/webhook-endpoints"
BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


@pytest.fixture
def clock() -> FrozenClock:
    # Real time: the reference verifier refuses timestamps 5 minutes away from now.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allow_networks": "127.0.0.0/8",
            "webhook_retry_schedule": "0,0,0",
            "webhook_timeout_seconds": 2,
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve() as receiver:
        yield receiver


def create_hook(
    api: TestClient, headers: dict[str, str], url: str, **fields: object
) -> dict[str, object]:
    response = api.post(HOOKS, json={"url": url, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def order(api: TestClient, headers: dict[str, str]) -> str:
    response = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def verify(received: object, secret: str) -> dict[str, object]:
    """Checked by the reference implementation (standardwebhooks on PyPI)."""
    payload: dict[str, object] = Webhook(secret).verify(
        received.body,  # type: ignore[attr-defined]
        received.headers,  # type: ignore[attr-defined]
    )
    return payload


def _delivery_of(api: TestClient, headers: dict[str, str], hook: dict[str, object]) -> Any:
    (delivery,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"]
    return delivery


def _eventually(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_crud_secret_once_and_signed_deliveries(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection."], description="ops")
    secret = str(hook["secret"])
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    got = api.get(f"{HOOKS}/{hook['id']}", headers=headers).json()
    assert "secret" not in got and got["eventTypes"] == ["connection."]
    listed = api.get(HOOKS, headers=headers).json()["webhookEndpoints"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

    connection = order(api, headers)
    api.put(f"{BASE}/{connection}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers)
    run_jobs(services)
    received = receiver.wait_for(2)
    types = [json.loads(r.body)["type"] for r in received]
    # Only connection.* (the filter): bandwidth_change.* events are not sent.
    assert sorted(types) == ["connection.activated", "connection.ordered"]
    for item in received:
        payload = verify(item, secret)
        assert payload["data"]["connectionId"] == connection  # type: ignore[index]
        assert item.headers["webhook-id"].startswith("msg_")
    deliveries = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()
    assert {d["status"] for d in deliveries["deliveries"]} == {"succeeded"}
    assert deliveries["deliveries"][0]["attempts"][0]["statusCode"] == 204

    patched = api.patch(
        f"{HOOKS}/{hook['id']}", json={"enabled": False, "description": None}, headers=headers
    )
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert "description" not in patched.json()
    assert api.delete(f"{HOOKS}/{hook['id']}", headers=headers).status_code == 204
    assert api.get(f"{HOOKS}/{hook['id']}", headers=headers).status_code == 404


def test_receiver_failures_are_retried_with_the_same_webhook_id(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.answers = [500, 503]
    order(api, headers)
    run_jobs(services)
    received = receiver.wait_for(3)
    assert len(received) == 3
    assert len({r.headers["webhook-id"] for r in received}) == 1
    (delivery,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"]
    assert delivery["status"] == "succeeded" and delivery["attemptCount"] == 3
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 503, 204]

    # A manual retry: one more attempt now, the same webhook-id.
    retried = api.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery['id']}/retry", headers=headers)
    assert retried.status_code == 202, retried.text
    run_jobs(services)
    assert receiver.wait_for(4)[-1].headers["webhook-id"] == delivery["id"]


def test_gives_up_after_the_schedule_and_410_disables(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    receiver: Receiver,
    tenant: Tenant,
) -> None:
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.default = 500
    order(api, headers)
    run_jobs(services)
    assert len(receiver.wait_for(3)) == 3  # the schedule has three entries
    (delivery,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"]
    assert delivery["status"] == "failed" and "gave up after 3 attempts" in delivery["lastError"]

    receiver.default = 410
    order(api, headers)
    run_jobs(services)
    endpoint = api.get(f"{HOOKS}/{hook['id']}", headers=headers).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabledReason"]
    feed = api.get("/internet-on-demand/events?type=webhook_endpoint.", headers=headers).json()
    (event,) = feed["events"]
    assert event["type"] == "webhook_endpoint.disabled"
    assert event["data"]["webhookEndpointId"] == hook["id"]
    # Disabled: a retry is refused until it is enabled again.
    retry = api.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery['id']}/retry", headers=headers)
    assert retry.status_code == 409
    problem = retry.json()
    assert problem["type"] == "/problems/webhook-endpoint-disabled"
    assert problem["title"] == "The webhook endpoint is disabled"
    described = api.get(problem["type"])
    assert described.status_code == 200 and "PATCH" in described.json()["description"]


def test_a_batch_changes_its_endpoints_in_id_order(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """One batch fails at two endpoints: the older one's first attempt (failing_since set)
    and a 410 from the newer one (disabled). Their UPDATEs run in endpoint-id order, whatever
    the order the deliveries were met: two workers' batches then cannot take the endpoints'
    row locks in opposite orders and deadlock (the endpoints are only FOR KEY SHARE locked
    until these writes)."""
    from sqlalchemy import event

    with serve() as failing, serve() as gone:
        failing.default, gone.default = 500, 410
        older = create_hook(api, headers, failing.url, eventTypes=["connection.ordered"])
        time.sleep(0.002)  # ids sort by their millisecond first
        newer = create_hook(api, headers, gone.url, eventTypes=["connection.ordered"])
        assert str(older["id"]) < str(newer["id"])
        updated: list[str] = []

        def seen(conn: object, cursor: object, statement: str, params: object, *_: object) -> None:
            if statement.lstrip().upper().startswith("UPDATE WEBHOOK_ENDPOINTS"):
                text = str(params)
                updated.extend(h for h in (str(older["id"]), str(newer["id"])) if h in text)

        engine = services.db.engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            order(api, headers)
            run_jobs(services)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert set(updated) == {older["id"], newer["id"]}, updated
    assert updated == sorted(updated), updated
    endpoint = api.get(f"{HOOKS}/{newer['id']}", headers=headers).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabledReason"]
    assert api.get(f"{HOOKS}/{older['id']}", headers=headers).json()["enabled"] is True


def test_failing_for_days_disables_the_endpoint(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    receiver: Receiver,
    clock: FrozenClock,
) -> None:
    services.settings = services.settings.model_copy(
        update={"webhook_retry_schedule": "0,3600,3600,3600", "webhook_disable_after_seconds": 7200}
    )
    worker = services.worker()
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.default = 503
    order(api, headers)
    worker.run_until_idle()
    for _ in range(3):
        clock.advance(timedelta(seconds=3600 * 1.3))
        worker.run_until_idle()
    endpoint = api.get(f"{HOOKS}/{hook['id']}", headers=headers).json()
    assert endpoint["enabled"] is False
    assert "failed for" in endpoint["disabledReason"]


def test_rotation_signs_with_both_secrets(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    rotated = api.post(f"{HOOKS}/{hook['id']}/rotate-secret", headers=headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"] != hook["secret"] and "previousSecretExpiresAt" in new
    order(api, headers)
    run_jobs(services)
    (item,) = receiver.wait_for(1)
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    verify(item, str(hook["secret"]))
    verify(item, str(new["secret"]))


def test_nothing_for_a_rolled_back_transaction(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver, tenant: Tenant
) -> None:
    from iod import events

    create_hook(api, headers, receiver.url)
    with pytest.raises(RuntimeError), services.db.write() as session:
        events.record(
            session,
            "connection.activated",
            customer_id=tenant.customer_id,
            subject_id="con_x",
            at=services.clock.now(),
            connectionId="con_x",
        )
        session.flush()
        raise RuntimeError("rolled back")
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_bad_bodies_are_400_with_a_pointer(
    api: TestClient, headers: dict[str, str], receiver: Receiver, services: Services
) -> None:
    def problem(body: object, raw: bytes | None = None) -> tuple[int, list[str]]:
        if raw is not None:
            response = api.post(
                HOOKS, content=raw, headers={**headers, "Content-Type": "application/json"}
            )
        else:
            response = api.post(HOOKS, json=body, headers=headers)
        pointers = [e["pointer"] for e in response.json().get("errors", [])]
        return response.status_code, pointers

    assert problem({"url": receiver.url, "eventtypes": []}) == (400, ["/eventtypes"])
    raw = f'{{"url": "{receiver.url}", "url": "{receiver.url}"}}'.encode()
    assert problem(None, raw)[0] == 400
    for url in (
        "https://10.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:10.1.2.3]/x",
        "https://[fd00:ec2::254]/x",
        "https://user:pw@example.com/x",
        "ftp://example.com/x",
    ):
        assert problem({"url": url}) == (400, ["/url"]), url
    assert problem({"url": receiver.url, "eventTypes": ["conection."]})[1][0].startswith(
        "/eventTypes"
    )
    assert problem({"url": receiver.url, "eventTypes": ["BAD TYPE"]})[0] == 400
    services.settings = services.settings.model_copy(update={"webhook_allow_http": False})
    assert problem({"url": receiver.url}) == (400, ["/url"])


def test_tenancy_and_scopes(
    api: TestClient,
    headers: dict[str, str],
    make_tenant,  # type: ignore[no-untyped-def]
    receiver: Receiver,
    services: Services,
) -> None:
    hook = create_hook(api, headers, receiver.url)
    order(api, headers)
    run_jobs(services)
    delivery = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"][0]
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    path = f"{HOOKS}/{hook['id']}"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"enabled": False}),
        ("DELETE", path, None),
        ("POST", f"{path}/rotate-secret", None),
        ("GET", f"{path}/deliveries", None),
        ("POST", f"{path}/deliveries/{delivery['id']}/retry", None),
    ]:
        response = api.request(method, url, json=body, headers=other)
        assert response.status_code == 404, (method, url, response.text)
    assert api.get(HOOKS, headers=other).json()["webhookEndpoints"] == []

    reader = make_tenant(scopes="read", name="Reader")
    read_only = {"Authorization": f"Bearer {get_token(api, reader)}"}
    assert api.get(HOOKS, headers=read_only).status_code == 200
    assert api.post(HOOKS, json={"url": receiver.url}, headers=read_only).status_code == 403


def test_finished_deliveries_are_pruned_with_the_events(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    receiver: Receiver,
    clock: FrozenClock,
) -> None:
    from iod.jobs.registry import JobRef, TaskContext
    from iod.webhooks import tasks

    create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.default = 500
    order(api, headers)  # its delivery fails three times: failed
    receiver.default = 204
    run_jobs(services)
    services.settings = services.settings.model_copy(update={"webhook_retry_schedule": "0,3600"})
    order(api, headers)  # delivered
    run_jobs(services)
    receiver.default = 500
    order(api, headers)  # its first attempt fails, the next is an hour away: pending
    run_jobs(services)
    clock.advance(timedelta(days=services.settings.events_retention_days, seconds=1))
    ctx = TaskContext(services.clock, services.settings, services.driver)
    with services.db.write() as session:
        tasks.prune(session, JobRef(0, "retention.webhook_deliveries", None, None, 1, 1), ctx)
    with services.db.read() as session:
        left = session.scalars(select(WebhookDelivery.status)).all()
    assert left == ["pending"]


def test_endpoint_changes_are_audited_without_secrets(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    receiver: Receiver,
    tenant: Tenant,
) -> None:
    from iod.audit import service as audit

    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    hook_id = str(hook["id"])
    patched = api.patch(
        f"{HOOKS}/{hook_id}",
        json={"description": "ops", "eventTypes": ["connection.ordered", "webhook_endpoint."]},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    rotated = api.post(f"{HOOKS}/{hook_id}/rotate-secret", headers=headers).json()
    order(api, headers)
    run_jobs(services)
    (delivery,) = api.get(f"{HOOKS}/{hook_id}/deliveries", headers=headers).json()["deliveries"]
    retried = api.post(f"{HOOKS}/{hook_id}/deliveries/{delivery['id']}/retry", headers=headers)
    assert retried.status_code == 202, retried.text
    # A refused change (another customer's endpoint: 404) records nothing.
    assert api.delete(f"{HOOKS}/whe_{'0' * 29}", headers=headers).status_code == 404
    assert api.delete(f"{HOOKS}/{hook_id}", headers=headers).status_code == 204

    with services.db.read() as session:
        rows = [audit.to_dict(r) for r in audit.query(session, target_id=hook_id)]
    rows.sort(key=lambda r: r["id"])
    assert [r["action"] for r in rows] == [
        "webhook_endpoint.create",
        "webhook_endpoint.update",
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint.retry",
        "webhook_endpoint.delete",
    ]
    for row in rows:
        assert row["actorType"] == "client" and row["actor"] == tenant.client_id
        assert row["targetType"] == "webhook_endpoint" and row["target"] == hook_id
        assert row["customerId"] == tenant.customer_id and row["requestId"]
        text = json.dumps(row["details"])
        assert "whsec_" not in text and "secret" not in row["details"]
        for secret in (hook["secret"], rotated["secret"]):
            assert str(secret)[6:] not in text
    create, update, rotate, retry, delete = (r["details"] for r in rows)
    assert create["url"] == receiver.url and create["eventTypes"] == ["connection.ordered"]
    assert update == {"changed": ["description", "eventTypes"], "description": "ops",
                      "eventTypes": ["connection.ordered", "webhook_endpoint."]}  # fmt: skip
    assert datetime.fromisoformat(rotate["previousSecretExpiresAt"]) == datetime.fromisoformat(
        rotated["previousSecretExpiresAt"]
    )
    assert retry == {"deliveryId": delivery["id"], "eventType": "connection.ordered"}
    assert delete == {"url": receiver.url}


def test_a_retry_during_an_attempt_keeps_its_schedule_and_counts_both(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    """A manual retry while a batch's attempt is in flight: the older job's attempt is
    recorded (attempt 1) but leaves the delivery pending on the retry's schedule; the retry's
    job then sends it again, same webhook-id (attempt 2)."""
    import threading

    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.hold = True
    order(api, headers)
    worker = services.worker()
    running = threading.Thread(target=worker.run_once)
    running.start()
    try:
        (first,) = receiver.wait_for(1, timeout=60)
        (pending,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()[
            "deliveries"
        ]
        retried = api.post(
            f"{HOOKS}/{hook['id']}/deliveries/{pending['id']}/retry", headers=headers
        )
        assert retried.status_code == 202, retried.text
    finally:
        receiver.release.set()
        running.join(60)
    assert not running.is_alive()
    receiver.hold = False
    # The held attempt outlived its batch: its own thread records it once it is answered.
    assert _eventually(lambda: _delivery_of(api, headers, hook)["attemptCount"] == 1, 10)
    after_first = _delivery_of(api, headers, hook)
    assert after_first["status"] == "pending" and after_first["attemptCount"] == 1
    assert after_first["nextAttemptAt"] == retried.json()["nextAttemptAt"]
    run_jobs(services)
    second = receiver.wait_for(2, timeout=60)[1]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == pending["id"]
    (done,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"]
    assert done["status"] == "succeeded" and done["attemptCount"] == 2
    assert [a["number"] for a in done["attempts"]] == [1, 2]


def test_an_endpoint_deleted_during_an_attempt_leaves_nothing_behind(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    import threading

    from iod.models import WebhookAttempt

    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.hold = True
    order(api, headers)
    running = threading.Thread(target=services.worker().run_once)
    running.start()
    try:
        receiver.wait_for(1, timeout=60)
        assert api.delete(f"{HOOKS}/{hook['id']}", headers=headers).status_code == 204
    finally:
        receiver.release.set()
        running.join(60)
    assert not running.is_alive()

    def states() -> set[str]:
        with services.db.read() as session:
            return set(session.scalars(select(Job.state).where(Job.queue == "webhooks")))

    # The held attempt outlived its batch: its job was deferred, and is woken (due now)
    # once the answer is recorded (as nothing: the delivery is gone).
    assert _eventually(lambda: run_jobs(services) >= 0 and states() == {"done"}, 10)
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_an_answer_with_nul_bytes_is_recorded_once_per_attempt(
    api: TestClient, headers: dict[str, str], services: Services, receiver: Receiver
) -> None:
    """PostgreSQL text cannot hold NUL: a receiver's answer with one is stored with U+FFFD,
    so the attempt is recorded (not the job failed and the delivery sent again)."""
    hook = create_hook(api, headers, receiver.url, eventTypes=["connection.ordered"])
    receiver.default, receiver.reply = 500, b"oops\x00 \x00end"
    order(api, headers)
    run_jobs(services)
    assert len(receiver.wait_for(3)) == 3
    time.sleep(0.2)
    assert len(receiver.received) == 3  # once per attempt of the schedule, no more
    (delivery,) = api.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers).json()["deliveries"]
    assert delivery["status"] == "failed" and delivery["attemptCount"] == 3
    assert "gave up after 3 attempts" in delivery["lastError"]
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 500, 500]
    assert {a["responseBody"] for a in delivery["attempts"]} == {"oops\ufffd \ufffdend"}


def test_a_slow_receiver_holds_back_only_its_own_deliveries(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """One event for a receiver that takes its time and one that answers at once: the quick
    one's attempt is recorded while the slow one is still waiting, the worker is free for
    other jobs meanwhile, and the slow one's attempt is recorded when it answers: once, not
    sent again."""
    import threading

    services.settings = services.settings.model_copy(update={"webhook_timeout_seconds": 30})
    with serve() as slow, serve() as quick:
        slow.hold = True
        slow_hook = create_hook(api, headers, slow.url, eventTypes=["connection.ordered"])
        quick_hook = create_hook(api, headers, quick.url, eventTypes=["connection.ordered"])
        order(api, headers)
        worker = services.worker()
        running = threading.Thread(target=worker.run_once)
        started = time.monotonic()
        running.start()
        try:
            slow.wait_for(1, timeout=20)
            assert _eventually(
                lambda: _delivery_of(api, headers, quick_hook)["status"] == "succeeded", 20
            )
            running.join(20)
            assert not running.is_alive()  # the worker does not wait for the slow receiver
            # Generous for a loaded machine, and still short of the receiver's 30 s timeout.
            assert time.monotonic() - started < 20
            assert _delivery_of(api, headers, slow_hook)["status"] == "pending"
        finally:
            slow.release.set()
            running.join(60)
        assert _eventually(
            lambda: _delivery_of(api, headers, slow_hook)["status"] == "succeeded", 10
        )
        run_jobs(services)
        delivery = _delivery_of(api, headers, slow_hook)
        assert delivery["attemptCount"] == 1 and [a["number"] for a in delivery["attempts"]] == [1]
        assert len(slow.received) == 1 and len(quick.received) == 1
        with services.db.read() as session:
            states = set(session.scalars(select(Job.state).where(Job.queue == "webhooks")))
        assert states == {"done"}


def test_a_hanging_name_lookup_is_a_timed_out_attempt_and_retried(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name server that does not answer: the attempt is recorded at its timeout as a
    timeout (not a refused address), the delivery stays pending with its next attempt
    queued, and that attempt is sent once the name resolves."""
    import socket
    import threading

    from iod.webhooks import safety

    release = threading.Event()

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        release.wait(60)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    services.settings = services.settings.model_copy(update={"webhook_timeout_seconds": 0.5})
    port = receiver.url.split(":")[2].split("/")[0]
    hook = create_hook(
        api, headers, f"http://slow.example.com:{port}/hook", eventTypes=["connection.ordered"]
    )
    order(api, headers)
    try:
        started = time.monotonic()
        services.worker().run_once()
        assert _eventually(lambda: _delivery_of(api, headers, hook)["attemptCount"] == 1, 20)
        assert time.monotonic() - started < 20  # generous: the timeout is 0.5 s, DNS hangs 60 s
        delivery = _delivery_of(api, headers, hook)
        expected = "timeout after 0.5 s: resolving slow.example.com took longer than"
        assert delivery["status"] == "pending", delivery
        assert delivery["attempts"][0]["error"].startswith(expected), delivery
        assert "refused" not in delivery["lastError"]
        assert receiver.received == []
    finally:
        release.set()
    assert _eventually(lambda: not safety._in_flight, 20)
    # The retry, a whole HTTP exchange: with a timeout a loaded machine meets (its attempt
    # may outlast the batch's wait and be recorded by its sending thread, just after).
    services.settings = services.settings.model_copy(update={"webhook_timeout_seconds": 10})
    run_jobs(services)
    assert _eventually(lambda: _delivery_of(api, headers, hook)["status"] != "pending", 20)
    delivery = _delivery_of(api, headers, hook)
    assert delivery["status"] == "succeeded" and delivery["attemptCount"] == 2, delivery
    assert len(receiver.wait_for(1)) == 1
