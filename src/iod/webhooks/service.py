"""Webhook endpoints and their deliveries as the API manages them (one customer's only:
another customer's endpoint or delivery is 404, never 403)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth.tokens import Principal
from iod.events import NAMES
from iod.events.service import encode_cursor
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.errors import Conflict, FieldError, NotFound, ValidationFailed
from iod.infra.ids import looks_like_id, new_id
from iod.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from iod.webhooks import keys, repository, safety, signing
from iod.webhooks.schemas import (
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointOut,
    WebhookEndpointRequest,
    WebhookEndpointUpdate,
)

ATTEMPTS_SHOWN = 10


class TooManyEndpoints(Conflict):
    type_name = "too-many-webhook-endpoints"
    title = "Too many webhook endpoints"


class EndpointDisabled(Conflict):
    """A delivery of a disabled endpoint cannot be sent again (`retry`)."""

    type_name = "webhook-endpoint-disabled"
    title = "The webhook endpoint is disabled"


@dataclass(frozen=True)
class Limits:
    """What the API needs of the settings."""

    allow_http: bool
    allowed: list[safety.Network]
    grace: timedelta
    max_endpoints: int
    key_encryption_key: bytes | None

    @classmethod
    def of(cls, settings: Settings, key_encryption_key: bytes | None) -> Limits:
        return cls(
            settings.webhook_allow_http,
            safety.parse_networks(settings.webhook_allow_networks),
            timedelta(seconds=settings.webhook_secret_grace_seconds),
            settings.webhook_max_endpoints,
            key_encryption_key,
        )


def _audit(
    session: Session,
    now: datetime,
    actor: audit.Actor,
    action: str,
    endpoint: WebhookEndpoint,
    details: dict[str, Any],
) -> None:
    """The audit row of a change of an endpoint, in its transaction: what changed, never a
    secret (rotations say only until when the previous one signs)."""
    audit.record(session, FrozenClock(now), actor, f"webhook_endpoint.{action}",
                 "webhook_endpoint", endpoint.id, customer_id=endpoint.customer_id,
                 details=details)  # fmt: skip


def _not_found() -> NotFound:
    return NotFound("No such webhook endpoint for this customer")


def check_url(url: str, limits: Limits, pointer: str = "/url") -> str:
    try:
        target = safety.check_url(url, allow_http=limits.allow_http)
        safety.check_literal(target, limits.allowed)
    except safety.Refused as exc:
        raise ValidationFailed(f"{pointer}: {exc}", errors=[FieldError(pointer, str(exc))]) from exc
    return url


def check_event_types(types: Sequence[str], pointer: str = "/eventTypes") -> list[str]:
    """Each entry must be an event name or a prefix of one (a typo subscribes to nothing)."""
    for index, value in enumerate(types):
        if not any(name.startswith(value) for name in NAMES):
            detail = f"{value!r} is no event type and no prefix of one (docs/api.md)"
            raise ValidationFailed(
                f"{pointer}/{index}: {detail}", errors=[FieldError(f"{pointer}/{index}", detail)]
            )
    return list(dict.fromkeys(types))


def matches(event_types: Sequence[str], name: str) -> bool:
    return not event_types or any(name.startswith(prefix) for prefix in event_types)


def to_schema(endpoint: WebhookEndpoint, now: datetime) -> WebhookEndpointOut:
    grace = endpoint.previous_secret_until
    return WebhookEndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        eventTypes=list(endpoint.event_types or []),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabledReason=endpoint.disabled_reason,
        previousSecretExpiresAt=grace if grace is not None and grace > now else None,
        createdAt=endpoint.created_at,
        updatedAt=endpoint.updated_at,
    )


def create(
    session: Session,
    now: datetime,
    principal: Principal,
    body: WebhookEndpointRequest,
    limits: Limits,
    *,
    actor: audit.Actor,
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (the only time the secret leaves the service)."""
    check_url(body.url, limits)
    types = check_event_types(body.eventTypes)
    if repository.count_endpoints(session, principal.customer_id) >= limits.max_endpoints:
        raise TooManyEndpoints(
            f"This customer already has {limits.max_endpoints} webhook endpoints "
            "(IOD_WEBHOOK_MAX_ENDPOINTS): delete one first"
        )
    endpoint_id = new_id("whe")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        customer_id=principal.customer_id,
        url=body.url,
        description=body.description,
        event_types=types,
        enabled=body.enabled,
        disabled_reason=None,
        secret=keys.seal(secret, limits.key_encryption_key, endpoint_id),
        previous_secret=None,
        previous_secret_until=None,
        failing_since=None,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    _audit(session, now, actor, "create", endpoint, {
        "url": endpoint.url, "eventTypes": types, "enabled": endpoint.enabled,
        "description": endpoint.description,
    })  # fmt: skip
    return endpoint, secret


