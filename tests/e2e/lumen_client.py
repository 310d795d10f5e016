"""A Lumen client as such tools are written: the standard library's urllib and the paths and
fields of issue 19, nothing of this project. Run against a served process by
tests/e2e/test_lumen.py:

    python lumen_client.py URL CLIENT_ID CLIENT_SECRET CUSTOMER_NUMBER SERVICE_ID

token → inventory (the service Active, its Bandwidth) → order delete → inventory until
Disconnected → the order again (idempotent on externalId). Add and modify need a quote
(`POST /Product/v1/priceRequest`, issue 15): until quotes exist, the client checks the
answer it gets today for an unknown quote, Lumen's 422.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def call(
    method: str, url: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        answer = error.code, json.loads(error.read()), error.headers
    return answer[0], answer[1], {k.lower(): v for k, v in answer[2].items()}


def main(url: str, client_id: str, secret: str, customer: str, service_id: str) -> None:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
    status, token, _ = call(
        "POST", f"{url}/oauth/v2/token",
        {"Authorization": f"Basic {basic}",
         "Content-Type": "application/x-www-form-urlencoded"},
        form,
    )  # fmt: skip
    assert status == 200 and token["token_type"] == "Bearer" and token["expires_in"] > 0, token
    headers = {
        "Authorization": f"Bearer {token['access_token']}",
        "x-customer-number": customer,
        "Accept": "application/json",
    }

    def service() -> dict[str, Any]:
        query = urllib.parse.urlencode(
            {"serviceId": service_id, "serviceType": "Internet On-Demand",
             "pageNumber": 1, "pageSize": 10}
        )  # fmt: skip
        status, body, _ = call("GET", f"{url}/ProductInventory/v1/inventory?{query}", headers)
        assert status == 200, body
        (item,) = body["serviceInventory"]
        return dict(item)

    item = service()
    assert item["product"]["status"] == "Active", item
    bandwidth = {c["name"]: c["value"] for c in item["product"]["productCharacteristic"]}
    assert bandwidth["Bandwidth"] == item["Bandwidth"] == "100 Mbps", item
    site = item["location"].get("masterSiteId") or item["location"]["masterSiteid"]

    partners = call("GET", f"{url}/Network/v1/provider", headers)[1]["listPartners"]
    query = urllib.parse.urlencode({"partnerId": partners[0]["id"]})
    sites = call("GET", f"{url}/Network/v1/location?{query}", headers)[1]["location"]
    assert site in [s["masterSiteId"] for s in sites], sites
    account = call("GET", f"{url}/Account/v1/billingAccount", headers)[1]["billingAccount"][0]

    def order(action: str, external_id: str, **extra: Any) -> tuple[int, Any, dict[str, str]]:
        product: dict[str, Any] = {
            "productCharacteristic": [],
            "productSpecification": {"id": "718", "name": "Internet On-Demand"},
        }
        if action != "add":
            product["id"] = service_id
        body = {
            "externalId": external_id,
            "billingAccount": {"id": account["id"], "name": account["name"]},
            "channel": [{"id": 1, "name": "API"}],
            "note": [{"text": "lumen_client.py"}],
            "productOrderItem": [
                {"id": "1", "quantity": 1, "action": action, "product": product,
                 "productOffering": {"id": "718", "name": "Internet On-Demand"}}
            ],
            **extra,
        }  # fmt: skip
        return call(
            "POST", f"{url}/Customer/v3/Ordering/orderRequest",
            {**headers, "Content-Type": "application/json"}, json.dumps(body).encode(),
        )  # fmt: skip

    # Waiting on issue 15 (quotes): a modify with a quote id answers Lumen's 422 today.
    status, errors, _ = order("modify", "lumen-mod-1", quote=[{"id": "Q-1", "name": "quoteId"}])
    assert status == 422 and errors[0]["code"] == "QUOTE_NOT_FOUND", errors
    assert errors[0]["propertyPath"] == "quote[0].id", errors

    status, placed, _ = order("delete", "lumen-del-1")
    assert status == 201, placed
    assert placed["externalId"] == "lumen-del-1" and placed["id"], placed
    assert placed["productOrderItem"][0]["action"] == "delete", placed
    deadline = time.monotonic() + 20
    while service()["product"]["status"] != "Disconnected":
        assert time.monotonic() < deadline, service()
        time.sleep(0.2)
    status, again, replayed = order("delete", "lumen-del-1")
    assert status == 201 and again["id"] == placed["id"], again
    assert again["state"] == "completed" and replayed.get("idempotent-replayed") == "true", again
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:6])
