"""The fast writes (connections/fastpath.py, `ConnectionWriteFastPath`) answer POST
/connections and PUT …/bandwidth exactly as their FastAPI routes do.

Each case is sent to two apps on the same database: the app as served, and the same app
without the fast layer (its FastAPI route answers everything). Each app has a tenant of its
own with the same history, so the two answers differ only in what is new per request (ids,
the IPv4 block allocated, the request id, and the ETag, which names the ids): those are
replaced by placeholders in order of appearance, and each 2xx ETag is checked against a GET
of the connection first. A spy on the fast layer's downstream app says whether the fast
layer answered itself, so a case cannot pass by both apps taking the same route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from iod.app import Services, build_services, create_app
from iod.connections.fastpath import ConnectionWriteFastPath
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Database
from iod.locations import catalog
from iod.locations import service as locations
from iod.models import AuditEvent
from iod.network.simulated import SimulatedDriver
from tests.conftest import get_token, run_jobs

BASE = "/internet-on-demand/connections"
LOC = "PL0001247634"
JSON = "application/json"
ID = re.compile(r"\b(?:con|chg|cli)_[0-9a-z]{29}\b")
TAG = re.compile(r"\b[0-9a-f]{32}\b")
BLOCK = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}\b")
LATER = "2030-01-01T00:00:00Z"
ORDER = {"bandwidth": "100 Mbps", "locationId": LOC}


@dataclass
class Side:
    """One app, a tenant of its own, and whether its fast layer handed requests on."""

    client: TestClient
    headers: dict[str, str]
    read_only: dict[str, str]
    handed_on: list[str] = field(default_factory=list)
    connection: str = ""


def _without_fast_writes(services: Services) -> Any:
    app = create_app(services, run_worker=False)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not ConnectionWriteFastPath]
    return app


def _spy(client: TestClient, side: Side) -> None:
    """Wraps the fast layer's downstream app: each request it hands on is noted."""
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, ConnectionWriteFastPath):
        layer = layer.app
    downstream = layer.app

    async def noted(scope: Scope, receive: Receive, send: Send) -> None:
        side.handed_on.append(f"{scope['method']} {scope['path']}")
        await downstream(scope, receive, send)

    layer.app = noted


@pytest.fixture
def sides(services: Services, make_tenant: Any) -> Iterator[tuple[Side, Side]]:
    fast_app = create_app(services, run_worker=False)
    with (
        TestClient(fast_app, raise_server_exceptions=False) as fast_client,
        TestClient(_without_fast_writes(services), raise_server_exceptions=False) as route_client,
    ):
        made = []
        for client in (fast_client, route_client):
            tenant = make_tenant()
            made.append(
                Side(
                    client,
                    {"Authorization": f"Bearer {get_token(client, tenant)}"},
                    {"Authorization": f"Bearer {get_token(client, tenant, 'read')}"},
                )
            )
        fast, route = made
        _spy(fast_client, fast)
        yield fast, route


def _normalised(side: Side, response: Any) -> tuple[int, list[tuple[str, str]], Any]:
    """Status, headers and body with what is new per request replaced by placeholders."""
    seen: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0), f"<id {len(seen)}>")

    request_id = response.headers["x-request-id"]

    def plain(text: str) -> str:
        text = text.replace(request_id, "<request id>")
        return TAG.sub("<tag>", BLOCK.sub("<block>", ID.sub(name, text)))

    if 200 <= response.status_code < 300:  # its ETag is the connection's, as a GET says
        got = side.client.get(f"{BASE}/{response.json()['id']}", headers=side.headers)
        assert response.headers["etag"] == got.headers["etag"]
    body = json.loads(plain(response.text)) if response.content else None
    # Its length varies with the IPv4 block's digits.
    assert response.headers["content-length"] == str(len(response.content))
    headers = sorted(
        (k, "<varies>" if k in ("x-request-id", "etag", "content-length") else plain(v))
        for k, v in response.headers.items()
    )
    return response.status_code, headers, body


def _connection(side: Side) -> str:
    made = side.client.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC},
                            headers=side.headers)  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


@dataclass(frozen=True)
class Case:
    name: str
    method: str  # POST: create; PUT: the bandwidth of the side's connection
    body: Any  # bytes as sent, or a JSON document
    to_route: bool  # handed on by the fast layer to the route (else answered by it)
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "write"  # write, read (a read-only token), none or bad
    path: str | None = None  # instead of the side's connection's


