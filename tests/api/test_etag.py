"""ETag on connection responses and If-Match on the bandwidth change and the actions."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from tests.conftest import nothing_written, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"


@pytest.fixture
def created(api: TestClient, headers: dict[str, str]) -> Any:
    response = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201
    return response


def etag_of(api: TestClient, headers: dict[str, str], connection_id: str) -> str:
    response = api.get(f"{BASE}/{connection_id}", headers=headers)
    assert response.status_code == 200
    return str(response.headers["etag"])


def test_every_connection_response_has_the_etag_a_get_gives(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    conn_id = created.json()["id"]
    tag = created.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert etag_of(api, headers, conn_id) == tag
    run_jobs(services)
    put = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers)
    assert put.status_code == 200
    assert put.headers["etag"] == etag_of(api, headers, conn_id)
    action = api.post(f"{BASE}/{conn_id}/suspend", headers=headers)
    assert action.status_code == 202
    assert action.headers["etag"] == etag_of(api, headers, conn_id)


def test_the_etag_changes_with_the_representation(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    conn_id = created.json()["id"]
    seen = [created.headers["etag"]]
    assert etag_of(api, headers, conn_id) == seen[-1]  # reading changes nothing
    run_jobs(services)  # provisioning -> active
    seen.append(etag_of(api, headers, conn_id))
    api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers)
    seen.append(etag_of(api, headers, conn_id))  # a pending change
    run_jobs(services)  # applied: the bandwidth
    seen.append(etag_of(api, headers, conn_id))
    api.post(f"{BASE}/{conn_id}/suspend", headers=headers)
    seen.append(etag_of(api, headers, conn_id))  # targetStatus
    assert len(set(seen)) == len(seen), seen


def test_a_stale_if_match_is_412_and_changes_nothing(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    conn_id, stale = created.json()["id"], created.headers["etag"]
    run_jobs(services)
    current = etag_of(api, headers, conn_id)
    for method, path, body in [
        ("PUT", "bandwidth", {"bandwidth": "1 Gbps"}),
        ("POST", "suspend", None),
        ("POST", "terminate", None),
    ]:
        with nothing_written(services):
            response = api.request(
                method, f"{BASE}/{conn_id}/{path}", json=body,
                headers={**headers, "If-Match": stale},
            )  # fmt: skip
        assert response.status_code == 412, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/precondition-failed"
        assert response.headers["etag"] == current
    assert etag_of(api, headers, conn_id) == current


@pytest.mark.parametrize(
    "if_match",
    ["{tag}", "*", '"other", {tag}', '"other",{tag}'],
    ids=["exact", "star", "list", "list-no-space"],
)
def test_a_matching_if_match_is_accepted(
    api: TestClient, headers: dict[str, str], services: Services, created: Any, if_match: str
) -> None:
    conn_id = created.json()["id"]
    run_jobs(services)
    value = if_match.format(tag=etag_of(api, headers, conn_id))
    put = api.put(
        f"{BASE}/{conn_id}/bandwidth",
        json={"bandwidth": "1 Gbps"},
        headers={**headers, "If-Match": value},
    )
    assert put.status_code == 200, put.text
    suspend = api.post(
        f"{BASE}/{conn_id}/suspend", headers={**headers, "If-Match": put.headers["etag"]}
    )
    assert suspend.status_code == 202, suspend.text


def test_if_match_on_several_header_lines_is_one_list(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    """RFC 9110 §5.3: `If-Match: "a"` and `If-Match: "b"` on two lines mean `"a", "b"`;
    the tag on the second line counts (the fast PUT and the FastAPI actions alike)."""
    conn_id, stale = created.json()["id"], created.headers["etag"]
    run_jobs(services)

    def lines(*tags: str) -> list[tuple[str, str]]:
        return [*headers.items(), *(("If-Match", tag) for tag in tags)]

    with nothing_written(services):
        refused = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"},
                          headers=lines(stale, '"other"'))  # fmt: skip
    assert refused.status_code == 412, refused.text
    put = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"},
                  headers=lines(stale, etag_of(api, headers, conn_id)))  # fmt: skip
    assert put.status_code == 200, put.text
    suspend = api.post(f"{BASE}/{conn_id}/suspend", headers=lines('"other"', put.headers["etag"]))
    assert suspend.status_code == 202, suspend.text


def test_a_star_on_several_header_lines_is_a_star(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    """`If-Match: *` sent twice (a proxy or a client library repeating it) is `*, *` once
    joined: still "any current representation", not a 412 (it was one). A `*` among tags
    is not a star: the tags decide."""
    conn_id, stale = created.json()["id"], created.headers["etag"]
    run_jobs(services)
    twice = [*headers.items(), ("If-Match", "*"), ("If-Match", "*")]
    put = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=twice)
    assert put.status_code == 200, put.text
    with nothing_written(services):
        mixed = api.post(
            f"{BASE}/{conn_id}/suspend", headers={**headers, "If-Match": f"{stale}, *"}
        )
    assert mixed.status_code == 412, mixed.text


def test_a_weak_tag_never_matches(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    conn_id = created.json()["id"]
    run_jobs(services)
    weak = "W/" + etag_of(api, headers, conn_id)
    with nothing_written(services):
        response = api.post(f"{BASE}/{conn_id}/suspend", headers={**headers, "If-Match": weak})
    assert response.status_code == 412


@pytest.mark.parametrize("value", ["", "abc", '"unterminated', "**", "null", "0" * 2000])
def test_an_if_match_naming_no_entity_tag_is_412(
    api: TestClient, headers: dict[str, str], services: Services, created: Any, value: str
) -> None:
    """A condition that names nothing is false: 412, like a stale tag."""
    conn_id = created.json()["id"]
    with nothing_written(services):
        response = api.post(f"{BASE}/{conn_id}/suspend", headers={**headers, "If-Match": value})
    assert response.status_code == 412, response.text


def test_if_match_is_checked_after_404(api: TestClient, headers: dict[str, str]) -> None:
    missing = f"{BASE}/con_00000000000000000000000000000/suspend"
    assert api.post(missing, headers={**headers, "If-Match": '"x"'}).status_code == 404


def test_a_replay_carries_the_first_answers_etag(
    api: TestClient, headers: dict[str, str], services: Services, created: Any
) -> None:
    conn_id = created.json()["id"]
    run_jobs(services)
    keyed = {**headers, "Idempotency-Key": "etag-replay-1"}
    first = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=keyed)
    again = api.put(f"{BASE}/{conn_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=keyed)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["etag"] == first.headers["etag"]
