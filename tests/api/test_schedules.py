"""Schedules through the real ASGI app, on SQLite and PostgreSQL: the resource, tenancy,
strict bodies, planning as ordinary bandwidth changes, edits, pause, delete, preview."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iod.app import Services
from iod.connections.service import Policy
from iod.infra.clock import FrozenClock
from iod.models import AuditEvent, BandwidthChange, Event, Schedule, ScheduleTransition
from iod.schedules import service as schedules
from tests.api.test_portal import customer, order, signed_in
from tests.api.test_portal_hooks import create_schedule
from tests.conftest import get_token, nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"
WEEKDAYS = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
# The frozen clock starts on Tuesday 2030-01-01 00:00 UTC: 19:00 on Monday in New York.


def _connection(api: TestClient, headers: dict[str, str], services: Services) -> str:
    response = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    run_jobs(services)
    return str(response.json()["id"])


def _body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timeZone": "America/New_York",
        "defaultBandwidth": "100 Mbps",
        "rules": [
            {"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00", "recurrence": WEEKDAYS}
        ],
    }
    body.update(extra)
    return body


def _create(api: TestClient, headers: dict[str, str], conn: str, **extra: Any) -> dict[str, Any]:
    response = api.post(f"{BASE}/{conn}/schedules", json=_body(**extra), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _changes(api: TestClient, headers: dict[str, str], conn: str) -> list[dict[str, Any]]:
    response = api.get(f"{BASE}/{conn}/bandwidth-changes", headers=headers)
    assert response.status_code == 200
    return response.json()["bandwidthChanges"]  # type: ignore[no-any-return]


def test_create_plans_48_hours_of_changes(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    schedule = _create(api, headers, conn, description="office hours")
    assert schedule["id"].startswith("sch_")
    assert schedule["timeZone"] == "America/New_York"
    assert schedule["rules"][0] == {
        "bandwidth": "1 Gbps", "start": "08:00", "end": "18:00", "recurrence": WEEKDAYS,
    }  # fmt: skip
    assert schedule["plannedUntil"] == "2030-01-03T00:00:00Z"
    pending = api.get(f"{BASE}/{conn}", headers=headers).json()["pendingBandwidthChanges"]
    # Now (Monday 19:00 local) the default holds: applied now (already in force: no effect),
    # then Tuesday 08:00-18:00 and Wednesday from 08:00 local (EST, UTC-5).
    assert [(p["bandwidth"], p["effectiveDate"]) for p in pending] == [
        ("100 Mbps", "2030-01-01T00:00:00Z"),
        ("1 Gbps", "2030-01-01T13:00:00Z"),
        ("100 Mbps", "2030-01-01T23:00:00Z"),
        ("1 Gbps", "2030-01-02T13:00:00Z"),
        ("100 Mbps", "2030-01-02T23:00:00Z"),
    ]
    assert {p["scheduleId"] for p in pending} == {schedule["id"]}
    listed = _changes(api, headers, conn)
    assert {c["scheduleId"] for c in listed} == {schedule["id"]}
    with services.db.read() as session:
        names = session.scalars(select(Event.name).order_by(Event.position)).all()
    assert names.count("schedule.created") == 1
    assert names.count("schedule.transition_planned") == 5
    assert names.count("bandwidth_change.scheduled") == 5
    with services.db.read() as session:
        actions = session.scalars(select(AuditEvent.action)).all()
    # One audit record for the request; the changes are the schedule's (the service's).
    assert actions.count("schedule.create") == 1
    assert "bandwidth.change" not in actions


def test_get_list_and_customer_list(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    first = _connection(api, headers, services)
    second = _connection(api, headers, services)
    a = _create(api, headers, first)
    b = _create(api, headers, second, paused=True)
    got = api.get(f"{BASE}/{first}/schedules/{a['id']}", headers=headers)
    assert got.status_code == 200 and got.json()["id"] == a["id"]
    listed = api.get(f"{BASE}/{first}/schedules", headers=headers).json()["schedules"]
    assert [s["id"] for s in listed] == [a["id"]]
    page = api.get("/internet-on-demand/schedules?limit=1", headers=headers).json()
    assert [s["id"] for s in page["schedules"]] == [a["id"]]
    rest = api.get(f"/internet-on-demand/schedules?cursor={page['nextCursor']}", headers=headers)
    assert [s["id"] for s in rest.json()["schedules"]] == [b["id"]]
    assert "nextCursor" not in rest.json()
    assert b["paused"] is True and "plannedUntil" not in b
    # A second schedule on one connection is refused.
    again = api.post(f"{BASE}/{first}/schedules", json=_body(), headers=headers)
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/schedule-exists"
    assert api.get("/problems/schedule-exists").status_code == 200  # its page exists


def test_tenancy_is_a_404(
    api: TestClient, headers: dict[str, str], services: Services, make_tenant
) -> None:  # type: ignore[no-untyped-def]
    conn = _connection(api, headers, services)
    schedule = _create(api, headers, conn)
    other = {"Authorization": f"Bearer {get_token(api, make_tenant(name='Other'))}"}
    one = f"{BASE}/{conn}/schedules/{schedule['id']}"
    with nothing_written(services):
        assert api.get(one, headers=other).status_code == 404
        assert api.get(f"{one}/preview", headers=other).status_code == 404
        assert api.get(f"{BASE}/{conn}/schedules", headers=other).status_code == 404
        assert api.patch(one, json={"paused": True}, headers=other).status_code == 404
        assert api.delete(one, headers=other).status_code == 404
        assert api.post(f"{BASE}/{conn}/schedules", json=_body(), headers=other).status_code == 404
    assert api.get("/internet-on-demand/schedules", headers=other).json()["schedules"] == []
    # The schedule's id under another of the customer's connections is a 404 as well.
    mine = _connection(api, headers, services)
    assert api.get(f"{BASE}/{mine}/schedules/{schedule['id']}", headers=headers).status_code == 404


def _problem(response: Any) -> tuple[int, list[str]]:
    body = response.json()
    return response.status_code, [e["pointer"] for e in body.get("errors", [])]


def test_bad_input_is_a_400_with_a_pointer(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    url = f"{BASE}/{conn}/schedules"
    rule = _body()["rules"][0]
    cases = [
        (_body(timeZone="Mars/Olympus_Mons"), "/timeZone"),
        (_body(timeZone="../etc/passwd"), "/timeZone"),
        (_body(rules=[{**rule, "recurrence": "FREQ=SOMETIMES"}]), "/rules/0/recurrence"),
        (_body(rules=[{**rule, "recurrence": "FREQ=HOURLY"}]), "/rules/0/recurrence"),
        (_body(rules=[{**rule, "recurrence": "FREQ=DAILY;BYHOUR=8"}]), "/rules/0/recurrence"),
        # INTERVAL=0 once made the planner loop for ever inside dateutil; -1 was a 500.
        (_body(rules=[{**rule, "recurrence": "FREQ=DAILY;INTERVAL=0"}]), "/rules/0/recurrence"),
        (_body(rules=[{**rule, "recurrence": "FREQ=WEEKLY;INTERVAL=-1"}]), "/rules/0/recurrence"),
        (
            _body(rules=[{**rule, "recurrence": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}]),
            "/rules/0/recurrence",
        ),
        (_body(rules=[rule, {**rule, "start": "25:00"}]), "/rules/1/start"),
        (_body(rules=[{**rule, "end": "08:00"}]), "/rules/0/end"),
        (_body(rules=[{**rule, "bandwidth": "7 Mbps"}]), "/rules/0/bandwidth"),
        (_body(defaultBandwidth="fast"), "/defaultBandwidth"),
        (_body(exceptions=[{"date": "2030-02-30"}]), "/exceptions/0/date"),
        (_body(exceptions=[{"date": "2030-12-25"}, {"date": "2030-12-25"}]), "/exceptions"),
        (_body(validFrom="2030-01-02T00:00:00Z", validUntil="2030-01-01T00:00:00Z"), "/validUntil"),
        (_body(validFrom="2030-01-02T00:00:00"), "/validFrom"),
        (_body(validFrom="0001-01-01T00:00:00Z"), "/validFrom"),  # once a 500 (overflow)
        (_body(validUntil="9999-12-31T00:00:00Z"), "/validUntil"),
        (_body(timezone="UTC"), "/timezone"),  # unknown field
        (_body(rules=[{**rule, "priority": 1}]), "/rules/0/priority"),
    ]
    with nothing_written(services):
        for body, pointer in cases:
            status, pointers = _problem(api.post(url, json=body, headers=headers))
            assert (status, pointers[:1]) == (400, [pointer]), (body, pointers)
        # A misspelt nested field is named as a top-level one is: with the closest known.
        misspelt = api.post(url, json=_body(rules=[{**rule, "recurence": "x"}]), headers=headers)
        assert misspelt.json()["errors"] == [
            {"pointer": "/rules/0/recurence", "detail": "unknown field; did you mean `recurrence`?"}
        ]
        duplicate = b'{"timeZone": "UTC", "timeZone": "UTC", "defaultBandwidth": "100 Mbps"}'
        response = api.post(
            url, content=duplicate, headers={**headers, "Content-Type": "application/json"}
        )
        assert _problem(response) == (400, ["/timeZone"])
    schedule = _create(api, headers, conn)
    one = f"{url}/{schedule['id']}"
    assert _problem(api.patch(one, json={"timeZone": "Nowhere/Land"}, headers=headers)) == (
        400,
        ["/timeZone"],
    )
    assert _problem(api.patch(one, json={"paused": None}, headers=headers))[1] == ["/paused"]
    assert _problem(api.patch(one, json={"pause": True}, headers=headers))[1] == ["/pause"]
    bad = api.get(
        f"{one}/preview?from=2030-01-01T00:00:00Z&to=2030-03-01T00:00:00Z", headers=headers
    )
    assert bad.status_code == 400
    assert api.get(f"{one}/preview?from=yesterday", headers=headers).status_code == 400
    for edge in ("0001-01-02T00:00:00Z", "9999-12-30T00:00:00Z"):  # once a 500 (overflow)
        assert api.get(f"{one}/preview?from={edge}", headers=headers).status_code == 400


def test_edit_replaces_pause_keeps_resume_plans_delete_cancels(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    schedule = _create(api, headers, conn)
    one = f"{BASE}/{conn}/schedules/{schedule['id']}"
    run_jobs(services)  # the change due now applies
    before = {c["id"] for c in _changes(api, headers, conn) if c["status"] == "scheduled"}
    assert len(before) == 4
    edited = api.patch(one, json={"rules": [{**_body()["rules"][0], "bandwidth": "500 Mbps"}]},
                       headers=headers)  # fmt: skip
    assert edited.status_code == 200, edited.text
    changes = {c["id"]: c for c in _changes(api, headers, conn)}
    assert all(changes[i]["status"] == "cancelled" for i in before)
    scheduled = [c for c in changes.values() if c["status"] == "scheduled"]
    assert sorted(c["bandwidth"] for c in scheduled) == ["100 Mbps"] * 3 + ["500 Mbps"] * 2
    # Pause: the schedule stays, its unstarted changes go.
    paused = api.patch(one, json={"paused": True}, headers=headers)
    assert paused.json()["paused"] is True
    assert api.get(f"{BASE}/{conn}", headers=headers).json()["pendingBandwidthChanges"] == []
    assert api.get(one, headers=headers).status_code == 200
    resumed = api.patch(one, json={"paused": False}, headers=headers)
    assert resumed.json()["paused"] is False
    pending = api.get(f"{BASE}/{conn}", headers=headers).json()["pendingBandwidthChanges"]
    assert len(pending) == 5
    assert api.delete(one, headers=headers).status_code == 204
    assert api.get(f"{BASE}/{conn}", headers=headers).json()["pendingBandwidthChanges"] == []
    assert api.get(one, headers=headers).status_code == 404
    assert api.delete(one, headers=headers).status_code == 404
    history = _changes(api, headers, conn)
    assert history[0]["status"] == "applied" and history[0]["scheduleId"] == schedule["id"]
    with services.db.read() as session:
        names = set(session.scalars(select(Event.name)).all())
        left = session.scalar(select(func.count()).select_from(ScheduleTransition))
    assert {"schedule.updated", "schedule.deleted"} <= names
    assert left == 0


def test_planner_tops_up_once_and_manual_change_wins_until_next_transition(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock, tenant
) -> None:  # type: ignore[no-untyped-def]
    conn = _connection(api, headers, services)
    _create(api, headers, conn)
    planning = schedules.Planning(horizon=timedelta(hours=48))
    policy = Policy()
    clock.advance(timedelta(hours=5))  # 2030-01-01T05:00Z: within the margin, nothing due
    with services.db.write() as session:
        assert schedules.plan_due(session, clock, policy, planning) == (0, None)
    clock.advance(timedelta(hours=20))  # 2030-01-02T01:00Z: 46 h planned ahead, top up
    with services.db.write() as session:
        assert schedules.plan_due(session, clock, policy, planning) == (2, None)  # Thu 8-18
    with services.db.write() as session:  # a rerun (another worker, a crash) plans nothing
        assert schedules.plan_due(session, clock, policy, planning) == (0, None)
    run_jobs(services)  # Tuesday's changes are due
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}  # a day later: a new token
    # A manual change now (Wednesday 20:00 local) holds until Thursday 08:00 local.
    put = api.put(f"{BASE}/{conn}/bandwidth", json={"bandwidth": "2 Gbps"}, headers=headers)
    assert put.status_code == 200
    run_jobs(services)
    assert api.get(f"{BASE}/{conn}", headers=headers).json()["bandwidth"] == "2 Gbps"
    clock.set(datetime(2030, 1, 3, 13, 0, tzinfo=UTC))
    run_jobs(services)
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    assert api.get(f"{BASE}/{conn}", headers=headers).json()["bandwidth"] == "1 Gbps"
    with services.db.read() as session:
        at = session.scalars(select(BandwidthChange.effective_at)).all()
    assert len(at) == len(set(at)), "two changes at one instant"


def test_preview(api: TestClient, headers: dict[str, str], services: Services) -> None:
    conn = _connection(api, headers, services)
    schedule = _create(
        api,
        headers,
        conn,
        exceptions=[{"date": "2030-01-08"}, {"date": "2030-01-09", "bandwidth": "2 Gbps"}],
    )
    url = f"{BASE}/{conn}/schedules/{schedule['id']}/preview"
    got = api.get(url, params={"from": "2030-01-06T00:00:00Z", "to": "2030-01-10T00:00:00Z"},
                  headers=headers)  # fmt: skip
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["initialBandwidth"] == "100 Mbps"
    assert [(t["localTime"], t["bandwidth"]) for t in body["transitions"]] == [
        ("2030-01-07T08:00:00-05:00", "1 Gbps"),  # Monday
        ("2030-01-07T18:00:00-05:00", "100 Mbps"),
        # Tuesday the 8th: a holiday, the default all day (no transition)
        ("2030-01-09T00:00:00-05:00", "2 Gbps"),  # Wednesday: 2 Gbps all day
    ]
    assert body["transitions"][0]["at"] == "2030-01-07T13:00:00Z"


# RRULEs dateutil raised IndexError on while stepping (500s): at once, or only in some
# months (December) or years (a late Easter) after passing the check with their first ones.
CRASHING = [
    "FREQ=MONTHLY;BYDAY=+53MO",
    "FREQ=DAILY;BYEASTER=99999",
    "FREQ=MONTHLY;BYDAY=+10MO,1TU",
    "FREQ=DAILY;BYEASTER=260",
]


def test_rrules_dateutil_cannot_step_through_are_a_400(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    url = f"{BASE}/{conn}/schedules"
    rule = {"bandwidth": "1 Gbps", "start": "08:00", "end": "18:00"}
    with nothing_written(services):
        for recurrence in CRASHING:
            body = _body(timeZone="UTC", rules=[{**rule, "recurrence": recurrence}])
            response = api.post(url, json=body, headers=headers)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert _problem(response) == (400, ["/rules/0/recurrence"]), response.text
    one = f"{url}/{_create(api, headers, conn)['id']}"
    for recurrence in CRASHING:
        patch = {"rules": [{**rule, "recurrence": recurrence}]}
        assert _problem(api.patch(one, json=patch, headers=headers)) == (
            400,
            ["/rules/0/recurrence"],
        )


def test_the_portal_form_shows_such_an_rrule_as_a_rule_error(
    api: TestClient, services: Services
) -> None:
    operator = signed_in(api, services, customer(services, "Acme"), "operator")
    con = order(operator)
    run_jobs(services)
    with nothing_written(services):
        for recurrence in CRASHING[:2]:
            answer = create_schedule(operator, con, rules=f"1 Gbps {recurrence} 08:00-18:00")
            assert answer.status_code == 400, answer.text[-2000:]
            assert 'id="err-rules"' in answer.text and "BY" in answer.text


def test_zone_files_that_are_no_iana_zone_are_refused(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    url = f"{BASE}/{conn}/schedules"
    names = ("localtime", "posixrules", "Factory", "right/UTC", "posix/UTC")
    with nothing_written(services):
        for name in names:
            response = api.post(url, json=_body(timeZone=name), headers=headers)
            assert _problem(response) == (400, ["/timeZone"]), (name, response.text)
            assert "not a known IANA time zone" in response.text
    one = f"{url}/{_create(api, headers, conn, timeZone='Etc/UTC')['id']}"
    assert _problem(api.patch(one, json={"timeZone": "localtime"}, headers=headers)) == (
        400,
        ["/timeZone"],
    )
    assert api.patch(one, json={"timeZone": "UTC"}, headers=headers).status_code == 200
    operator = signed_in(api, services, customer(services, "Acme"), "operator")
    con = order(operator)
    run_jobs(services)
    with nothing_written(services):
        for name in names:
            answer = create_schedule(operator, con, timeZone=name)
            assert answer.status_code == 400 and 'id="err-timeZone"' in answer.text, name


def test_preview_bounds_are_on_utc_instants(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    conn = _connection(api, headers, services)
    one = f"{BASE}/{conn}/schedules/{_create(api, headers, conn)['id']}/preview"
    for query in (
        {"from": "1970-01-01T00:00:00+14:00"},  # 1969-12-31T10:00Z
        {"from": "9000-12-30T00:00:00Z"},  # to, 7 days on by default: 9001
        {"from": "9000-12-30T00:00:00Z", "to": "9001-01-01T00:00:00Z"},
        {"from": "9000-12-30T00:00:00Z", "to": "9000-12-31T23:00:00-02:00"},
    ):
        response = api.get(one, params=query, headers=headers)
        assert response.status_code == 400, (query, response.text)
    for query in (
        {"from": "1969-12-31T20:00:00-04:00"},  # 1970-01-01T00:00Z
        {"from": "9000-12-30T00:00:00Z", "to": "9001-01-01T09:00:00+14:00"},  # 9000 in UTC
        {"from": "9000-12-24T23:59:59Z"},
    ):
        response = api.get(one, params=query, headers=headers)
        assert response.status_code == 200, (query, response.text)
        to = datetime.fromisoformat(response.json()["to"].replace("Z", "+00:00"))
        assert 1970 <= to.astimezone(UTC).year <= 9000  # echoed with the offset given
    for valid_from in ("1970-01-01T00:00:00+14:00", "9000-12-31T23:00:00-02:00"):
        response = api.patch(one[: -len("/preview")], json={"validFrom": valid_from},
                             headers=headers)  # fmt: skip
        assert _problem(response) == (400, ["/validFrom"]), (valid_from, response.text)


def test_preview_far_in_the_future_is_quick(
    api: TestClient, headers: dict[str, str], services: Services
) -> None:
    """20 rules `FREQ=DAILY;BYMONTH=n`: dateutil walked every day from the schedule's first
    day to `from` (9.4 s to the year 3000, more than 30 s to 9000)."""
    conn = _connection(api, headers, services)
    rules = [
        {"bandwidth": "1 Gbps", "start": f"{n:02d}:00", "end": f"{n:02d}:30",
         "recurrence": f"FREQ=DAILY;BYMONTH={n % 12 + 1}"}
        for n in range(20)
    ]  # fmt: skip
    one = f"{BASE}/{conn}/schedules/{_create(api, headers, conn, rules=rules)['id']}/preview"
    began = time.monotonic()
    # January: rules 0 and 12, twice a day each; December: rule 11.
    for start, count in (("3000-01-01T00:00:00Z", 7 * 2 * 2), ("9000-12-01T00:00:00Z", 7 * 2)):
        response = api.get(one, params={"from": start}, headers=headers)
        assert response.status_code == 200, response.text
        assert len(response.json()["transitions"]) == count
    assert time.monotonic() - began < 10  # generous: well under a second alone


def test_a_stored_rule_dateutil_fails_on_plans_without_it(
    api: TestClient, headers: dict[str, str], services: Services, clock: FrozenClock
) -> None:
    """Stored before the check refused it (it passed with its first months), the rule made
    every planning of December fail (the planner's batch with it, every 15 minutes). Now it
    holds on no day: the preview and the planner go on with the schedule's other rules; an
    edit must replace it."""
    conn = _connection(api, headers, services)
    schedule = _create(api, headers, conn, timeZone="UTC")
    stored = {"mbps": 2000, "start": "09:00", "end": "10:00", "recurrence": CRASHING[2]}
    with services.db.write() as session:
        row = session.get(Schedule, schedule["id"])
        assert row is not None
        row.rules = [*row.rules, stored]
    url = f"{BASE}/{conn}/schedules/{schedule['id']}"
    response = api.get(f"{url}/preview", params={"from": "2030-12-01T00:00:00Z"}, headers=headers)
    assert response.status_code == 200, response.text
    assert [t["bandwidth"] for t in response.json()["transitions"]] == ["1 Gbps", "100 Mbps"] * 5
    # An edit checks every rule: this one must be replaced.
    assert _problem(api.patch(url, json={"paused": True}, headers=headers)) == (
        400,
        ["/rules/1/recurrence"],
    )
    clock.set(datetime(2030, 12, 1, tzinfo=UTC))
    planning = schedules.Planning(horizon=timedelta(hours=48))
    with services.db.write() as session:
        planned, _ = schedules.plan_due(session, clock, Policy(), planning)
    assert planned == 3  # the last one missed since January, now; Monday 2 December 8-18