def _j(document: Any) -> bytes:
    return json.dumps(document).encode()


CASES = [
    Case("create", "POST", {"bandwidth": "100 Mbps", "locationId": LOC}, False, 201),
    Case("create, all fields", "POST",
         {"bandwidth": "1 Gbps", "locationId": LOC, "description": "Büro ✓",
          "ipv4PrefixLength": 29}, False, 201),
    Case("create, charset", "POST", {"bandwidth": "100 Mbps", "locationId": LOC}, False, 201,
         {"Content-Type": "application/json; charset=utf-8"}),
    Case("create, unknown location", "POST",
         {"bandwidth": "100 Mbps", "locationId": "XX0000000000"}, False, 400),
    Case("create, tier not offered", "POST",
         {"bandwidth": "7 Mbps", "locationId": LOC}, False, 400),
    Case("create, missing field", "POST", {"bandwidth": "100 Mbps"}, True, 400),
    Case("create, unknown field", "POST",
         {"bandwidth": "100 Mbps", "locationId": LOC, "location": LOC}, True, 400),
    Case("create, bad bandwidth", "POST",
         {"bandwidth": "fast", "locationId": LOC}, True, 400),
    Case("create, not JSON", "POST", b'{"bandwidth": ', True, 400),
    Case("create, not UTF-8", "POST", b'{"bandwidth": "\xff"}', True, 400),
    Case("create, repeated key", "POST",
         b'{"bandwidth": "100 Mbps", "bandwidth": "1 Gbps", "locationId": "PL0001247634"}',
         True, 400),
    Case("create, an array", "POST", b"[]", True, 400),
    Case("create, nested too deep", "POST",
         b'{"description": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", True, 400),
    Case("create, no body", "POST", b"", True, 400),
    Case("create, text/plain", "POST", {"bandwidth": "100 Mbps", "locationId": LOC}, True,
         415, {"Content-Type": "text/plain"}),
    Case("create, +json", "POST", {"bandwidth": "100 Mbps", "locationId": LOC}, True, 201,
         {"Content-Type": "application/vnd.x+json"}),
    Case("create, read-only token", "POST", {"bandwidth": "100 Mbps", "locationId": LOC},
         False, 403, auth="read"),
    Case("create, bad token", "POST", {"bandwidth": "100 Mbps", "locationId": LOC},
         False, 401, auth="bad"),  # refused by the middleware: it reaches neither
    Case("create, no token", "POST", {"bandwidth": "100 Mbps", "locationId": LOC},
         False, 401, auth="none"),
    Case("put", "PUT", {"bandwidth": "1 Gbps"}, False, 200),
    Case("put, the same bandwidth", "PUT", {"bandwidth": "100 Mbps"}, False, 200),
    Case("put, later", "PUT", {"bandwidth": "1 Gbps", "effectiveDate": LATER}, False, 200),
    Case("put, a boost", "PUT",
         {"bandwidth": "1 Gbps", "revertAt": "2030-01-02T00:00:00Z"}, False, 200),
    Case("put, If-Match *", "PUT", {"bandwidth": "1 Gbps"}, False, 200, {"If-Match": "*"}),
    Case("put, stale If-Match", "PUT", {"bandwidth": "1 Gbps"}, False, 412,
         {"If-Match": '"stale"'}),
    Case("put, too far ahead", "PUT",
         {"bandwidth": "1 Gbps", "effectiveDate": "2999-01-01T00:00:00Z"}, False, 400),
    Case("put, revert before", "PUT",
         {"bandwidth": "1 Gbps", "effectiveDate": LATER, "revertAt": "2029-01-01T00:00:00Z"},
         False, 400),
    Case("put, tier not offered", "PUT", {"bandwidth": "7 Mbps"}, False, 400),
    Case("put, unknown connection", "PUT", {"bandwidth": "1 Gbps"}, False, 404,
         path=f"{BASE}/con_{'0' * 29}/bandwidth"),
    Case("put, not an id", "PUT", {"bandwidth": "1 Gbps"}, True, 404,
         path=f"{BASE}/nope/bandwidth"),
    Case("put, unknown field", "PUT", {"bandwidth": "1 Gbps", "when": LATER}, True, 400),
    Case("put, bad date", "PUT", {"bandwidth": "1 Gbps", "effectiveDate": "soon"}, True, 400),
    Case("put, null bandwidth", "PUT", {"bandwidth": None}, True, 400),
    Case("put, no body", "PUT", b"", True, 400),
    Case("put, text/plain", "PUT", {"bandwidth": "1 Gbps"}, True, 415,
         {"Content-Type": "text/plain"}),
    Case("put, read-only token", "PUT", {"bandwidth": "1 Gbps"}, False, 403, auth="read"),
    Case("put, bad token", "PUT", {"bandwidth": "1 Gbps"}, False, 401, auth="bad"),
    Case("create, an Idempotency-Key", "POST", ORDER, False, 201, {"Idempotency-Key": "k-1"}),
    Case("put, an Idempotency-Key", "PUT", {"bandwidth": "1 Gbps"}, False, 200,
         {"Idempotency-Key": "a:b/c+d=e~f.g_h-1"}),
    Case("put, a refusal with an Idempotency-Key", "PUT", {"bandwidth": "7 Mbps"}, False, 400,
         {"Idempotency-Key": "k-2"}),
    Case("put, a stale If-Match with an Idempotency-Key", "PUT", {"bandwidth": "1 Gbps"},
         False, 412, {"If-Match": '"stale"', "Idempotency-Key": "k-3"}),
    Case("put, a malformed Idempotency-Key", "PUT", {"bandwidth": "1 Gbps"}, True, 400,
         {"Idempotency-Key": "no spaces"}),
    Case("put, an Idempotency-Key too long", "PUT", {"bandwidth": "1 Gbps"}, True, 400,
         {"Idempotency-Key": "k" * 256}),
    Case("create, the longest Idempotency-Key", "POST", ORDER, False, 201,
         {"Idempotency-Key": "k" * 255}),
    Case("create, an Idempotency-Key and a bad body", "POST", {"bandwidth": "fast"}, True,
         400, {"Idempotency-Key": "k-4"}),
]  # fmt: skip


def _send(side: Side, case: Case) -> Any:
    headers = {"Content-Type": JSON, **case.headers}
    if case.auth == "write":
        headers.update(side.headers)
    elif case.auth == "read":
        headers.update(side.read_only)
    elif case.auth == "bad":
        headers["Authorization"] = "Bearer not-a-token"
    path = case.path or (BASE if case.method == "POST" else f"{BASE}/{side.connection}/bandwidth")
    content = case.body if isinstance(case.body, bytes) else _j(case.body)
    return side.client.request(case.method, path, content=content, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_fast_writes_answer_as_the_routes(
    services: Services, sides: tuple[Side, Side], case: Case
) -> None:
    fast, route = sides
    if case.method == "PUT":
        for side in sides:
            side.connection = _connection(side)
        run_jobs(services)  # active
    fast.handed_on.clear()
    answers = [_send(side, case) for side in sides]
    assert answers[0].status_code == case.status, answers[0].text
    assert fast.handed_on == ([f"{case.method} {answers[0].url.path}"] if case.to_route else [])
    assert _normalised(fast, answers[0]) == _normalised(route, answers[1])


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_an_idempotency_key_replays_as_the_routes_do(
    services: Services, sides: tuple[Side, Side], method: str
) -> None:
    """The first answer, its replay and a reuse for another request (422), from the fast
    layer (which answers all three) and from the route alone: the same, and acted on once."""
    answers = []
    for side in sides:
        side.connection = _connection(side)
        run_jobs(services)
        if method == "POST":
            path, bodies = BASE, [ORDER, ORDER, {**ORDER, "bandwidth": "1 Gbps"}]
        else:
            path = f"{BASE}/{side.connection}/bandwidth"
            bodies = [{"bandwidth": "1 Gbps"}, {"bandwidth": "1 Gbps"}, {"bandwidth": "200 Mbps"}]
        headers = {**side.headers, "Idempotency-Key": "k-1"}
        side.handed_on.clear()
        sent = [side.client.request(method, path, json=b, headers=headers) for b in bodies]
        done = 201 if method == "POST" else 200
        assert [r.status_code for r in sent] == [done, done, 422], sent[2].text
        assert sent[1].headers["idempotent-replayed"] == "true"
        assert sent[1].json() == sent[0].json()
        answers.append([_normalised(side, r) for r in sent])
        if method == "PUT":
            changes = side.client.get(
                f"{BASE}/{side.connection}/bandwidth-changes", headers=side.headers
            )
            assert len(changes.json()["bandwidthChanges"]) == 1, changes.text
    assert [f for f in sides[0].handed_on if not f.startswith("GET ")] == []
    assert answers[0] == answers[1]


def test_a_repeated_idempotency_key_header_goes_to_the_route(
    services: Services, sides: tuple[Side, Side]
) -> None:
    fast, _ = sides
    answers = []
    for side in sides:
        headers = [
            *side.headers.items(), ("Content-Type", JSON),
            ("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2"),
        ]  # fmt: skip
        answers.append(side.client.post(BASE, content=_j(ORDER), headers=headers))
    assert fast.handed_on == [f"POST {BASE}"]
    assert answers[0].status_code == answers[1].status_code


def test_a_fast_write_is_audited_as_the_routes_are(
    services: Services, sides: tuple[Side, Side]
) -> None:
    """The audit records of a fast write name the client, its address and the request id,
    as the route's do."""
    audited = []
    for side in sides:
        made = side.client.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC},
                                headers=side.headers)  # fmt: skip
        assert made.status_code == 201
        with services.db.read() as session:
            rows = session.scalars(
                select(AuditEvent).where(AuditEvent.target_id == made.json()["id"])
            ).all()
        assert rows
        for row in rows:
            assert (row.actor_type, row.request_id) == ("client", made.headers["x-request-id"])
        audited.append(sorted((r.action, r.source) for r in rows))
    assert sides[0].handed_on == []
    assert audited[0] == audited[1]


