"""Wire models of webhook endpoints and deliveries (docs/api.md, "Webhooks")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic.json_schema import SkipJsonSchema

from iod.connections.schemas import StrictBody
from iod.domain.text import description_text
from iod.events import NAMES

# What `eventTypes` takes: every event type, and each type's namespace (`connection.`).
EVENT_TYPE_CHOICES = sorted(NAMES | {name.split(".")[0] + "." for name in NAMES})
_CHOICES_SCHEMA: list[JsonValue] = list(EVENT_TYPE_CHOICES)
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+(/[^\s#]*)?$"
MAX_EVENT_TYPES = 20
URL_DESCRIPTION = (
    "Where events are POSTed: an absolute https:// URL (http:// only where the operator "
    "allows it), at most 2048 characters, no credentials; its host must resolve to a public "
    "address (a literal private, loopback or link-local IP address is refused here)."
)
EVENT_TYPES_DESCRIPTION = (
    "Which events are sent: each entry is an event type (`connection.activated`) or a "
    "namespace ending in a dot (`connection.`, `bandwidth_change.`); an event is sent when it "
    "matches any. Empty or absent: every event."
)


def _event_types(value: Any) -> Any:
    if not isinstance(value, list):
        raise ValueError("must be an array of event types or prefixes")
    if len(value) > MAX_EVENT_TYPES:
        raise ValueError(f"at most {MAX_EVENT_TYPES} entries")
    for index, item in enumerate(value):
        if not isinstance(item, str) or item not in EVENT_TYPE_CHOICES:
            raise ValueError(
                f"entry {index} must be an event type or a namespace such as `connection.` "
                '(docs/api.md, "Events")'
            )
    return value


class WebhookEndpointRequest(StrictBody):
    """Register a URL that is sent the customer's events, signed (Standard Webhooks)."""

    model_config = ConfigDict(extra="forbid", title="WebhookEndpointRequest")

    url: str = Field(
        description=URL_DESCRIPTION,
        examples=["https://hooks.example.com/iod"],
        strict=True,
        max_length=2048,
        json_schema_extra={"pattern": URL_PATTERN},
    )
    eventTypes: list[str] = Field(
        default_factory=list,
        description=EVENT_TYPES_DESCRIPTION,
        examples=[["connection.", "bandwidth_change.applied"]],
        json_schema_extra={
            "maxItems": MAX_EVENT_TYPES,
            "items": {"type": "string", "enum": _CHOICES_SCHEMA},
        },
    )
    description: str | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra={"maxLength": 255},
        description="Free text for the customer's own reference, up to 255 characters.",
    )
    enabled: bool = Field(default=True, strict=True, description="Deliver to it (default).")

    @field_validator("eventTypes", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        return _event_types(value)

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a string when present; leave the field out instead")
        return description_text(value)


class WebhookEndpointUpdate(StrictBody):
    """Change some of an endpoint's fields (absent fields stay; `description: null` clears
    it). Enabling a disabled endpoint forgets why it was disabled."""

    model_config = ConfigDict(extra="forbid", title="WebhookEndpointUpdate")

    url: str | SkipJsonSchema[None] = Field(
        default=None,
        description=URL_DESCRIPTION,
        json_schema_extra={"maxLength": 2048, "pattern": URL_PATTERN},
    )
    eventTypes: list[str] | SkipJsonSchema[None] = Field(
        default=None,
        description=EVENT_TYPES_DESCRIPTION,
        json_schema_extra={
            "maxItems": MAX_EVENT_TYPES,
            "items": {"type": "string", "enum": _CHOICES_SCHEMA},
        },
    )
    description: str | None = Field(
        default=None,
        json_schema_extra={"maxLength": 255},
        description="Free text, up to 255 characters; null removes it.",
    )
    enabled: bool | SkipJsonSchema[None] = Field(default=None, description="Deliver to it.")

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if len(value) > 2048:
            raise ValueError("must be at most 2048 characters")
        return value

    @field_validator("eventTypes", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        return _event_types(value)

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> Any:
        return None if value is None else description_text(value)

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


class WebhookEndpointOut(BaseModel):
    model_config = ConfigDict(title="WebhookEndpoint")

    id: str
    url: str
    eventTypes: list[str] = Field(description="Empty: every event.")
    description: str | SkipJsonSchema[None] = None
    enabled: bool
    disabledReason: str | SkipJsonSchema[None] = Field(
        default=None, description="Why the service disabled it (HTTP 410, failing for days)."
    )
    previousSecretExpiresAt: datetime | SkipJsonSchema[None] = Field(
        default=None,
        description="After a rotation: until when the previous secret signs too.",
    )
    createdAt: datetime
    updatedAt: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    model_config = ConfigDict(title="WebhookEndpointWithSecret")

    secret: str = Field(
        description="`whsec_…`: the signing secret, shown only in this answer. Keep it to "
        'verify the `webhook-signature` header (docs/api.md, "Webhooks").'
    )


class WebhookEndpointList(BaseModel):
    webhookEndpoints: list[WebhookEndpointOut]
    nextCursor: str | SkipJsonSchema[None] = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last."
    )


class WebhookAttemptOut(BaseModel):
    model_config = ConfigDict(title="WebhookAttempt")

    number: int = Field(description="1 for the first attempt.")
    at: datetime
    durationMs: int
    statusCode: int | SkipJsonSchema[None] = Field(
        default=None, description="The receiver's status; absent when none came back."
    )
    responseBody: str | SkipJsonSchema[None] = Field(
        default=None, description="The start of the receiver's answer (at most 1 KiB)."
    )
    error: str | SkipJsonSchema[None] = Field(
        default=None, description="Why the attempt failed (absent for a 2xx)."
    )


class WebhookDeliveryOut(BaseModel):
    model_config = ConfigDict(title="WebhookDelivery")

    id: str = Field(description="The `webhook-id` header of each of its attempts.")
    eventId: str = Field(description="The event's id in the feed (`GET /events`).")
    eventType: str
    status: Literal["pending", "succeeded", "failed"]
    attemptCount: int
    nextAttemptAt: datetime | SkipJsonSchema[None] = None
    lastStatusCode: int | SkipJsonSchema[None] = None
    lastError: str | SkipJsonSchema[None] = None
    createdAt: datetime
    updatedAt: datetime
    attempts: list[WebhookAttemptOut] = Field(description="The last 10 attempts, oldest first.")


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryOut] = Field(description="Newest first.")
    nextCursor: str | SkipJsonSchema[None] = Field(
        default=None, description="Pass as `cursor` for older ones; absent on the last page."
    )
