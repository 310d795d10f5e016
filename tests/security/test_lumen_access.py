"""The Lumen paths (issue 19) under the same access rules as ours, on every operation of
/lumen/openapi.json: no token 401, the scope 403, `x-customer-number` missing 400 and
another customer's 403, another customer's service 404 (BOLA); nothing is written by a
refused request, and every refusal is a Lumen error list, never problem+json."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iod.app import Services
from iod.models import Customer, LumenService
from tests.security.conftest import World, mint, snapshot

ORDER = "/Customer/v3/Ordering/orderRequest"
READS = [
    ("GET", "/ProductInventory/v1/inventory"),
    ("GET", "/Network/v1/provider"),
    ("GET", "/Network/v1/location"),
    ("GET", "/Account/v1/billingAccount"),
    ("GET", ORDER + "/00000000-0000-0000-0000-000000000000"),
    ("GET", "/Product/v1/price"),
    ("GET", "/Billing/v2/CustomerBillManagement/customerBill"),
    ("GET", "/Billing/v2/CustomerBillManagement/serviceLevelChargeDetails"),
]
WRITES = [("POST", ORDER), ("POST", "/Product/v1/priceRequest")]


def number(services: Services, customer_id: str) -> str:
    with services.db.read() as session:
        found = session.get(Customer, customer_id)
        assert found is not None and found.customer_number
        return found.customer_number


def service_of(services: Services, connection_id: str) -> str:
    with services.db.read() as session:
        return str(
            session.scalar(
                select(LumenService.service_id).where(LumenService.connection_id == connection_id)
            )
        )


def delete_body(service_id: str, account: str, external_id: str = "sec-1") -> dict[str, Any]:
    return {
        "externalId": external_id,
        "billingAccount": {"id": account, "name": "x"},
        "productOrderItem": [{"id": "1", "action": "delete", "product": {"id": service_id}}],
    }


def call(world: World, op: tuple[str, str], headers: dict[str, str]) -> Any:
    method, path = op
    acme = number(world.services, world.acme.customer_id)
    body = delete_body(service_of(world.services, world.connection_id), acme)
    return world.api.request(method, path, json=body if method == "POST" else None, headers=headers)


def assert_lumen(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()[0]["code"] == code, response.text


def test_every_operation_is_listed_here(api: TestClient) -> None:
    document = api.get("/lumen/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if path != "/oauth/v2/token"
    }
    listed = {(m, ORDER + "/{orderId}" if p.startswith(ORDER + "/") else p) for m, p in READS}
    assert operations == listed | set(WRITES)


@pytest.mark.parametrize("op", READS + WRITES, ids=lambda op: f"{op[0]} {op[1]}")
def test_no_token_wrong_scope_and_customer_number(world: World, op: tuple[str, str]) -> None:
    services = world.services
    acme = number(services, world.acme.customer_id)
    before = snapshot(services)
    assert_lumen(call(world, op, {"x-customer-number": acme}), 401, "UNAUTHORIZED")
    scope = "read" if op in WRITES else "write"
    wrong = {**mint(services, world.acme, scope), "x-customer-number": acme}
    assert_lumen(call(world, op, wrong), 403, "INSUFFICIENT_SCOPE")
    assert_lumen(call(world, op, world.acme_headers), 400, "MISSING_HEADER")
    theirs = number(services, world.mallory.customer_id)
    mismatch = {**world.acme_headers, "x-customer-number": theirs}
    assert_lumen(call(world, op, mismatch), 403, "CUSTOMER_MISMATCH")
    assert snapshot(services) == before


def test_another_customers_service_is_404_and_untouched(world: World) -> None:
    services = world.services
    mallory = {
        **world.mallory_headers,
        "x-customer-number": number(services, world.mallory.customer_id),
    }
    acme_service = service_of(services, world.connection_id)
    before = snapshot(services)
    body = delete_body(acme_service, mallory["x-customer-number"])
    assert_lumen(world.api.post(ORDER, json=body, headers=mallory), 404, "SERVICE_NOT_FOUND")
    listed = world.api.get(
        "/ProductInventory/v1/inventory", params={"serviceId": acme_service}, headers=mallory
    )
    assert listed.status_code == 200 and listed.json() == {"serviceInventory": []}
    everything = world.api.get("/ProductInventory/v1/inventory", headers=mallory).json()
    assert [i["UNI Service ID"] for i in everything["serviceInventory"]] == [
        world.mallory_connection_id
    ]
    assert snapshot(services) == before


def test_an_order_without_a_token_is_refused_before_its_body_is_read(api: TestClient) -> None:
    asked = 0
    sent: list[Any] = []

    async def receive() -> Any:
        nonlocal asked
        asked += 1
        await asyncio.sleep(30)  # the body never comes

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": ORDER, "raw_path": ORDER.encode(), "query_string": b"",
        "root_path": "", "client": ("198.51.100.1", 5555), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"60000")],
        "state": {},
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(api.app(scope, receive, send), 10))
    assert asked == 0
    assert sent[0]["status"] == 401
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert json.loads(sent[1]["body"])[0]["code"] == "UNAUTHORIZED"
