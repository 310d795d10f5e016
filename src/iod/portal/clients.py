"""A customer's API clients as its admins manage them in the portal: the same functions as
`iod clients …` (customers.service), after a tenancy check (another customer's client is a
404), audited as the user's doing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth.passwords import SecretHasher
from iod.customers import repository
from iod.customers import service as customers
from iod.infra.clock import Clock
from iod.infra.errors import NotFound, ValidationFailed, shown
from iod.models import Client
from iod.portal.service import check_text

# The grace periods a rotation offers (the old secret keeps working meanwhile).
GRACES = {"0": timedelta(0), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}


def clients_of(session: Session, customer_id: str) -> Sequence[Client]:
    return repository.list_clients(session, customer_id)


def _own(session: Session, customer_id: str, client_id: str) -> Client:
    client = repository.get_client(session, client_id) if 0 < len(client_id) <= 40 else None
    if client is None or client.customer_id != customer_id:
        raise NotFound(f"no API client {shown(client_id)}")
    return client


def create(
    session: Session,
    clock: Clock,
    hasher: SecretHasher,
    actor: audit.Actor,
    customer_id: str,
    name: str,
    scopes: str,
) -> customers.NewClient:
    name = name.strip()
    if not name or len(name) > 255:
        raise ValidationFailed.field("/name", "a name has 1 to 255 characters")
    check_text("/name", name)
    new = customers.create_client(session, clock, customer_id, scopes, hasher=hasher, name=name)
    audit.record(session, clock, actor, "client.create", "client", new.client_id,
                 customer_id=customer_id, details={"scopes": new.scopes, "name": name})  # fmt: skip
    return new


def rotate(
    session: Session,
    clock: Clock,
    hasher: SecretHasher,
    actor: audit.Actor,
    customer_id: str,
    client_id: str,
    grace: str,
) -> customers.RotatedSecret:
    if grace not in GRACES:
        raise ValidationFailed.field("/grace", f"must be one of {', '.join(GRACES)}")
    client = _own(session, customer_id, client_id)
    rotated = customers.rotate_secret(session, clock, client.id, GRACES[grace], hasher=hasher)
    audit.record(session, clock, actor, "client.rotate_secret", "client", client.id,
                 customer_id=customer_id,
                 details={"graceSeconds": int(GRACES[grace].total_seconds())})  # fmt: skip
    return rotated


def set_enabled(
    session: Session,
    clock: Clock,
    actor: audit.Actor,
    customer_id: str,
    client_id: str,
    enabled: bool,
) -> Client:
    client = _own(session, customer_id, client_id)
    customers.set_client_enabled(session, clock, client.id, enabled)
    action = "client.enable" if enabled else "client.disable"
    audit.record(session, clock, actor, action, "client", client.id, customer_id=customer_id)
    return client
