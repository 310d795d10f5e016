"""Creating customers and clients; the client secret exists in clear only in the return value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from iod import events
from iod.auth.passwords import hash_secret, new_secret, verify_secret
from iod.auth.tokens import SCOPES
from iod.clock import Clock, rfc3339
from iod.customers import repository
from iod.errors import NotFound, ValidationFailed
from iod.ids import new_id
from iod.models import Client, Customer


@dataclass(frozen=True)
class NewClient:
    client_id: str
    client_secret: str
    customer_id: str
    scopes: list[str]


def parse_scopes(text: str) -> list[str]:
    scopes = text.split()
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValidationFailed.field(
            "/scopes", f"scopes must be a space-separated subset of {' '.join(SCOPES)}"
        )
    return [s for s in SCOPES if s in scopes]


def create_customer(session: Session, clock: Clock, name: str) -> Customer:
    name = name.strip()
    if not name or len(name) > 255:
        raise ValidationFailed.field("/name", "a customer name has 1 to 255 characters")
    customer = Customer(id=new_id("cus"), name=name, created_at=clock.now())
    session.add(customer)
    session.flush()
    return customer


def create_client(
    session: Session,
    clock: Clock,
    customer_id: str,
    scopes: str,
    *,
    name: str = "",
    client_id: str | None = None,
    client_secret: str | None = None,
) -> NewClient:
    if repository.get_customer(session, customer_id) is None:
        raise NotFound(f"no customer {customer_id}")
    scope_list = parse_scopes(scopes)
    secret = client_secret or new_secret()
    client = Client(
        id=client_id or new_id("cli"),
        customer_id=customer_id,
        name=name,
        secret_hash=hash_secret(secret),
        scopes=" ".join(scope_list),
        enabled=True,
        created_at=clock.now(),
        secret_generation=0,
    )
    session.add(client)
    session.flush()
    return NewClient(client.id, secret, customer_id, scope_list)


def set_client_enabled(session: Session, clock: Clock, client_id: str, enabled: bool) -> Client:
    client = repository.get_client(session, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    client.enabled = enabled
    client.disabled_at = None if enabled else clock.now()
    session.flush()
    return client


def secret_matches(client: Client, secret: str) -> bool:
    return verify_secret(client.secret_hash, secret)


def client_secret_generation(client: Client | None, secret: str, now: datetime) -> int | None:
    """The generation of the secret presented: the current one, or the previous one during its
    grace period; None when it is neither. An unknown client costs one argon2 verification,
    like a wrong secret; a client in a grace period costs two for a wrong secret."""
    if verify_secret(client.secret_hash if client is not None else None, secret):
        assert client is not None
        return client.secret_generation
    if (
        client is not None
        and client.previous_secret_hash is not None
        and client.previous_secret_until is not None
        and now < client.previous_secret_until
        and verify_secret(client.previous_secret_hash, secret)
    ):
        return client.secret_generation - 1
    return None


@dataclass(frozen=True)
class RotatedSecret:
    client_secret: str
    # When the replaced secret, and the tokens obtained with it, stop working (None: now).
    previous_valid_until: datetime | None


def rotate_secret(
    session: Session, clock: Clock, client_id: str, grace: timedelta = timedelta(0)
) -> RotatedSecret:
    """Replace a client's secret; the new one exists in clear only in the return value.

    The replaced secret keeps working for `grace` (only the last one: a second rotation
    within the grace period ends the first secret at once)."""
    if grace < timedelta(0):
        raise ValidationFailed.field("/grace", "the grace period cannot be negative")
    client = repository.get_client(session, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    secret = new_secret()
    until = clock.now() + grace if grace > timedelta(0) else None
    client.previous_secret_hash = client.secret_hash if until is not None else None
    client.previous_secret_until = until
    client.secret_hash = hash_secret(secret)
    client.secret_generation = (client.secret_generation or 0) + 1
    events.record(
        session,
        "client.secret_rotated",
        customer_id=client.customer_id,
        subject_id=client.id,
        at=clock.now(),
        clientId=client.id,
        generation=client.secret_generation,
        previousSecretValidUntil=rfc3339(until) if until is not None else None,
    )
    session.flush()
    return RotatedSecret(secret, until)
