"""Error messages name what is wrong the way a client wrote it (found by a newcomer's trial)."""

from __future__ import annotations

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


def test_a_query_parameter_is_named_as_one_not_as_the_body(api, headers) -> None:
    answer = api.get(f"{BASE}?limit=abc", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("query parameter limit:")
    assert "body" not in answer.json()["detail"]
    # the pointer names it as the service's own parameter checks do (/query/to of usage)
    assert answer.json()["errors"] == [
        {"pointer": "/query/limit", "detail": "'abc' is not a whole number"}
    ]


def test_a_header_parameter_has_a_pointer_of_its_own(api, headers) -> None:
    answer = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC},
                      headers={**headers, "Idempotency-Key": "two words"})  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("header parameter Idempotency-Key: ")
    assert answer.json()["errors"][0]["pointer"] == "/header/Idempotency-Key"


def test_a_null_prefix_length_is_told_what_it_must_be(api, headers) -> None:
    body = {"bandwidth": "100 Mbps", "locationId": LOC, "ipv4PrefixLength": None}
    answer = api.post(BASE, json=body, headers=headers).json()
    assert answer["errors"][0]["pointer"] == "/ipv4PrefixLength"
    assert "one of 30, 29, 28" in answer["errors"][0]["detail"]
    assert "string" not in answer["errors"][0]["detail"]


def test_an_offset_out_of_range_is_said_plainly(api, headers) -> None:
    created = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    body = {"bandwidth": "200 Mbps", "effectiveDate": "2027-01-01T09:00:00+25:00"}
    answer = api.put(f"{BASE}/{created.json()['id']}/bandwidth", json=body, headers=headers)
    assert answer.status_code == 400
    detail = answer.json()["errors"][0]["detail"]
    assert "offset out of range" in detail and "timedelta" not in detail


def test_an_offset_out_of_range_is_said_plainly_everywhere(api, headers) -> None:
    # The same date-time elsewhere quoted Python's message ("offset must be a timedelta
    # strictly between -timedelta(hours=24) and …"), cut short in the schedule's preview.
    conn = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    conn_id = conn.json()["id"]
    bad = "2027-01-01T09:00:00+25:00"
    answers = {
        "/query/from": [
            api.get("/internet-on-demand/usage", params={"from": bad}, headers=headers),
            api.get(f"{BASE}/{conn_id}/traffic", params={"from": bad}, headers=headers),
            api.get(f"{BASE}/{conn_id}/schedules/sch_x/preview", params={"from": bad},
                    headers=headers),
        ],
        "/effectiveDate": [
            api.post("/internet-on-demand/quotes", headers=headers,
                     json={"connectionId": conn_id, "bandwidth": "200 Mbps", "effectiveDate": bad}),
        ],
        "/validFrom": [
            api.post(f"{BASE}/{conn_id}/schedules", headers=headers,
                     json={"timeZone": "UTC", "defaultBandwidth": "100 Mbps", "rules": [],
                           "validFrom": bad}),
        ],
    }  # fmt: skip
    for pointer, sent in answers.items():
        for answer in sent:
            assert answer.status_code == 400, answer.text
            errors = answer.json()["errors"]
            assert [e["pointer"] for e in errors] == [pointer], answer.text
            assert "offset out of range" in errors[0]["detail"], answer.text
            assert "timedelta" not in answer.text


def test_traffic_parameters_have_pointers(api, headers) -> None:
    # The traffic endpoint's own checks answered the pointer "" (its `step` checks, made by
    # the framework, said /query/step).
    conn = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    traffic = f"{BASE}/{conn.json()['id']}/traffic"
    cases = [
        ({"from": "x"}, "/query/from"),
        ({"to": "2026-13-01T00:00:00Z"}, "/query/to"),
        ({"from": "2026-12-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "/query/from"),
        # Out of range: the one sent is named (`from` defaults to an hour before `to`).
        ({"to": "9999-12-31T23:59:59Z"}, "/query/to"),
        ({"to": "0001-01-01T00:30:00Z"}, "/query/to"),
        ({"from": "0001-01-01T00:30:00Z", "to": "2026-11-01T00:00:00Z"}, "/query/from"),
    ]
    for params, pointer in cases:
        answer = api.get(traffic, params=params, headers=headers)
        assert answer.status_code == 400, answer.text
        assert [e["pointer"] for e in answer.json()["errors"]] == [pointer], answer.text
        assert answer.json()["detail"].startswith(f"query parameter {pointer[7:]}: ")
