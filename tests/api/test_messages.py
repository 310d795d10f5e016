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
