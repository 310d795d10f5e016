"""The internal edge API's bodies (camelCase on the wire, strict write bodies)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from iod.connections.schemas import StrictBody
from iod.domain.text import Text

State = Literal["active", "suspended", "absent"]
REPORT_MAX = 100  # results per report
SAMPLES_MAX = 250  # readings per samples request
# Integers are bounded by the columns that keep them (a larger one was a 500): an INTEGER
# (PostgreSQL's int4) for the agent's counts; a BIGINT for the traffic counters, whose bound
# is 2**62 (4.6 EB, millennia of a 100 Gbps link) rather than 2**63 - 1 because the OpenAPI
# document writes bounds as JSON doubles, which hold 2**62 exactly but round 2**63 - 1 up to
# 2**63; a cursor as `GET …/changes?after=` takes it.
COUNT_MAX = 2**31 - 1
COUNTER_MAX = 2**62
CURSOR_MAX = 2**62


class EdgeConnection(BaseModel):
    """What the edge should hold for one connection; `absent`: remove it."""

    model_config = ConfigDict(title="EdgeConnection")

    connectionId: str
    state: State
    bandwidthMbps: int = Field(ge=0)
    ipv4Block: str | None = None
    seq: int = Field(description="The location's sequence number of this row's last change.")
    opId: str | None = Field(
        default=None, description="The operation (job) that made the change; report it."
    )
    acked: bool = Field(description="Whether the operation has been reported already.")


class EdgeSnapshot(BaseModel):
    model_config = ConfigDict(title="EdgeSnapshot")

    locationId: str
    cursor: int = Field(description="Watch the changes after this.")
    connections: list[EdgeConnection]


class EdgeChanges(BaseModel):
    model_config = ConfigDict(title="EdgeChanges")

    locationId: str
    cursor: int = Field(description="Ask for the changes after this next.")
    changes: list[EdgeConnection]
    more: bool = Field(description="More changes are waiting: ask again at once.")


class OperationResult(StrictBody):
    model_config = ConfigDict(extra="forbid", title="OperationResult")

    opId: Text = Field(min_length=1, max_length=64, strict=True)
    ok: bool = Field(strict=True)
    error: Text | None = Field(default=None, max_length=300)


class EdgeReport(StrictBody):
    """An agent's results (by operation id) and its state."""

    model_config = ConfigDict(extra="forbid", title="EdgeReport")

    cursor: int | None = Field(
        default=None, ge=0, le=CURSOR_MAX, strict=True, description="The last change applied."
    )
    version: Text | None = Field(default=None, max_length=64)
    hostname: Text | None = Field(default=None, max_length=255)
    actualCount: int | None = Field(
        default=None, ge=0, le=COUNT_MAX, strict=True, description="Connections the edge holds now."
    )
    drift: int | None = Field(
        default=None,
        ge=0,
        le=COUNT_MAX,
        strict=True,
        description="What the last full resynchronisation corrected on the edge's kernel.",
    )
    # Bounded so the largest valid body fits the 64 KiB request limit; agents send more in
    # several reports.
    results: list[OperationResult] = Field(default_factory=list, max_length=REPORT_MAX)


class EdgeReportResult(BaseModel):
    model_config = ConfigDict(title="EdgeReportResult")

    recorded: int = Field(description="Results recorded now (a repeated one is not).")
    unknown: int = Field(description="Results naming no operation of this location.")


class CounterReading(StrictBody):
    model_config = ConfigDict(extra="forbid", title="CounterReading")

    connectionId: Text = Field(min_length=1, max_length=40, strict=True)
    bytesIn: int = Field(
        ge=0, le=COUNTER_MAX, strict=True, description="Cumulative, towards the customer."
    )
    bytesOut: int = Field(
        ge=0, le=COUNTER_MAX, strict=True, description="Cumulative, from the customer."
    )
    packetsIn: int = Field(default=0, ge=0, le=COUNTER_MAX, strict=True)
    packetsOut: int = Field(default=0, ge=0, le=COUNTER_MAX, strict=True)


class EdgeSamples(StrictBody):
    """The edge's cumulative counters of its connections, read at `at`."""

    model_config = ConfigDict(extra="forbid", title="EdgeSamples")

    at: AwareDatetime = Field(description="When the counters were read (with an offset).")
    samples: list[CounterReading] = Field(max_length=SAMPLES_MAX)  # 64 KiB, as above


class EdgeSamplesResult(BaseModel):
    model_config = ConfigDict(title="EdgeSamplesResult")

    stored: int = Field(description="Samples stored (a connection's first reading is not).")
    unknown: int = Field(description="Readings of connections this location does not have.")
