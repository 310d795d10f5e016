"""Client secret rotation: the new secret works at once, the old one (and the tokens obtained
with it) during the grace period only. On SQLite and PostgreSQL, through the ASGI app."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from iod.app import Services
from iod.customers import service as customers
from iod.infra.clock import FrozenClock
from tests.conftest import Tenant

BASE = "/internet-on-demand/connections"


def rotate(services: Services, tenant: Tenant, grace: timedelta) -> str:
    with services.db.write() as session:
        return customers.rotate_secret(
            session, services.clock, tenant.client_id, grace, hasher=services.secret_hasher
        ).client_secret


def token(api: TestClient, client_id: str, secret: str, basic: bool = True) -> str | None:
    form = {"grant_type": "client_credentials"}
    if basic:
        response = api.post("/oauth2/token", data=form, auth=(client_id, secret))
    else:
        form |= {"client_id": client_id, "client_secret": secret}
        response = api.post("/oauth2/token", data=form)
    if response.status_code == 401:
        assert response.json()["error"] == "invalid_client"
        return None
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def works(api: TestClient, access_token: str) -> bool:
    response = api.get(BASE, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        assert "has been replaced" in response.json()["detail"]
    return response.status_code == 200


@pytest.mark.parametrize("basic", [True, False], ids=["basic", "form"])
def test_old_secret_works_during_the_grace_period_then_is_refused(
    api: TestClient, tenant: Tenant, services: Services, clock: FrozenClock, basic: bool
) -> None:
    old_token = token(api, tenant.client_id, tenant.client_secret, basic)
    assert old_token is not None
    new_secret = rotate(services, tenant, timedelta(hours=2))
    assert new_secret != tenant.client_secret

    new_token = token(api, tenant.client_id, new_secret, basic)
    grace_token = token(api, tenant.client_id, tenant.client_secret, basic)
    assert new_token is not None and grace_token is not None
    assert works(api, old_token) and works(api, new_token) and works(api, grace_token)

    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert works(api, grace_token)
    assert token(api, tenant.client_id, tenant.client_secret, basic) is not None
    clock.advance(timedelta(seconds=1))  # the grace period is over (its end is exclusive)
    assert token(api, tenant.client_id, tenant.client_secret, basic) is None
    assert not works(api, old_token)
    assert not works(api, grace_token)
    assert works(api, new_token)
    assert token(api, tenant.client_id, new_secret, basic) is not None


def test_no_grace_ends_the_old_secret_and_its_tokens_at_once(
    api: TestClient, tenant: Tenant, services: Services
) -> None:
    old_token = token(api, tenant.client_id, tenant.client_secret)
    assert old_token is not None and works(api, old_token)
    new_secret = rotate(services, tenant, timedelta(0))
    assert token(api, tenant.client_id, tenant.client_secret) is None
    assert not works(api, old_token)
    new_token = token(api, tenant.client_id, new_secret)
    assert new_token is not None and works(api, new_token)


def test_a_second_rotation_ends_the_first_secret(
    api: TestClient, tenant: Tenant, services: Services
) -> None:
    first_token = token(api, tenant.client_id, tenant.client_secret)
    assert first_token is not None
    second = rotate(services, tenant, timedelta(hours=1))
    second_token = token(api, tenant.client_id, second)
    third = rotate(services, tenant, timedelta(hours=1))
    assert token(api, tenant.client_id, tenant.client_secret) is None
    assert not works(api, first_token)
    assert second_token is not None and works(api, second_token)
    assert token(api, tenant.client_id, second) is not None
    assert token(api, tenant.client_id, third) is not None


def test_rotation_refuses_unknown_clients_and_negative_grace(
    services: Services, tenant: Tenant
) -> None:
    from iod.infra.errors import NotFound, ValidationFailed

    with pytest.raises(NotFound), services.db.write() as session:
        customers.rotate_secret(
            session, services.clock, "cli_nope", timedelta(hours=1), hasher=services.secret_hasher
        )
    with pytest.raises(ValidationFailed), services.db.write() as session:
        customers.rotate_secret(
            session,
            services.clock,
            tenant.client_id,
            timedelta(hours=-1),
            hasher=services.secret_hasher,
        )
    with services.db.read() as session:
        client = customers.repository.get_client(session, tenant.client_id)
        assert client is not None and client.secret_generation == 0
        assert customers.secret_matches(client, tenant.client_secret, services.secret_hasher)


def test_a_disabled_client_stays_refused_whatever_its_secrets(
    api: TestClient, tenant: Tenant, services: Services, clock: FrozenClock
) -> None:
    new_secret = rotate(services, tenant, timedelta(hours=1))
    with services.db.write() as session:
        customers.set_client_enabled(session, clock, tenant.client_id, False)
    assert token(api, tenant.client_id, new_secret) is None
    assert token(api, tenant.client_id, tenant.client_secret) is None
