"""A NUL character anywhere a client can put one: PostgreSQL cannot store or compare text
with a NUL (psycopg raises DataError), so one that reached a query was a 500 there. The URL
is answered once for every route (`middleware.nul_in_url`: 404 in the path, 400 in the
query); bodies by each field's rule."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from tests.api.test_lumen import LOC, ORDER, number_of, order, ordered
from tests.api.test_lumen import lumen as lumen
from tests.api.test_lumen_money import ask, headers_of
from tests.api.test_lumen_money import clock as clock
from tests.api.test_lumen_money import priced as priced

NUL = "a\x00b"


def test_no_route_fails_on_a_nul_in_its_path_or_query(
    api: TestClient, headers: dict[str, str]
) -> None:
    spec = api.get("/openapi.json").json()
    failed = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            url = re.sub(r"\{[^}]+\}", "x%00y", path)
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            asked = [(url, {})] if "%00" in url else []
            asked += [(re.sub(r"\{[^}]+\}", "x", path), {name: NUL}) for name in names]
            for target, params in asked:
                answer = api.request(method.upper(), target, params=params, headers=headers)
                if answer.status_code != (400 if params else 404):
                    failed.append((method, target, params, answer.status_code))
    assert not failed, failed


def test_the_refusal_names_the_path_or_each_parameter(
    api: TestClient, headers: dict[str, str]
) -> None:
    answer = api.get("/internet-on-demand/locations/PL%00", headers=headers)
    assert answer.status_code == 404, answer.text  # as any garbage id
    assert answer.headers["content-type"] == "application/problem+json"
    answer = api.get(
        "/internet-on-demand/connections?status=active%00&limit=5&location=%00", headers=headers
    )
    assert [e["pointer"] for e in answer.json()["errors"]] == ["/query/status", "/query/location"]
    # Portal pages too, before any of their own handling.
    assert api.get("/portal/connections/x%00y").status_code == 404
    assert api.get("/portal/connections?q=%00").status_code == 400


@pytest.mark.parametrize(
    "field", ["sourceSystem", "productName", "customerPurchaseOrderNumber",
              "customerPriceRequestDescription", "PartnerId", "speed", "masterSiteId"],
)  # fmt: skip
def test_lumen_price_request_fields(
    api: TestClient, services: Services, priced: Services, tenant: Any, field: str
) -> None:
    answer = ask(api, headers_of(api, services, tenant), **{"masterSiteId": LOC, field: NUL})
    assert answer.status_code < 500, answer.text


@pytest.mark.parametrize("where", ["note", "channel", "offering", "external", "contact"])
def test_lumen_order_fields(
    api: TestClient, services: Services, lumen: dict[str, str], tenant: Any, where: str
) -> None:
    item = ordered(api, lumen, services)
    body = order(item["serviceId"], "modify", "124", number_of(services, tenant))
    if where == "note":
        body["note"] = [{"text": NUL, "author": NUL, "id": NUL, "date": NUL}]
    elif where == "channel":
        body["channel"] = [{"id": NUL, "name": NUL}]
    elif where == "offering":
        body["productOrderItem"][0]["productOffering"] = {"id": NUL, "name": NUL}
    elif where == "external":
        body["externalId"] = NUL
    else:
        body["relatedContactInformation"] = [{"name": NUL, "value": NUL}]
    answer = api.post(ORDER, json=body, headers=lumen)
    assert answer.status_code < 500, answer.text
