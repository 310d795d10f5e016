"""The traffic answer (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TrafficDirection(BaseModel):
    model_config = ConfigDict(title="TrafficDirection")

    averageBps: int = Field(description="Mean rate over the bins with data (bits per second).")
    peakBps: int = Field(description="The highest bin.")
    p95Bps: int = Field(description="95th percentile of the bins (nearest rank).")
    utilisation: float = Field(
        description="Mean rate over the tier in force in each bin (0 to 1; above 1 only "
        "if the network let more through)."
    )


class TrafficPoint(BaseModel):
    model_config = ConfigDict(title="TrafficPoint")

    at: datetime = Field(description="The bin's start.")
    inBps: int | None = Field(description="Towards the customer (download); null: no sample.")
    outBps: int | None = Field(description="From the customer (upload); null: no sample.")
    tierMbps: int = Field(description="The bandwidth in force then (Mbps).")


class Traffic(BaseModel):
    model_config = ConfigDict(title="Traffic")

    connectionId: str
    start: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    step: int = Field(description="Seconds per bin.")
    bandwidth: str = Field(description="The bandwidth in force now.")
    samples: int = Field(description="Counter samples in the window.")
    inbound: TrafficDirection = Field(alias="in", serialization_alias="in")
    outbound: TrafficDirection = Field(alias="out", serialization_alias="out")
    points: list[TrafficPoint]
