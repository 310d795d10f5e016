"""A Lumen client as such tools are written: the standard library's urllib and the paths and
fields of issue 19, nothing of this project. Run against a served process by
tests/e2e/test_lumen.py:

    python lumen_client.py flow URL CLIENT_ID CLIENT_SECRET CUSTOMER_NUMBER SERVICE_ID
    python lumen_client.py bills URL CLIENT_ID CLIENT_SECRET CUSTOMER_NUMBER SERVICE_ID

flow: token → inventory (the service Active at 100 Mbps) → discovery and prices → quote a
change to 1 Gbps → order modify → inventory `Change pending`, then `Active` at 1 Gbps →
quote and order an add → the new service Active → order delete of the new one → inventory
until Disconnected → the order again (idempotent on externalId). Prints the new service id.
bills: the bills list the service's hours at 100 Mbps and at 1 Gbps (once rated).
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


def main(mode: str, url: str, client_id: str, secret: str, customer: str, first: str) -> None:
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

    if mode == "bills":
        bills(url, headers, customer, first)
        print("ok")
        return

    def service(service_id: str = first) -> dict[str, Any]:
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

    query = urllib.parse.urlencode({"productCode": "718", "masterSiteId": site})
    status, prices, _ = call("GET", f"{url}/Product/v1/price?{query}", headers)
    assert status == 200, prices
    speeds = {p["speed"]: p for p in prices["pricePerSpeed"]}
    assert speeds["1 Gbps"]["term"] == "Hourly Rate" and speeds["1 Gbps"]["price"], speeds

    def quote(**fields: Any) -> str:
        body = {"sourceSystem": "lumen_client", "customerNumber": customer,
                "currencyCode": "USD", "productCode": "718",
                "productName": "Internet On-Demand", "masterSiteId": site, **fields}  # fmt: skip
        status, answer, _ = call(
            "POST", f"{url}/Product/v1/priceRequest",
            {**headers, "Content-Type": "application/json"}, json.dumps(body).encode(),
        )  # fmt: skip
        assert status == 201, answer
        rates = {p["name"]: p for p in answer["price"]}
        assert set(rates) == {"Hourly Rate", "Monthly Rate"}, answer
        assert answer["priceRequest"]["speed"] == fields["speed"], answer
        return str(answer["id"])

    def order(
        action: str, external_id: str, service_id: str | None = first, **extra: Any
    ) -> tuple[int, Any, dict[str, str]]:
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

    def until(service_id: str, product_status: str, bandwidth: str | None = None) -> None:
        deadline = time.monotonic() + 20
        while True:
            found = service(service_id)
            if found["product"]["status"] == product_status and bandwidth in (
                None,
                found["Bandwidth"],
            ):
                return
            assert time.monotonic() < deadline, found
            time.sleep(0.2)

    # Modify: the speed travels in the quote only.
    change = quote(serviceId=first, speed="1 Gbps")
    status, placed, _ = order("modify", "lumen-mod-1", quote=[{"id": change, "name": "quoteId"}])
    assert status == 201 and placed["productOrderItem"][0]["state"] == "inProgress", placed
    assert service()["product"]["status"] == "Change pending"
    status, errors, _ = order("modify", "lumen-mod-2", quote=[{"id": change, "name": change}])
    assert status == 422 and errors[0]["code"] == "INVALID_STATUS", errors
    assert "current status is - Change pending" in errors[0]["reason"], errors
    until(first, "Active", "1 Gbps")

    # Add: a new service at the quote's location and speed.
    new = quote(partnerId=partners[0]["id"], speed="100 Mbps")
    status, added, _ = order("add", "lumen-add-1", None, quote=[{"id": new, "name": "quoteId"}])
    assert status == 201, added
    added_id = added["productOrderItem"][0]["product"]["id"]
    assert len(added_id) == 11 and added_id != first, added
    until(added_id, "Active", "100 Mbps")

    # Delete the new one.
    status, placed, _ = order("delete", "lumen-del-1", added_id)
    assert status == 201, placed
    assert placed["externalId"] == "lumen-del-1" and placed["id"], placed
    assert placed["productOrderItem"][0]["action"] == "delete", placed
    until(added_id, "Disconnected")
    status, again, replayed = order("delete", "lumen-del-1", added_id)
    assert status == 201 and again["id"] == placed["id"], again
    assert again["state"] == "completed" and replayed.get("idempotent-replayed") == "true", again
    print(added_id)
    print("ok")


def bills(url: str, headers: dict[str, str], customer: str, service_id: str) -> None:
    """Every bill's charges for the service: its hours at 100 Mbps and at 1 Gbps."""
    query = urllib.parse.urlencode({"billingAccountNumber": customer, "offset": 0, "limit": 12})
    status, answer, _ = call(
        "GET", f"{url}/Billing/v2/CustomerBillManagement/customerBill?{query}", headers
    )
    assert status == 200 and answer["customerBillDetails"], answer
    hours: dict[str, float] = {}
    for bill in answer["customerBillDetails"]:
        (summary,) = bill["documentSummaryDetails"]
        assert summary["currencyCode"] == "USD" and summary["billCharges"]["currentCharges"]
        query = urllib.parse.urlencode({"billingAccountNumber": customer,
                                        "invoiceNumber": bill["invoiceNumber"]})  # fmt: skip
        status, details, _ = call(
            "GET",
            f"{url}/Billing/v2/CustomerBillManagement/serviceLevelChargeDetails?{query}",
            {**headers, "x-billing-account-number": customer},
        )
        assert status == 200, details
        for detail in details["serviceLevelChargeDetail"]:
            for charge in detail["serviceLevelCharge"]:
                if charge["billingServiceId"] != service_id:
                    continue
                # "1 Gbps, 2.99 hours at USD 2.08/hour"
                speed, rest = charge["chargeDescription2"].split(", ", 1)
                if "hours" in rest:
                    hours[speed] = hours.get(speed, 0) + float(rest.split(" hours")[0])
                assert charge["charge"]["netAmount"], charge
    assert set(hours) == {"100 Mbps", "1 Gbps"}, hours
    # Rated four hours ahead (hours that ended a minute before): at least two whole ones
    # at 1 Gbps, wherever in its hour the change applied (three ahead gave 1.99 once).
    assert hours["1 Gbps"] >= 2, hours


if __name__ == "__main__":
    main(*sys.argv[1:7])
