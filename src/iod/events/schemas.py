"""The feed's documents (docs/api.md, "Events")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema


class EventOut(BaseModel):
    id: str = Field(description="The event's cursor: pass it as `after` (or `Last-Event-ID`).")
    type: str = Field(description="What happened, e.g. `connection.activated` (docs/api.md).")
    occurredAt: str = Field(description="When it happened (RFC 3339, UTC).")
    connectionId: str | SkipJsonSchema[None] = Field(
        default=None, description="The connection it is about (connection and change events)."
    )
    data: dict[str, Any] = Field(description="The event's facts; per type in docs/api.md.")


class EventPage(BaseModel):
    events: list[EventOut]
    nextCursor: str = Field(
        description="Pass as `after` to read on: the last event's id, or the place read up "
        "to when nothing (more) matched."
    )