def get(
    session: Session, principal: Principal, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    endpoint = (
        repository.get_endpoint(session, principal.customer_id, endpoint_id, lock=lock)
        if looks_like_id(endpoint_id)
        else None
    )
    if endpoint is None:
        raise _not_found()
    return endpoint


def page(
    session: Session, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[WebhookEndpoint], str | None]:
    rows = repository.list_endpoints(session, principal.customer_id, after=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].id if more else None


def update(
    session: Session,
    now: datetime,
    principal: Principal,
    endpoint_id: str,
    body: WebhookEndpointUpdate,
    limits: Limits,
    *,
    actor: audit.Actor,
) -> WebhookEndpoint:
    endpoint = get(session, principal, endpoint_id, lock=True)
    given = body.model_fields_set
    before = _audited_fields(endpoint)
    if "url" in given and body.url is not None:
        endpoint.url = check_url(body.url, limits)
    if "eventTypes" in given and body.eventTypes is not None:
        endpoint.event_types = check_event_types(body.eventTypes)
    if "description" in given:
        endpoint.description = body.description
    if "enabled" in given and body.enabled is not None and body.enabled != endpoint.enabled:
        endpoint.enabled = body.enabled
        if body.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    endpoint.updated_at = now
    session.flush()
    after = _audited_fields(endpoint)
    changed = {key: value for key, value in after.items() if before[key] != value}
    _audit(session, now, actor, "update", endpoint, {
        "changed": sorted(changed), **changed,
    })  # fmt: skip
    return endpoint


def _audited_fields(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "eventTypes": list(endpoint.event_types or []),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
    }


def delete(
    session: Session, now: datetime, principal: Principal, endpoint_id: str, *, actor: audit.Actor
) -> None:
    """The endpoint, its deliveries and their attempts; jobs still queued find nothing."""
    endpoint = get(session, principal, endpoint_id, lock=True)
    _audit(session, now, actor, "delete", endpoint, {"url": endpoint.url})
    repository.delete_endpoint(session, endpoint)


def rotate_secret(
    session: Session,
    now: datetime,
    principal: Principal,
    endpoint_id: str,
    limits: Limits,
    *,
    actor: audit.Actor,
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one keeps signing too until the grace period ends (a
    rotation within a grace period drops the oldest: at most two secrets sign)."""
    endpoint = get(session, principal, endpoint_id, lock=True)
    secret = signing.new_secret()
    if limits.grace > timedelta(0):
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = now + limits.grace
    else:
        endpoint.previous_secret = None
        endpoint.previous_secret_until = None
    endpoint.secret = keys.seal(secret, limits.key_encryption_key, endpoint.id)
    endpoint.updated_at = now
    session.flush()
    until = endpoint.previous_secret_until
    _audit(session, now, actor, "rotate_secret", endpoint, {
        "previousSecretExpiresAt": None if until is None else until.isoformat(),
    })  # fmt: skip
    return endpoint, secret


# Opened secrets (decrypted, base64 decoded) by endpoint and stored text: a worker signs
# many deliveries of few endpoints, and opening an encrypted one costs an HKDF and an AES-GCM.
_opened: dict[tuple[str, str, bytes | None], bytes] = {}
_OPENED_MAX = 4096


def _open_key(endpoint_id: str, stored: str, key_encryption_key: bytes | None) -> bytes:
    cache_key = (endpoint_id, stored, key_encryption_key)
    key = _opened.get(cache_key)
    if key is None:
        key = signing.secret_bytes(keys.open_secret(stored, key_encryption_key, endpoint_id))
        if len(_opened) >= _OPENED_MAX:
            _opened.clear()
        _opened[cache_key] = key
    return key


def signing_keys(
    endpoint_id: str,
    secret: str,
    previous_secret: str | None,
    previous_until: datetime | None,
    now: datetime,
    key_encryption_key: bytes | None,
) -> list[bytes]:
    """The keys that sign now: the current secret's, and the previous one's in its grace."""
    found = [_open_key(endpoint_id, secret, key_encryption_key)]
    if previous_secret is not None and previous_until is not None and previous_until > now:
        found.append(_open_key(endpoint_id, previous_secret, key_encryption_key))
    return found


# --- deliveries ---------------------------------------------------------------------------


def delivery_to_schema(
    delivery: WebhookDelivery, attempts: Sequence[WebhookAttempt]
) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=delivery.id,
        eventId=encode_cursor(delivery.event_position),
        eventType=delivery.event_type,
        status=delivery.status,
        attemptCount=delivery.attempts,
        nextAttemptAt=delivery.next_attempt_at if delivery.status == "pending" else None,
        lastStatusCode=delivery.last_status_code,
        lastError=delivery.last_error,
        createdAt=delivery.created_at,
        updatedAt=delivery.updated_at,
        attempts=[
            WebhookAttemptOut(
                number=a.number,
                at=a.at,
                durationMs=a.duration_ms,
                statusCode=a.status_code,
                responseBody=a.response_body,
                error=a.error,
            )
            for a in attempts
        ],
    )


def deliveries(
    session: Session,
    principal: Principal,
    endpoint_id: str,
    *,
    cursor: str | None,
    status: str | None,
    limit: int,
) -> tuple[list[WebhookDeliveryOut], str | None]:
    endpoint = get(session, principal, endpoint_id)
    rows = repository.list_deliveries(
        session, endpoint.id, before=cursor, status=status, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    attempts = repository.attempts_of(session, [r.id for r in rows], per_delivery=ATTEMPTS_SHOWN)
    return [delivery_to_schema(r, attempts[r.id]) for r in rows], rows[-1].id if more else None


def retry(
    session: Session,
    now: datetime,
    principal: Principal,
    endpoint_id: str,
    delivery_id: str,
    *,
    actor: audit.Actor,
) -> WebhookDeliveryOut:
    """Sends a delivery again now (whatever its status), as one more attempt with the same
    `webhook-id`; a scheduled retry of it is superseded. The endpoint must be enabled."""
    from iod.webhooks import delivery as deliver

    endpoint = get(session, principal, endpoint_id)
    found = (
        repository.get_delivery(session, principal.customer_id, endpoint.id, delivery_id, lock=True)
        if looks_like_id(delivery_id)
        else None
    )
    if found is None:
        raise NotFound("No such delivery of this webhook endpoint for this customer")
    if not endpoint.enabled:
        raise EndpointDisabled(
            "The webhook endpoint is disabled: enable it (PATCH enabled: true) first"
        )
    deliver.schedule_now(session, found, now)
    _audit(session, now, actor, "retry", endpoint, {
        "deliveryId": found.id, "eventType": found.event_type,
    })  # fmt: skip
    attempts = repository.attempts_of(session, [found.id], per_delivery=ATTEMPTS_SHOWN)
    return delivery_to_schema(found, attempts[found.id])


def endpoint_document(endpoint: WebhookEndpoint, now: datetime) -> dict[str, Any]:
    return to_schema(endpoint, now).model_dump(mode="json", exclude_none=True)
