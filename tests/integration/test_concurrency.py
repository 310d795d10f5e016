"""Concurrent orders cannot squeeze past a location's capacity, on either database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from tests.conftest import get_token


def test_concurrent_creates_respect_capacity(api: TestClient, tenant) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {get_token(api, tenant)}"}
    body = {"bandwidth": "50 Mbps", "locationId": "PL0000774102"}  # a 100 Mbps port

    def order(_: int) -> int:
        return api.post("/internet-on-demand/connections", json=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(order, range(8)))
    assert sorted(statuses) == [201, 201] + [409] * 6
    listed = api.get("/internet-on-demand/connections", headers=headers).json()["connections"]
    assert len(listed) == 2
