"""The Lumen-compatible API (issue 19) through the ASGI app, on both databases: token,
customer number, inventory, discovery, orders, errors, and one state with our API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iod.app import Services
from iod.infra.clock import FrozenClock
from iod.lumen import quotes
from iod.models import Customer, Event, LumenOrder
from tests.conftest import Tenant, get_token, run_jobs

OURS = "/internet-on-demand/connections"
INVENTORY = "/ProductInventory/v1/inventory"
ORDER = "/Customer/v3/Ordering/orderRequest"
LOC = "PL0001247634"


def number_of(services: Services, tenant: Tenant) -> str:
    with services.db.read() as session:
        customer = session.get(Customer, tenant.customer_id)
        assert customer is not None and customer.customer_number
        return customer.customer_number


def lumen_token(api: TestClient, tenant: Tenant, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    answer = api.post("/oauth/v2/token", data=form, auth=(tenant.client_id, tenant.client_secret))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    return str(body["access_token"])


@pytest.fixture
def lumen(api: TestClient, services: Services, tenant: Tenant) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {lumen_token(api, tenant)}",
        "x-customer-number": number_of(services, tenant),
    }


def is_lumen_error(answer: Any, status: int, code: str, path: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert isinstance(body, list) and body, body
    assert set(body[0]) == {"code", "reason", "propertyPath"}
    assert body[0]["code"] == code, body
    if path is not None:
        assert body[0]["propertyPath"] == path, body


def ordered(api: TestClient, lumen: dict[str, str], services: Services) -> dict[str, Any]:
    """A connection ordered through our API, active, as the Lumen inventory shows it."""
    ours = {"Authorization": lumen["Authorization"]}
    created = api.post(OURS, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=ours)
    assert created.status_code == 201
    run_jobs(services)
    items = api.get(INVENTORY, headers=lumen).json()["serviceInventory"]
    (item,) = [i for i in items if i["UNI Service ID"] == created.json()["id"]]
    return dict(item)


def order(
    service_id: str | None, action: str, external: str | int, number: str, **extra: Any
) -> Any:
    product: dict[str, Any] = {"productSpecification": {"id": "718", "name": "IOD"}}
    if service_id is not None:
        product["id"] = service_id
    return {
        "externalId": external,
        "billingAccount": {"id": number, "name": "Acme"},
        "channel": [{"id": 7, "name": "API"}],
        "note": [{"text": "from a Lumen client"}],
        "productOrderItem": [
            {"id": "1", "quantity": 1, "action": action, "product": product,
             "productOffering": {"id": "718", "name": "Internet On-Demand"}}
        ],
        **extra,
    }  # fmt: skip


def test_token_and_customer_number(api: TestClient, services: Services, make_tenant) -> None:
    acme, other = make_tenant(name="Acme"), make_tenant(name="Other")
    token = lumen_token(api, acme)
    bad = api.post(
        "/oauth/v2/token", data={"grant_type": "client_credentials"}, auth=(acme.client_id, "x")
    )
    is_lumen_error(bad, 401, "invalid_client")
    assert bad.headers["www-authenticate"].startswith("Basic")
    # The same tokens as /oauth2/token: one works on the other's paths.
    assert api.get(OURS, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    ours = get_token(api, acme)
    mine = number_of(services, acme)
    answer = api.get(
        INVENTORY, headers={"Authorization": f"Bearer {ours}", "x-customer-number": mine}
    )
    assert answer.status_code == 200 and answer.json() == {"serviceInventory": []}
    is_lumen_error(api.get(INVENTORY), 401, "UNAUTHORIZED")
    missing = api.get(INVENTORY, headers={"Authorization": f"Bearer {token}"})
    is_lumen_error(missing, 400, "MISSING_HEADER", "x-customer-number")
    theirs = {"Authorization": f"Bearer {token}", "x-customer-number": number_of(services, other)}
    is_lumen_error(api.get(INVENTORY, headers=theirs), 403, "CUSTOMER_MISMATCH")
    reader = {
        "Authorization": f"Bearer {lumen_token(api, acme, 'read')}",
        "x-customer-number": mine,
    }
    assert api.get(INVENTORY, headers=reader).status_code == 200
    refused = api.post(ORDER, json=order("77000000000", "delete", "r1", mine), headers=reader)
    is_lumen_error(refused, 403, "INSUFFICIENT_SCOPE")


def test_inventory_shows_our_connections_and_their_changes(
    api: TestClient, services: Services, lumen: dict[str, str], clock: FrozenClock, make_tenant
) -> None:
    item = ordered(api, lumen, services)
    assert len(item["serviceId"]) == 11 and item["serviceId"].isdigit()
    assert (item["status"], item["product"]["status"]) == ("Active", "Active")
    assert item["serviceType"] == "Internet On-Demand"
    assert item["Bandwidth"] == "100 Mbps"
    characteristics = {c["name"]: c["value"] for c in item["product"]["productCharacteristic"]}
    assert characteristics["Bandwidth"] == "100 Mbps"
    assert characteristics["UNI Service ID"] == item["UNI Service ID"]
    assert item["location"] == {
        "masterSiteid": LOC, "masterSiteId": LOC, "name": "Denver Data Center",
        "address": "1850 Pearl St, Denver, CO 80203, US",
    }  # fmt: skip
    assert item["locationProfile"] == {"dataCenter": True, "relatedParty": {"id": "1000"}}
    assert item["billingAccount"] == {"id": lumen["x-customer-number"], "name": "Acme"}
    ours = {"Authorization": lumen["Authorization"]}
    url = f"{OURS}/{item['UNI Service ID']}/bandwidth"
    # A change for later: still Active; a change now: Change pending until the worker applies.
    later = (clock.now() + timedelta(days=1)).isoformat()
    assert (
        api.put(
            url, json={"bandwidth": "200 Mbps", "effectiveDate": later}, headers=ours
        ).status_code
        == 200
    )
    one = {**lumen}
    by_id = api.get(INVENTORY, params={"serviceId": item["serviceId"]}, headers=one).json()
    assert by_id["serviceInventory"][0]["product"]["status"] == "Active"
    assert api.put(url, json={"bandwidth": "1 Gbps"}, headers=ours).status_code == 200
    by_id = api.get(INVENTORY, params={"serviceId": item["serviceId"]}, headers=one).json()
    assert by_id["serviceInventory"][0]["product"]["status"] == "Change pending"
    run_jobs(services)
    now = api.get(INVENTORY, params={"serviceId": item["serviceId"]}, headers=one).json()
    assert now["serviceInventory"][0]["product"]["status"] == "Active"
    assert now["serviceInventory"][0]["Bandwidth"] == "1 Gbps"
    # Another customer's service id is not there for them; filters and pages.
    other = make_tenant(name="Other")
    theirs = {"Authorization": f"Bearer {lumen_token(api, other)}",
              "x-customer-number": number_of(services, other)}  # fmt: skip
    assert api.get(INVENTORY, params={"serviceId": item["serviceId"]}, headers=theirs).json() == {
        "serviceInventory": []
    }
    assert api.get(INVENTORY, params={"serviceType": "Ethernet"}, headers=one).json() == {
        "serviceInventory": []
    }
    assert api.get(INVENTORY, params={"pageNumber": 2, "pageSize": 1}, headers=one).json() == {
        "serviceInventory": []
    }
    bad = api.get(INVENTORY, params={"serviceId": "123"}, headers=one)
    is_lumen_error(bad, 400, "INVALID_VALUE", "serviceId")


def test_a_service_id_that_is_taken_is_drawn_again(
    api: TestClient, services: Services, lumen: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order's one read (its own service id, or the drawn one taken) says "taken" for
    another connection's id, so another is drawn; the first connection keeps its own."""
    first = ordered(api, lumen, services)
    draws = iter([first["serviceId"], first["serviceId"], "77000000042"])
    monkeypatch.setattr("iod.lumen.service.new_service_id", lambda: next(draws))
    second = ordered(api, lumen, services)
    assert second["serviceId"] == "77000000042"
    assert next(draws, None) is None
    items = api.get(INVENTORY, headers=lumen).json()["serviceInventory"]
    assert {i["UNI Service ID"]: i["serviceId"] for i in items} == {
        first["UNI Service ID"]: first["serviceId"],
        second["UNI Service ID"]: "77000000042",
    }


