"""Typed views of the API's JSON. Attributes are snake_case; the JSON stays camelCase.

Fields the server adds later are kept (`model_extra`) and survive `to_json()`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ACTIVE = "active"
PROVISIONING = "provisioning"
SUSPENDED = "suspended"
TERMINATED = "terminated"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="allow", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON document, with the API's camelCase names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class PendingBandwidthChange(Model):
    """A change accepted but not yet in force."""

    id: str
    bandwidth: str
    effective_date: datetime
    status: str
    schedule_id: str | None = None  # the schedule whose transition it is


class Connection(Model):
    """A connection. `bandwidth` is what the network has in force right now."""

    id: str
    status: str
    bandwidth: str
    location: str
    created_at: datetime
    updated_at: datetime | None = None
    description: str | None = None
    ipv4_block: str | None = None  # CIDR: the gateway is its first address, yours the second
    pending_bandwidth_changes: list[PendingBandwidthChange] = []
    target_status: str | None = None  # set while a suspend, resume or terminate is under way

    def pending(self, change_id: str) -> PendingBandwidthChange | None:
        """The pending change with this id, if it is still pending."""
        return next((c for c in self.pending_bandwidth_changes if c.id == change_id), None)


class BandwidthChange(Model):
    """The change a bandwidth update created."""

    id: str
    bandwidth: str
    effective_date: datetime
    status: str
    requested_at: datetime | None = None
    applied_at: datetime | None = None
    from_bandwidth: str | None = None
    requested_by: str | None = None
    failure_reason: str | None = None
    revert_of: str | None = None
    schedule_id: str | None = None  # the schedule whose transition it is


class BandwidthUpdateResult(Connection):
    """The connection after an update was accepted (or applied, when waited for), the
    change the update created and, for a boost, the change that reverts it."""

    # None when the server recorded no change: the connection will have that bandwidth at
    # that time anyway.
    change: BandwidthChange | None = None
    revert_change: BandwidthChange | None = None


class Token(Model):
    """What the token endpoint granted (the token itself stays inside the client)."""

    token_type: str = "Bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int
    scope: str = ""

    model_config = ConfigDict(alias_generator=None, extra="ignore", frozen=True)


class TrafficDirection(Model):
    """One direction's summary: bits per second, utilisation of the tier (0 to 1)."""

    average_bps: int
    peak_bps: int
    p95_bps: int
    utilisation: float


class TrafficPoint(Model):
    at: datetime
    in_bps: int | None = None
    out_bps: int | None = None
    tier_mbps: int


class Traffic(Model):
    """`GET …/connections/{id}/traffic`: `inbound` is towards the customer (download)."""

    connection_id: str
    start: datetime = Field(alias="from")
    to: datetime
    step: int
    bandwidth: str
    samples: int
    inbound: TrafficDirection = Field(alias="in")
    outbound: TrafficDirection = Field(alias="out")
    points: list[TrafficPoint]
