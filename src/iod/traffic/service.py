"""Counters in, rates out.

Samplers report each connection's *cumulative* counters (bytes and packets, in = towards
the customer, out = from it); `ingest` turns each into the delta since the previous
reading (a counter that went backwards was reset: the new value is the delta) and stores
it with the seconds it covers. A reading lost to a partition costs resolution, not bytes:
the next delta covers the gap.

`series` answers a window in bins of `step` seconds: a sample counts in the bin its end
falls in; a bin with no sample is null (not zero). Peak and the 95th percentile (nearest
rank, the burstable-billing convention) are over the bins with data; utilisation is the
mean rate over the tier in force in each bin (the applied bandwidth changes say which).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from iod.models import TrafficSample
from iod.traffic import repository

Reading = tuple[int, int, int, int]  # bytes in, bytes out, packets in, packets out
DOWNSAMPLE_SECONDS = 300


# The BIGINT columns' largest value: a rate or a bucket's sum beyond it (counters that jump
# by 2**63 a millisecond apart) is stored as this rather than failing the whole batch.
_BIGINT_MAX = 2**63 - 1


def _big(value: int) -> int:
    return min(value, _BIGINT_MAX)


def _delta(now: int, before: int) -> int:
    return now - before if now >= before else now  # reset (a rebuilt class): from zero


def ingest(session: Session, at: datetime, readings: dict[str, Reading]) -> int:
    """Stores the deltas of these readings; returns the samples written. The session's
    pending changes are flushed first (as the ORM's autoflush of the counters' read did);
    the counters and samples are written with compiled statements, not as ORM objects
    (issue 14: the worker's sampler over every active connection)."""
    session.flush()
    known = repository.counters(session, sorted(readings))
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for connection_id, (b_in, b_out, p_in, p_out) in sorted(readings.items()):
        counter = {"at": at, "bytes_in": b_in, "bytes_out": b_out,
                   "packets_in": p_in, "packets_out": p_out}  # fmt: skip
        last = known.get(connection_id)
        if last is None:
            new.append({"connection_id": connection_id, **counter})
            continue
        seconds = (at - last.at).total_seconds()
        if seconds <= 0:
            continue  # an older or repeated reading
        d_in, d_out = _delta(b_in, last.bytes_in), _delta(b_out, last.bytes_out)
        samples.append(
            {
                "connection_id": connection_id, "at": at, "seconds": seconds, "resolution": 0,
                "bytes_in": d_in, "bytes_out": d_out,
                "packets_in": _delta(p_in, last.packets_in),
                "packets_out": _delta(p_out, last.packets_out),
                "peak_in_bps": _big(int(d_in * 8 / seconds)),
                "peak_out_bps": _big(int(d_out * 8 / seconds)),
            }
        )  # fmt: skip
        changed.append({"counter_id": connection_id, **counter})
    repository.write_counters(session, new, changed)
    repository.insert_samples(session, samples)
    return len(samples)


@dataclass(frozen=True)
class Point:
    at: datetime  # the bin's start
    in_bps: int | None
    out_bps: int | None
    tier_mbps: int


@dataclass(frozen=True)
class Direction:
    average_bps: int
    peak_bps: int
    p95_bps: int
    utilisation: float  # mean rate over the tier in force, 0..1 (more when bursting)


@dataclass(frozen=True)
class Series:
    start: datetime
    end: datetime
    step: int
    points: list[Point]
    inbound: Direction
    outbound: Direction
    samples: int


def _p95(values: list[int]) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _direction(values: list[int | None], tiers: list[int]) -> Direction:
    pairs = [(v, t) for v, t in zip(values, tiers, strict=True) if v is not None]
    if not pairs:
        return Direction(0, 0, 0, 0.0)
    rates = [v for v, _ in pairs]
    capacity = sum(t * 1_000_000 for _, t in pairs)
    return Direction(
        sum(rates) // len(rates), max(rates), _p95(rates),
        round(sum(rates) / capacity, 4) if capacity else 0.0,
    )  # fmt: skip


def _tier_at(at: datetime, first: int, changes: list[tuple[datetime, int, int]]) -> int:
    tier = first
    for applied, _from, to in changes:
        if applied <= at:
            tier = to
        else:
            break
    return tier


def series(
    session: Session,
    connection_id: str,
    current_mbps: int,
    start: datetime,
    end: datetime,
    step: int,
) -> Series:
    rows = repository.samples(session, connection_id, start, end)
    changes = repository.applied_changes(session, connection_id)
    first = changes[0][1] if changes else current_mbps
    count = max(1, math.ceil((end - start).total_seconds() / step))
    bytes_in: list[int | None] = [None] * count
    bytes_out: list[int | None] = [None] * count
    for row in rows:
        index = min(count - 1, max(0, math.ceil((row.at - start).total_seconds() / step) - 1))
        bytes_in[index] = (bytes_in[index] or 0) + row.bytes_in
        bytes_out[index] = (bytes_out[index] or 0) + row.bytes_out
    points = []
    for i in range(count):
        at = start + timedelta(seconds=i * step)
        b_in, b_out = bytes_in[i], bytes_out[i]
        points.append(
            Point(
                at,
                None if b_in is None else b_in * 8 // step,
                None if b_out is None else b_out * 8 // step,
                _tier_at(at, first, changes),
            )
        )
    tiers = [p.tier_mbps for p in points]
    return Series(
        start, end, step, points,
        _direction([p.in_bps for p in points], tiers),
        _direction([p.out_bps for p in points], tiers),
        len(rows),
    )  # fmt: skip


def downsample(session: Session, before: datetime, limit: int = 50_000) -> int:
    """Folds raw samples older than `before` into 300-second ones (sums, and the highest
    raw rate as the bucket's peak); returns the raw samples folded."""
    rows = list(repository.raw_before(session, before, limit))
    buckets: dict[tuple[str, int], list[TrafficSample]] = {}
    for row in rows:
        epoch = int(row.at.timestamp())
        end = -(-epoch // DOWNSAMPLE_SECONDS) * DOWNSAMPLE_SECONDS
        buckets.setdefault((row.connection_id, end), []).append(row)
    for (connection_id, end), group in buckets.items():
        session.add(
            TrafficSample(
                connection_id=connection_id,
                at=datetime.fromtimestamp(end, tz=group[0].at.tzinfo),
                seconds=sum(r.seconds for r in group), resolution=DOWNSAMPLE_SECONDS,
                bytes_in=_big(sum(r.bytes_in for r in group)),
                bytes_out=_big(sum(r.bytes_out for r in group)),
                packets_in=_big(sum(r.packets_in for r in group)),
                packets_out=_big(sum(r.packets_out for r in group)),
                peak_in_bps=max(r.peak_in_bps for r in group),
                peak_out_bps=max(r.peak_out_bps for r in group),
            )
        )  # fmt: skip
    repository.delete_ids(session, [r.id for r in rows])
    session.flush()
    return len(rows)
