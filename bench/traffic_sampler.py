"""The traffic sampler's CPU per run (issue 14, sixth step): `traffic.service.ingest` of N
connections' counters, as the worker's `traffic.sample` task stores them every
IOD_TRAFFIC_SAMPLE_SECONDS, timed run by run (process CPU and wall-clock, the median).

    .venv/bin/python bench/traffic_sampler.py DATABASE_URL [--connections 1000] [--runs 15]

It makes the schema if missing (SQLAlchemy's `create_all`) and writes and then deletes
counters and samples of connection ids of its own (`sampler_…`) only; use a database of
its own (e.g. `iod_wt_<name>_sampler`, or `sqlite:////tmp/sampler.db`).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, create_engine, delete
from sqlalchemy.orm import Session

from iod.infra.db import Base
from iod.models import TrafficCounter, TrafficSample
from iod.traffic import service


def _clean(engine: Engine, prefix: str) -> None:
    with Session(engine) as session, session.begin():
        for model in (TrafficCounter, TrafficSample):
            session.execute(delete(model).where(model.connection_id.startswith(prefix)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    engine = create_engine(args.url)
    Base.metadata.create_all(engine)
    prefix = "sampler_"
    ids = [f"{prefix}{i:06d}" for i in range(args.connections)]
    _clean(engine, prefix)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    timings: list[tuple[float, float]] = []
    try:
        for run in range(args.runs + 2):
            at = start + timedelta(seconds=10 * run)
            readings = {
                c: (run * 1000 + i, run * 2000, run * 10, run * 20) for i, c in enumerate(ids)
            }
            cpu, wall = time.process_time(), time.perf_counter()
            with Session(engine) as session, session.begin():
                service.ingest(session, at, readings)
            if run >= 2:  # the first run makes the counters, the second warms up
                timings.append((time.process_time() - cpu, time.perf_counter() - wall))
    finally:
        _clean(engine, prefix)
    cpu_ms, wall_ms = (sorted(t[i] for t in timings)[len(timings) // 2] * 1000 for i in (0, 1))
    print(
        f"{service.__file__}: {args.connections} connections, median of {args.runs} runs: "
        f"CPU {cpu_ms:.1f} ms, wall-clock {wall_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