def test_over_the_write_limit_both_answer_429_alike(
    database: Database,
    clock: FrozenClock,
    driver: SimulatedDriver,
    settings: Settings,
    make_tenant: Any,
) -> None:
    """The rate limit is taken by the fast layer's bearer check as by the route's: the
    same 429 and RateLimit-* headers once the burst is spent (the limiters' clock stands
    still, so nothing refills)."""
    limited = settings.model_copy(
        update={"rate_limit_writes_per_second": 0.001, "rate_limit_writes_burst": 2}
    )
    services = build_services(limited, db=database, clock=clock, driver=driver, ticker=lambda: 0)
    with database.write() as session:
        locations.upsert(session, clock, locations.parse_catalog(catalog.DEMO_LOCATIONS))
    fast_app = create_app(services, run_worker=False)
    answers: list[list[tuple[int, list[tuple[str, str]], Any]]] = []
    with (
        TestClient(fast_app, raise_server_exceptions=False) as fast_client,
        TestClient(_without_fast_writes(services), raise_server_exceptions=False) as route_client,
    ):
        fast = Side(fast_client, {}, {})
        _spy(fast_client, fast)
        for client in (fast_client, route_client):
            tenant = make_tenant()
            side = Side(client, {"Authorization": f"Bearer {get_token(client, tenant)}"}, {})
            sent = [client.post(BASE, json=ORDER, headers=side.headers) for _ in range(3)]
            assert [r.status_code for r in sent] == [201, 201, 429]
            assert sent[2].headers["retry-after"]
            answers.append([_normalised(side, r) for r in sent])
        assert [f for f in fast.handed_on if f.startswith(BASE)] == []
    assert answers[0] == answers[1]


def test_a_body_over_the_limit_while_read_is_the_routes_413(sides: tuple[Side, Side]) -> None:
    """A chunked body (no length declared) that grows past the limit fails while the fast
    layer reads it: the route gets that failure and answers it, as it would alone."""
    answers = []
    for side in sides:
        oversized = b'{"description": "' + b"x" * 70_000 + b'"}'
        answers.append(
            side.client.post(
                BASE,
                content=iter([oversized[:1000], oversized[1000:]]),  # chunked
                headers={**side.headers, "Content-Type": JSON},
            )
        )
    assert answers[0].status_code == 413, answers[0].text
    assert sides[0].handed_on == [f"POST {BASE}"]
    assert _normalised(sides[0], answers[0]) == _normalised(sides[1], answers[1])