def test_discovery(api: TestClient, lumen: dict[str, str]) -> None:
    partners = api.get("/Network/v1/provider", headers=lumen).json()["listPartners"]
    assert partners == [
        {"id": "1000", "name": "Internet On-Demand", "partnerType": "CLOUD_PARTNER"}
    ]
    sites = api.get("/Network/v1/location", params={"partnerId": "1000"}, headers=lumen).json()
    denver = next(s for s in sites["location"] if s["masterSiteId"] == LOC)
    assert denver["name"] == "Denver Data Center" and "100 Mbps" in denver["availableSpeeds"]
    none = api.get("/Network/v1/location", params={"partnerId": "43558"}, headers=lumen).json()
    assert none == {"location": []}
    accounts = api.get("/Account/v1/billingAccount", headers=lumen).json()["billingAccount"]
    assert accounts == [{"id": lumen["x-customer-number"], "name": "Acme", "hqCountry": "US"}]


def test_order_delete_is_idempotent_and_one_state(
    api: TestClient, services: Services, lumen: dict[str, str], make_tenant
) -> None:
    item = ordered(api, lumen, services)
    number = lumen["x-customer-number"]
    body = order(item["serviceId"], "delete", 1702578835, number)  # a number: its digits
    first = api.post(ORDER, json=body, headers=lumen)
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["externalId"] == "1702578835" and doc["state"] == "inProgress"
    assert doc["productOrderItem"][0]["product"]["id"] == item["serviceId"]
    assert doc["channel"] == [{"id": 7, "name": "API"}]
    ours = {"Authorization": lumen["Authorization"]}
    connection = api.get(f"{OURS}/{item['UNI Service ID']}", headers=ours).json()
    assert connection["targetStatus"] == "terminated"
    inventory = api.get(INVENTORY, headers=lumen).json()["serviceInventory"][0]
    assert inventory["product"]["status"] == "Disconnect pending"
    run_jobs(services)
    again = api.post(ORDER, json=body, headers=lumen)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == doc["id"] and again.json()["state"] == "completed"
    assert api.get(f"{ORDER}/{doc['id']}", headers=lumen).json()["state"] == "completed"
    assert (
        api.get(f"{OURS}/{item['UNI Service ID']}", headers=ours).json()["status"] == "terminated"
    )
    gone = api.get(INVENTORY, headers=lumen).json()["serviceInventory"][0]
    assert (gone["status"], gone["product"]["status"]) == ("Disconnected", "Disconnected")
    changed = api.post(ORDER, json={**body, "note": []}, headers=lumen)
    is_lumen_error(changed, 422, "DUPLICATE_EXTERNAL_ID", "externalId")
    twice = api.post(ORDER, json=order(item["serviceId"], "delete", "ext-2", number), headers=lumen)
    is_lumen_error(twice, 422, "INVALID_STATUS", "productOrderItem[0].product.id")
    assert twice.json()[0]["reason"].endswith("current status is - Disconnected")
    # The client's doing, in the same events and audit as our API's.
    with services.db.read() as session:
        names = [e.name for e in session.scalars(select(Event).order_by(Event.id))]
        actor = session.scalars(
            select(Event.actor).where(Event.name == "connection.terminate_requested")
        ).one()
    assert "connection.terminate_requested" in names and actor["type"] == "client"
    # Another customer's service is a 404, an unknown order too.
    other = make_tenant(name="Other")
    theirs = {"Authorization": f"Bearer {lumen_token(api, other)}",
              "x-customer-number": number_of(services, other)}  # fmt: skip
    body = order(item["serviceId"], "delete", "ext-3", theirs["x-customer-number"])
    is_lumen_error(api.post(ORDER, json=body, headers=theirs), 404, "SERVICE_NOT_FOUND")
    is_lumen_error(api.get(f"{ORDER}/{doc['id']}", headers=theirs), 404, "ORDER_NOT_FOUND")


