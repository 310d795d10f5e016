"""Two rotations of one client's secret at once (two admins in the portal, or the portal
and `iod clients rotate-secret`), on PostgreSQL: each must start from the other's result,
as one after the other would."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from iod.app import Services
from iod.customers import repository
from iod.customers import service as customers
from iod.customers.service import RotatedSecret
from iod.models import Client
from tests.conftest import reads_meet


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_two_rotations_at_once_keep_the_first_ones_secret_for_the_grace(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the client before either wrote: the second overwrote the first, so the
    secret the first rotation showed (once) never worked, not even for the grace period,
    and both announced the same generation."""
    with services.db.write() as session:
        customer = customers.create_customer(session, services.clock, "Acme")
        made = customers.create_client(
            session, services.clock, customer.id, "read write", hasher=services.secret_hasher
        )
    reads_meet(monkeypatch, repository, "get_client")

    def rotate(_: int) -> RotatedSecret:
        with services.db.write() as session:
            return customers.rotate_secret(
                session, services.clock, made.client_id, timedelta(hours=1),
                hasher=services.secret_hasher,
            )  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(rotate, range(2))
    with services.db.read() as session:
        client = session.get(Client, made.client_id)
        assert client is not None
        assert client.secret_generation == 2  # rotated twice
        hashes = {client.secret_hash, client.previous_secret_hash}
    assert {services.secret_hasher.hash(s.client_secret) for s in (first, second)} == hashes
