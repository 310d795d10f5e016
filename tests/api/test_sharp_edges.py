"""Sharp edges a newcomer hit (issue 12, item 7): no-op bandwidth changes, query parameter
errors, re-cancelling, the root page and the problem type pages. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.infra.clock import FrozenClock, rfc3339
from iod.infra.errors import PROBLEM_TYPES
from iod.infra.ids import new_id
from iod.infra.problems import PROBLEM_HELP
from tests.conftest import audit_count, counts, nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


@pytest.fixture
def active(api: TestClient, headers: dict[str, str], services: Services) -> dict[str, Any]:
    response = api.post(BASE, json={"bandwidth": "1 Gbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    run_jobs(services)
    body: dict[str, Any] = api.get(f"{BASE}/{response.json()['id']}", headers=headers).json()
    assert body["status"] == "active"
    return body


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


# --- a change to what will be in force anyway ------------------------------------------------


def test_identical_puts_make_no_change_records(
    api: TestClient, headers: dict[str, str], services: Services, active: dict[str, Any]
) -> None:
    url = f"{BASE}/{active['id']}/bandwidth"
    etag = api.get(f"{BASE}/{active['id']}", headers=headers).headers["etag"]
    with nothing_written(services):
        for spelling in ("1 Gbps", "1gbps", "1000 Mbps", "1 Gbps", "1 GBPS"):
            response = api.put(url, json={"bandwidth": spelling}, headers=headers)
            assert response.status_code == 200, response.text
            got = response.json()
            assert "change" not in got and got["bandwidth"] == "1 Gbps"
            assert got["pendingBandwidthChanges"] == []
            assert response.headers["etag"] == etag  # the connection did not change
    assert api.get(f"{url[: -len('/bandwidth')]}/bandwidth-changes", headers=headers).json() == {
        "bandwidthChanges": []
    }


def test_a_change_to_what_a_pending_change_will_have_made_is_a_no_op(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    active: dict[str, Any],
) -> None:
    url = f"{BASE}/{active['id']}/bandwidth"
    at = lambda hours: rfc3339(clock.now() + timedelta(hours=hours))  # noqa: E731
    first = api.put(url, json={"bandwidth": "500 Mbps", "effectiveDate": at(1)}, headers=headers)
    assert first.json()["change"]["status"] == "scheduled"
    with nothing_written(services):
        # At 2 h it will have 500 Mbps anyway; "now" it has 1 Gbps anyway.
        later = api.put(
            url, json={"bandwidth": "500 Mbps", "effectiveDate": at(2)}, headers=headers
        )
        now = api.put(url, json={"bandwidth": "1 Gbps"}, headers=headers)
    assert "change" not in later.json() and "change" not in now.json()
    assert [p["bandwidth"] for p in later.json()["pendingBandwidthChanges"]] == ["500 Mbps"]
    # But 1 Gbps at 2 h is a change (it would have 500 Mbps then), and so is 500 Mbps now.
    back = api.put(url, json={"bandwidth": "1 Gbps", "effectiveDate": at(2)}, headers=headers)
    assert back.json()["change"]["bandwidth"] == "1 Gbps"
    soon = api.put(url, json={"bandwidth": "500 Mbps"}, headers=headers)
    assert soon.json()["change"]["bandwidth"] == "500 Mbps"


def test_a_boost_to_the_same_bandwidth_is_a_no_op_unless_a_change_falls_inside_it(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    active: dict[str, Any],
) -> None:
    url = f"{BASE}/{active['id']}/bandwidth"
    at = lambda hours: rfc3339(clock.now() + timedelta(hours=hours))  # noqa: E731
    boost = {"bandwidth": "1 Gbps", "effectiveDate": at(1), "revertAt": at(3)}
    with nothing_written(services):
        assert "change" not in api.put(url, json=boost, headers=headers).json()
    # With a change inside the boost's window, its revert would undo that change: recorded.
    api.put(url, json={"bandwidth": "200 Mbps", "effectiveDate": at(2)}, headers=headers)
    got = api.put(url, json=boost, headers=headers).json()
    assert got["change"]["bandwidth"] == "1 Gbps" and got["revertChange"]["bandwidth"] == "1 Gbps"


def test_a_no_op_still_checks_the_request(
    api: TestClient, headers: dict[str, str], services: Services, active: dict[str, Any]
) -> None:
    url = f"{BASE}/{active['id']}/bandwidth"
    stale = {**headers, "If-Match": '"0123456789abcdef0123456789abcdef"'}
    assert problem(api.put(url, json={"bandwidth": "1 Gbps"}, headers=stale), 412)
    assert api.post(f"{BASE}/{active['id']}/terminate", headers=headers).status_code == 202
    refused = problem(api.put(url, json={"bandwidth": "1 Gbps"}, headers=headers), 409)
    assert refused["type"] == "/problems/invalid-state"


def test_a_no_op_with_an_idempotency_key_replays(
    api: TestClient, headers: dict[str, str], services: Services, active: dict[str, Any]
) -> None:
    url = f"{BASE}/{active['id']}/bandwidth"
    keyed = {**headers, "Idempotency-Key": "same-bandwidth-1"}
    first = api.put(url, json={"bandwidth": "1 Gbps"}, headers=keyed)
    again = api.put(url, json={"bandwidth": "1 Gbps"}, headers=keyed)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert counts(services)[1] == 0 and audit_count(services) == 1  # the create only


# --- query parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor", ["garbage", "con_", "con_nope", "chg_038hbmzzdc0zp1vf4q7h0j06tk2e3", "x" * 65]
)
def test_a_cursor_that_is_not_one_is_400(
    api: TestClient, headers: dict[str, str], cursor: str
) -> None:
    body = problem(api.get(BASE, params={"cursor": cursor}, headers=headers), 400)
    assert body["detail"].startswith("query parameter cursor: ")
    assert "`nextCursor`" in body["detail"]


def test_a_cursor_of_ours_is_a_position_even_if_it_names_nothing(
    api: TestClient, headers: dict[str, str], active: dict[str, Any]
) -> None:
    before = api.get(BASE, params={"cursor": "con_" + "0" * 29}, headers=headers)
    assert [c["id"] for c in before.json()["connections"]] == [active["id"]]
    after = api.get(BASE, params={"cursor": new_id("con")}, headers=headers)
    assert after.status_code == 200 and after.json()["connections"] == []


def test_a_bogus_status_names_the_parameter_and_the_allowed_values(
    api: TestClient, headers: dict[str, str]
) -> None:
    body = problem(api.get(BASE, params={"status": ["active", "bogus"]}, headers=headers), 400)
    assert body["detail"] == (
        "query parameter status: 'bogus' is not one of the allowed values: "
        "provisioning, active, suspended, terminated"
    )
    assert "Input should" not in str(body)


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"limit": "abc"}, "query parameter limit: 'abc' is not a whole number"),
        ({"limit": "5000"}, "query parameter limit: must be at most 1000 (got 5000)"),
        ({"limit": "0"}, "query parameter limit: must be at least 1 (got 0)"),
    ],
)
def test_a_bad_limit_is_said_plainly(
    api: TestClient, headers: dict[str, str], query: dict[str, str], detail: str
) -> None:
    assert problem(api.get(BASE, params=query, headers=headers), 400)["detail"] == detail


# --- cancelling twice --------------------------------------------------------------------------


def test_recancelling_says_it_is_the_changes_state(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    active: dict[str, Any],
) -> None:
    url = f"{BASE}/{active['id']}"
    later = rfc3339(clock.now() + timedelta(hours=1))
    put = api.put(
        f"{url}/bandwidth", json={"bandwidth": "500 Mbps", "effectiveDate": later}, headers=headers
    )
    change = put.json()["change"]
    cancel = f"{url}/bandwidth-changes/{change['id']}/cancel"
    assert api.post(cancel, headers=headers).status_code == 200
    with nothing_written(services):
        again = problem(api.post(cancel, headers=headers), 409)
    assert again["type"] == "/problems/invalid-state"
    assert again["title"] == "Not allowed in the bandwidth change's current state"
    assert again["detail"].startswith("the change is already cancelled")
    now = api.put(f"{url}/bandwidth", json={"bandwidth": "200 Mbps"}, headers=headers).json()
    run_jobs(services)
    applied = problem(
        api.post(f"{url}/bandwidth-changes/{now['change']['id']}/cancel", headers=headers), 409
    )
    assert applied["detail"].startswith("the change is already applied")


# --- pages for people --------------------------------------------------------------------------

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_the_root_points_a_browser_to_the_docs(api: TestClient) -> None:
    page = api.get("/", headers=BROWSER)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in page.text
    plain = api.get("/")  # curl, a program: JSON
    assert plain.status_code == 200 and plain.json()["docs"] == "/docs"
    assert api.get("/", headers={"Accept": "application/json"}).json()["openapi"] == (
        "/openapi.json"
    )
    assert "/" not in api.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("name", sorted(PROBLEM_TYPES))
def test_every_problem_type_explains_itself(api: TestClient, name: str) -> None:
    assert PROBLEM_HELP[name]
    described = api.get(f"/problems/{name}")
    assert described.status_code == 200
    assert described.json() == {
        "type": f"/problems/{name}",
        "title": PROBLEM_TYPES[name],
        "description": PROBLEM_HELP[name],
    }
    page = api.get(f"/problems/{name}", headers=BROWSER)
    assert page.headers["content-type"].startswith("text/html")
    assert f"<code>/problems/{name}</code>" in page.text and 'href="/docs"' in page.text


def test_an_unknown_problem_type_is_404(api: TestClient) -> None:
    assert problem(api.get("/problems/<script>", headers=BROWSER), 404)


# --- the change list, a page at a time --------------------------------------------------------


def test_the_change_list_pages_in_effective_order(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    active: dict[str, Any],
) -> None:
    url = f"{BASE}/{active['id']}"
    for hours, bandwidth in ((5, "200 Mbps"), (1, "500 Mbps"), (3, "100 Mbps"), (2, "2 Gbps")):
        at = rfc3339(clock.now() + timedelta(hours=hours))
        put = api.put(f"{url}/bandwidth", json={"bandwidth": bandwidth, "effectiveDate": at},
                      headers=headers)  # fmt: skip
        assert put.status_code == 200, put.text
    applied = api.put(f"{url}/bandwidth", json={"bandwidth": "300 Mbps"}, headers=headers)
    assert applied.status_code == 200, applied.text

    whole = api.get(f"{url}/bandwidth-changes", headers=headers)
    assert whole.status_code == 200 and "link" not in whole.headers
    everything = whole.json()
    assert "nextCursor" not in everything and len(everything["bandwidthChanges"]) == 5
    instants = [c["effectiveDate"] for c in everything["bandwidthChanges"]]
    assert instants == sorted(instants)

    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = api.get(f"{url}/bandwidth-changes", params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["bandwidthChanges"]
        pages += 1
        if "nextCursor" not in body:
            assert "link" not in page.headers
            break
        assert body["nextCursor"] == body["bandwidthChanges"][-1]["id"]
        assert f"cursor={body['nextCursor']}" in page.headers["link"]
        assert page.headers["link"].endswith('>; rel="next"')
        params["cursor"] = body["nextCursor"]
    assert pages == 3 and seen == everything["bandwidthChanges"]


def test_a_bad_change_list_parameter_is_a_400_naming_it(
    api: TestClient,
    headers: dict[str, str],
    services: Services,
    clock: FrozenClock,
    active: dict[str, Any],
) -> None:
    other = api.post(BASE, json={"bandwidth": "1 Gbps", "locationId": LOC}, headers=headers)
    assert other.status_code == 201, other.text
    run_jobs(services)
    at = rfc3339(clock.now() + timedelta(hours=1))
    put = api.put(f"{BASE}/{other.json()['id']}/bandwidth",
                  json={"bandwidth": "500 Mbps", "effectiveDate": at}, headers=headers)  # fmt: skip
    assert put.status_code == 200, put.text
    foreign = api.get(f"{BASE}/{other.json()['id']}/bandwidth-changes", headers=headers).json()
    url = f"{BASE}/{active['id']}/bandwidth-changes"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "/query/limit"),
        ({"limit": 1001}, "/query/limit"),
        ({"limit": "many"}, "/query/limit"),
        ({"cursor": "nope"}, "/query/cursor"),
        ({"cursor": active["id"]}, "/query/cursor"),  # a connection id is no change cursor
        ({"cursor": new_id("chg")}, "/query/cursor"),  # shaped like one, no such change
        ({"cursor": foreign["bandwidthChanges"][0]["id"]}, "/query/cursor"),  # another's
    ]
    for params, pointer in cases:
        body = problem(api.get(url, params=params, headers=headers), 400)
        assert [e["pointer"] for e in body["errors"]] == [pointer], (params, body)
