"""Creating customers and clients; the client secret exists in clear only in the return value."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session

from iod import events
from iod.auth.passwords import SecretHasher, is_slow_hash, new_secret
from iod.auth.tokens import SCOPES
from iod.customers import repository
from iod.domain.text import text_problem
from iod.infra.clock import Clock, rfc3339
from iod.infra.errors import NotFound, ValidationFailed
from iod.infra.ids import new_id
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


def create_customer(
    session: Session, clock: Clock, name: str, customer_number: str | None = None
) -> Customer:
    """`customer_number`: the Lumen customer number (`1-ABCDE`); a fresh one by default."""
    name = name.strip()
    if not name or len(name) > 255:
        raise ValidationFailed.field("/name", "a customer name has 1 to 255 characters")
    problem = text_problem(name)
    if problem is not None:
        raise ValidationFailed.field("/name", f"a customer name {problem}")
    number = _available_number(session, customer_number)
    customer = Customer(id=new_id("cus"), name=name, created_at=clock.now(), customer_number=number)
    session.add(customer)
    session.flush()
    return customer


# Lumen customer numbers (issue 19): letters and digits in two or more parts joined by "-".
CUSTOMER_NUMBER = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)+$")
_NUMBER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_customer_number() -> str:
    """`1-` and seven random characters (Crockford's alphabet): 34 bits, looked up before use."""
    return "1-" + "".join(secrets.choice(_NUMBER_ALPHABET) for _ in range(7))


def _available_number(session: Session, number: str | None) -> str:
    if number is None:
        while True:
            number = new_customer_number()
            if repository.find_customer_by_number(session, number) is None:
                return number
    if not CUSTOMER_NUMBER.fullmatch(number) or len(number) > 40:
        raise ValidationFailed.field(
            "/customerNumber",
            "a customer number is letters and digits in parts joined by '-', e.g. 1-ABCDE "
            "(at most 40 characters)",
        )
    if repository.find_customer_by_number(session, number) is not None:
        raise ValidationFailed.field(
            "/customerNumber", f"customer number {number} belongs to another customer"
        )
    return number


def set_customer_number(session: Session, customer_id: str, number: str) -> Customer:
    """Gives the customer this Lumen customer number (its clients send it as
    `x-customer-number`); the number it had before stops matching at once."""
    customer = repository.get_customer(session, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    if customer.customer_number != number:
        customer.customer_number = _available_number(session, number)
        session.flush()
    return customer


def create_client(
    session: Session,
    clock: Clock,
    customer_id: str,
    scopes: str,
    *,
    hasher: SecretHasher,
    name: str = "",
    client_id: str | None = None,
    client_secret: str | None = None,
) -> NewClient:
    if repository.get_customer(session, customer_id) is None:
        raise NotFound(f"no customer {customer_id}")
    if len(name) > 255:  # the portal's form checks it too; `iod clients create` does not
        raise ValidationFailed.field("/name", "a client name has at most 255 characters")
    problem = text_problem(name)
    if problem is not None:
        raise ValidationFailed.field("/name", f"a client name {problem}")
    scope_list = parse_scopes(scopes)
    secret = client_secret or new_secret()
    client = Client(
        id=client_id or new_id("cli"),
        customer_id=customer_id,
        name=name,
        secret_hash=hasher.hash(secret),
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


def secret_matches(client: Client, secret: str, hasher: SecretHasher) -> bool:
    return hasher.verify(client.secret_hash, secret).ok


class ClientSecrets(Protocol):
    """A client's stored secrets: a `Client`, or the token endpoint's `credentials` row."""

    @property
    def secret_hash(self) -> str: ...
    @property
    def secret_generation(self) -> int: ...
    @property
    def previous_secret_hash(self) -> str | None: ...
    @property
    def previous_secret_until(self) -> datetime | None: ...


def needs_slow_check(client: ClientSecrets | None) -> bool:
    """Whether checking a secret of this client may take an argon2 verification (~100 ms of
    CPU): one for a worker thread, not for the event loop."""
    return client is not None and (
        is_slow_hash(client.secret_hash) or is_slow_hash(client.previous_secret_hash)
    )


@dataclass(frozen=True)
class SecretCheck:
    """The generation of the secret presented (None: no match), and the keyed hashes to store
    in place of argon2 ones that matched (column name -> (stored value, new value))."""

    generation: int | None
    upgrades: dict[str, tuple[str, str]]


def check_client_secret(
    client: ClientSecrets | None, secret: str, now: datetime, hasher: SecretHasher
) -> SecretCheck:
    """The current secret, or the previous one during its grace period. An unknown client
    costs one keyed hash, like a wrong secret; a client in a grace period costs two."""
    current = hasher.verify(client.secret_hash if client is not None else None, secret)
    if current.ok:
        assert client is not None
        upgrades = {}
        if current.upgrade is not None:
            upgrades["secret_hash"] = (client.secret_hash, current.upgrade)
        return SecretCheck(client.secret_generation, upgrades)
    if (
        client is not None
        and client.previous_secret_hash is not None
        and client.previous_secret_until is not None
        and now < client.previous_secret_until
    ):
        previous = hasher.verify(client.previous_secret_hash, secret)
        if previous.ok:
            upgrades = {}
            if previous.upgrade is not None:
                upgrades["previous_secret_hash"] = (client.previous_secret_hash, previous.upgrade)
            return SecretCheck(client.secret_generation - 1, upgrades)
    return SecretCheck(None, {})


def upgrade_secret_hashes(
    session: Session, client_id: str, upgrades: dict[str, tuple[str, str]]
) -> int:
    """Store the keyed hashes of secrets that were verified with argon2; each only where its
    column still holds the value that was verified (a rotation in between wins). Rows
    changed."""
    return sum(
        repository.replace_secret_hash(session, client_id, column, old, new)
        for column, (old, new) in upgrades.items()
    )


@dataclass(frozen=True)
class RotatedSecret:
    client_secret: str
    # When the replaced secret, and the tokens obtained with it, stop working (None: now).
    previous_valid_until: datetime | None


def rotate_secret(
    session: Session,
    clock: Clock,
    client_id: str,
    grace: timedelta = timedelta(0),
    *,
    hasher: SecretHasher,
) -> RotatedSecret:
    """Replace a client's secret; the new one exists in clear only in the return value.

    The replaced secret keeps working for `grace` (only the last one: a second rotation
    within the grace period ends the first secret at once)."""
    if grace < timedelta(0):
        raise ValidationFailed.field("/grace", "the grace period cannot be negative")
    # Locked: a rotation at the same time starts from this one's secret, not from the one
    # both read (which made the first rotation's secret, shown once, never work).
    client = repository.get_client(session, client_id, lock=True)
    if client is None:
        raise NotFound(f"no client {client_id}")
    secret = new_secret()
    until = clock.now() + grace if grace > timedelta(0) else None
    client.previous_secret_hash = client.secret_hash if until is not None else None
    client.previous_secret_until = until
    client.secret_hash = hasher.hash(secret)
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