def test_order_refusals(api: TestClient, services: Services, lumen: dict[str, str]) -> None:
    item = ordered(api, lumen, services)
    number = lumen["x-customer-number"]
    ours = {"Authorization": lumen["Authorization"]}
    quote = [{"id": "Q-1", "name": "quoteId"}]
    # No quote book yet (issue 15): any quote id is unknown.
    unknown = api.post(
        ORDER, json=order(item["serviceId"], "modify", "m1", number, quote=quote), headers=lumen
    )
    is_lumen_error(unknown, 422, "QUOTE_NOT_FOUND", "quote[0].id")
    no_quote = api.post(ORDER, json=order(None, "add", "a1", number), headers=lumen)
    is_lumen_error(no_quote, 422, "QUOTE_REQUIRED", "quote")
    url = f"{OURS}/{item['UNI Service ID']}/bandwidth"
    assert api.put(url, json={"bandwidth": "1 Gbps"}, headers=ours).status_code == 200
    pending = api.post(
        ORDER, json=order(item["serviceId"], "modify", "m2", number, quote=quote), headers=lumen
    )
    is_lumen_error(pending, 422, "INVALID_STATUS", "productOrderItem[0].product.id")
    assert pending.json()[0]["reason"] == (
        "The Service Id cannot be modified since the current status is - Change pending"
    )
    strict = order(item["serviceId"], "delete", "s1", number)
    strict["productOrderItem"][0]["acton"] = "delete"
    is_lumen_error(api.post(ORDER, json=strict, headers=lumen), 400, "UNKNOWN_FIELD",
                   "productOrderItem[0].acton")  # fmt: skip
    raw = json.dumps(order(item["serviceId"], "delete", "s2", number))[:-1] + ', "externalId": "x"}'
    dup = api.post(ORDER, content=raw, headers={**lumen, "content-type": "application/json"})
    is_lumen_error(dup, 400, "DUPLICATE_KEY")
    long = order(item["serviceId"], "delete", "x" * 21, number)
    is_lumen_error(api.post(ORDER, json=long, headers=lumen), 400, "INVALID_VALUE", "externalId")
    channel = order(item["serviceId"], "delete", "c1", number)
    channel["channel"] = [{"id": [1], "name": "API"}]
    is_lumen_error(api.post(ORDER, json=channel, headers=lumen), 400, "INVALID_VALUE",
                   "channel[0].id")  # fmt: skip
    account = order(item["serviceId"], "delete", "b1", "1-NOTMINE")
    is_lumen_error(api.post(ORDER, json=account, headers=lumen), 422, "INVALID_BILLING_ACCOUNT")
    text = api.post(ORDER, content="x", headers={**lumen, "content-type": "text/plain"})
    is_lumen_error(text, 415, "UNSUPPORTED_MEDIA_TYPE")
    is_lumen_error(api.get("/ProductInventory/v1/nothing", headers=lumen), 404, "NOT_FOUND")
    # Refused by the middleware before any route, in the Lumen shape all the same.
    big = b"{" + b" " * 70_000 + b"}"
    too_large = api.post(ORDER, content=big, headers={**lumen, "content-type": "application/json"})
    is_lumen_error(too_large, 413, "PAYLOAD_TOO_LARGE")
    is_lumen_error(api.delete(INVENTORY, headers=lumen), 405, "METHOD_NOT_ALLOWED")
    # Nothing of the refused orders was kept or done.
    assert api.get(f"{OURS}/{item['UNI Service ID']}", headers=ours).json()["status"] == "active"


