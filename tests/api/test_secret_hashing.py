"""Client secrets stored as a keyed hash, and argon2-stored secrets upgraded at their next
successful use. On SQLite and PostgreSQL, through the ASGI app."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from iod.app import Services
from iod.auth.passwords import SecretHasher, hash_password, new_secret
from iod.customers import repository
from iod.customers import service as customers
from iod.models import Client
from tests.conftest import Tenant

GRANT = {"grant_type": "client_credentials"}


def stored(services: Services, client_id: str) -> tuple[str, str | None]:
    with services.db.read() as session:
        client = repository.get_client(session, client_id)
        assert client is not None
        return client.secret_hash, client.previous_secret_hash


def set_hashes(services: Services, client_id: str, **values: object) -> None:
    with services.db.write() as session:
        session.execute(update(Client).where(Client.id == client_id).values(**values))


def token_status(api: TestClient, client_id: str, secret: str) -> int:
    return api.post("/oauth2/token", data=GRANT, auth=(client_id, secret)).status_code


def test_new_secrets_are_stored_as_a_keyed_hash_useless_without_the_key(
    api: TestClient, services: Services, tenant: Tenant
) -> None:
    current, _ = stored(services, tenant.client_id)
    assert current.startswith(f"hmac-sha256${services.secret_hasher.key_id}$")
    assert tenant.client_secret not in current
    assert token_status(api, tenant.client_id, tenant.client_secret) == 200
    # Whoever has the database but another key (or none) cannot check a guess against it.
    assert not SecretHasher(b"k" * 32).verify(current, tenant.client_secret).ok


def test_an_argon2_stored_secret_is_upgraded_at_its_next_successful_use(
    api: TestClient, services: Services, tenant: Tenant
) -> None:
    legacy = hash_password(tenant.client_secret)
    set_hashes(services, tenant.client_id, secret_hash=legacy)

    # A wrong secret changes nothing.
    assert token_status(api, tenant.client_id, new_secret()) == 401
    assert stored(services, tenant.client_id)[0] == legacy

    assert token_status(api, tenant.client_id, tenant.client_secret) == 200
    upgraded, _ = stored(services, tenant.client_id)
    assert services.secret_hasher.is_current(upgraded)
    assert services.secret_hasher.verify(upgraded, tenant.client_secret).ok
    # And it keeps working, now on the keyed hash.
    assert token_status(api, tenant.client_id, tenant.client_secret) == 200
    assert stored(services, tenant.client_id)[0] == upgraded


def test_an_argon2_stored_previous_secret_is_upgraded_in_its_grace_period(
    api: TestClient, services: Services, tenant: Tenant
) -> None:
    with services.db.write() as session:
        rotated = customers.rotate_secret(
            session, services.clock, tenant.client_id, timedelta(hours=1),
            hasher=services.secret_hasher,
        )  # fmt: skip
    set_hashes(services, tenant.client_id, previous_secret_hash=hash_password(tenant.client_secret))

    assert token_status(api, tenant.client_id, tenant.client_secret) == 200
    current, previous = stored(services, tenant.client_id)
    assert previous is not None and services.secret_hasher.is_current(previous)
    assert services.secret_hasher.verify(current, rotated.client_secret).ok
    assert token_status(api, tenant.client_id, rotated.client_secret) == 200


def test_an_upgrade_never_overwrites_a_rotation_that_came_in_between(
    services: Services, tenant: Tenant
) -> None:
    legacy = hash_password(tenant.client_secret)
    set_hashes(services, tenant.client_id, secret_hash=legacy)
    with services.db.read() as session:
        client = repository.get_client(session, tenant.client_id)
        check = customers.check_client_secret(
            client, tenant.client_secret, services.clock.now(), services.secret_hasher
        )
    assert check.generation == 0 and set(check.upgrades) == {"secret_hash"}
    with services.db.write() as session:  # the rotation wins the race
        customers.rotate_secret(
            session, services.clock, tenant.client_id, hasher=services.secret_hasher
        )
    rotated, _ = stored(services, tenant.client_id)
    with services.db.write() as session:
        assert customers.upgrade_secret_hashes(session, tenant.client_id, check.upgrades) == 0
    assert stored(services, tenant.client_id)[0] == rotated


def test_a_person_chosen_secret_stays_with_argon2(api: TestClient, services: Services) -> None:
    with services.db.write() as session:
        customer = customers.create_customer(session, services.clock, "Chosen")
        new = customers.create_client(
            session, services.clock, customer.id, "read",
            hasher=services.secret_hasher, client_secret="correct horse battery",
        )  # fmt: skip
    assert stored(services, new.client_id)[0].startswith("$argon2id$")
    assert token_status(api, new.client_id, "correct horse battery") == 200
    assert stored(services, new.client_id)[0].startswith("$argon2id$")


def test_a_secret_hashed_under_another_key_is_refused(
    api: TestClient, services: Services, tenant: Tenant
) -> None:
    other = SecretHasher(b"o" * 32)
    set_hashes(services, tenant.client_id, secret_hash=other.hash(tenant.client_secret))
    assert token_status(api, tenant.client_id, tenant.client_secret) == 401


def test_a_missing_key_file_is_not_replaced_while_secrets_are_hashed_with_it(
    services: Services, tenant: Tenant
) -> None:
    """Losing the key file (a new data directory, a restore that missed it) must not start a
    process with a new key that silently refuses every stored secret: it stops with the fix."""
    import pytest

    from iod.app import build_services
    from iod.auth.passwords import SecretHashKeyError

    settings = services.settings
    key_file = settings.effective_secret_hash_key_file
    saved = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(SecretHashKeyError, match=services.secret_hasher.key_id) as raised:
        build_services(settings, db=services.db, clock=services.clock, driver=services.driver)
    assert "restore that key file" in str(raised.value)
    assert not key_file.exists()
    # Restored, the same process starts and the stored secret verifies again.
    key_file.write_bytes(saved)
    again = build_services(settings, db=services.db, clock=services.clock, driver=services.driver)
    assert again.secret_hasher.key_id == services.secret_hasher.key_id
