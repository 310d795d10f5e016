"""The demo catalog: realistic buildings named by master-site-like ids."""

from __future__ import annotations

DEMO_LOCATIONS: list[dict[str, object]] = [
    {
        "id": "PL0001247634",
        "name": "Denver Data Center",
        "address": "1850 Pearl St, Denver, CO 80203, US",
        "capacity": "10 Gbps",
    },
    {
        "id": "PL0000381920",
        "name": "Chicago Carrier Hotel",
        "address": "350 E Cermak Rd, Chicago, IL 60616, US",
        "capacity": "100 Gbps",
        "tiers": ["50 Mbps", "100 Mbps", "200 Mbps", "500 Mbps", "1 Gbps", "2 Gbps",
                  "3 Gbps", "5 Gbps", "10 Gbps"],
    },
    {
        "id": "PL0002290011",
        "name": "Boise Branch Office",
        "address": "101 S Capitol Blvd, Boise, ID 83702, US",
        "capacity": "1 Gbps",
    },
    {
        "id": "PL0000774102",
        "name": "Small Retail Site",
        "address": "12 Main St, Golden, CO 80401, US",
        "capacity": "100 Mbps",
    },
]  # fmt: skip

DEMO_LOCATION_ID = "PL0001247634"
DEMO_CUSTOMER_NAME = "Demo Customer"
DEMO_CLIENT_ID = "demo-client"