class Book:
    """The quote book of the money feature, as a test double at that seam."""

    def __init__(self) -> None:
        self.quotes: dict[str, quotes.Quote] = {}

    def find(self, session: Session, customer_id: str, quote_id: str) -> quotes.Quote | None:
        quote = self.quotes.get(quote_id)
        return quote if quote is not None and quote.customer_id == customer_id else None

    def mark_ordered(self, session: Session, quote_id: str, order_id: str) -> None:
        self.quotes[quote_id] = replace(self.quotes[quote_id], ordered_by=order_id)


@pytest.fixture
def book() -> Iterator[Book]:
    mine = Book()
    previous = quotes.use(mine)
    yield mine
    quotes.use(previous)


def test_add_and_modify_with_quotes(
    api: TestClient, services: Services, lumen: dict[str, str], tenant: Tenant,
    clock: FrozenClock, book: Book,
) -> None:  # fmt: skip
    number = lumen["x-customer-number"]
    until = clock.now() + timedelta(minutes=15)
    book.quotes["Q-add"] = quotes.Quote("Q-add", tenant.customer_id, LOC, 200, None, until)
    added = api.post(
        ORDER,
        json=order(None, "add", "a1", number, quote=[{"id": "Q-add", "name": "Q-add"}]),
        headers=lumen,
    )
    assert added.status_code == 201, added.text
    service_id = added.json()["productOrderItem"][0]["product"]["id"]
    (item,) = api.get(INVENTORY, params={"serviceId": service_id}, headers=lumen).json()[
        "serviceInventory"
    ]
    assert (item["product"]["status"], item["Bandwidth"]) == ("Provisioning", "200 Mbps")
    run_jobs(services)
    assert api.get(f"{ORDER}/{added.json()['id']}", headers=lumen).json()["state"] == "completed"
    reused = api.post(
        ORDER, json=order(None, "add", "a2", number, quote=[{"id": "Q-add"}]), headers=lumen
    )
    is_lumen_error(reused, 422, "QUOTE_ALREADY_ORDERED", "quote[0].id")
    book.quotes["Q-mod"] = quotes.Quote("Q-mod", tenant.customer_id, LOC, 1000, service_id, until)
    modify = order(service_id, "modify", "m1", number, quote=[{"id": "Q-mod", "name": "quoteId"}])
    changed = api.post(ORDER, json=modify, headers=lumen)
    assert changed.status_code == 201 and changed.json()["state"] == "inProgress"
    (item,) = api.get(INVENTORY, params={"serviceId": service_id}, headers=lumen).json()[
        "serviceInventory"
    ]
    assert (item["product"]["status"], item["Bandwidth"]) == ("Change pending", "200 Mbps")
    run_jobs(services)
    (item,) = api.get(INVENTORY, params={"serviceId": service_id}, headers=lumen).json()[
        "serviceInventory"
    ]
    assert (item["product"]["status"], item["Bandwidth"]) == ("Active", "1 Gbps")
    ours = api.get(
        f"{OURS}/{item['UNI Service ID']}", headers={"Authorization": lumen["Authorization"]}
    )
    assert ours.json()["bandwidth"] == "1 Gbps"
    book.quotes["Q-old"] = quotes.Quote("Q-old", tenant.customer_id, LOC, 500, service_id, until)
    clock.advance(timedelta(minutes=16))
    expired = api.post(
        ORDER,
        json=order(service_id, "modify", "m2", number, quote=[{"id": "Q-old"}]),
        headers=lumen,
    )
    is_lumen_error(expired, 422, "QUOTE_EXPIRED", "quote[0].id")


