"""Liveness, readiness, the offline docs and the demo command's output."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from iod.app import build_services, create_app
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.network.simulated import SimulatedDriver


def test_healthz_and_readyz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.headers["x-request-id"]


def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # A PostgreSQL URL nobody listens on: the process lives, it is not ready.
    db = Database(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    services = build_services(Settings(data_dir=tmp_path), db=db, driver=SimulatedDriver())
    app = create_app(services)  # no lifespan: keys need the database
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/service-unavailable"