def test_own_openapi_document(api: TestClient) -> None:
    lumen = api.get("/lumen/openapi.json").json()
    assert {"/oauth/v2/token", INVENTORY, ORDER, "/Network/v1/provider"} <= set(lumen["paths"])
    ours = api.get("/openapi.json").json()
    assert not any(p.startswith(("/ProductInventory", "/oauth/v2")) for p in ours["paths"])
    create = lumen["paths"][ORDER]["post"]
    assert {"400", "401", "403", "404", "422"} <= set(create["responses"])
    assert create["parameters"][0]["name"] == "x-customer-number"


def test_concurrent_repeats_of_one_order_make_one(
    api: TestClient, services: Services, lumen: dict[str, str]
) -> None:
    item = ordered(api, lumen, services)
    body = order(item["serviceId"], "delete", "same-1", lumen["x-customer-number"])

    def place(_: int) -> tuple[int, str]:
        answer = api.post(ORDER, json=body, headers=lumen)
        return answer.status_code, answer.json()["id"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(place, range(4)))
    assert {status for status, _ in answers} == {201}
    assert len({order_id for _, order_id in answers}) == 1
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(LumenOrder)) == 1
        requested = session.scalars(
            select(Event.name).where(Event.name == "connection.terminate_requested")
        ).all()
    assert len(requested) == 1
