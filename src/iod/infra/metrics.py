"""Prometheus metrics: requests by route and status, the job queue, change lag.

Request metrics are counted by each process. Queue depth and change lag are read from the
database when scraped, so they are the same whichever process (API or worker) did the work.
"""

from __future__ import annotations

import bisect
import hmac
from collections.abc import Iterator
from datetime import datetime, timedelta
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from pydantic import SecretStr
from sqlalchemy import Select, func, select

from iod.infra.db import is_unavailable
from iod.infra.errors import NotFound, Unauthorized
from iod.infra.http import problem
from iod.models import BandwidthChange, Job

if TYPE_CHECKING:
    from iod.app import Services

LAG_WINDOW = timedelta(minutes=5)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class HttpMetrics(Collector):
    """Request counts and latency histograms, kept as plain numbers per (method, route,
    status) and turned into Prometheus families only when scraped: the request path pays
    for one dict lookup, one bisect and three additions. Observations happen on the event
    loop thread (the ASGI middleware), so no lock is needed."""

    def __init__(self) -> None:
        # key -> [count, sum of seconds, bucket counts...]
        self._series: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"  # clients choose methods: keep the label set bounded
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (2 + len(BUCKETS))
        series[0] += 1
        series[1] += seconds
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            series[2 + index] += 1

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "iod_http_requests", "HTTP requests", labels=["method", "route", "status"]
        )
        latency = HistogramMetricFamily(
            "iod_http_request_duration_seconds",
            "Time to answer an HTTP request",
            labels=["method", "route", "status"],
        )
        for (method, route, status), series in list(self._series.items()):
            labels = [method, route, str(status)]
            requests.add_metric(labels, series[0])
            cumulative, buckets = 0.0, []
            for bound, count in zip(BUCKETS, series[2:], strict=True):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", series[0]))
            latency.add_metric(labels, buckets, sum_value=series[1])
        yield requests
        yield latency


class DatabaseCollector(Collector):
    """Queue depth by state, and the lag of the changes applied in the last five minutes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db, now = self.services.db, self.services.clock.now()
        up = GaugeMetricFamily("iod_database_up", "1 if the database answered this scrape")
        try:
            states, lags = self._query(db, now)
        except Exception as exc:
            # During an outage the request metrics are still served (they show the 503s).
            if not is_unavailable(exc):
                raise
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        jobs = GaugeMetricFamily("iod_jobs", "Jobs not yet done, by state", labels=["state"])
        for state in ("queued", "running", "failed"):
            jobs.add_metric([state], float(dict(states).get(state, 0)))
        yield jobs
        lag = GaugeMetricFamily(
            "iod_bandwidth_change_lag_seconds",
            "appliedAt minus effectiveDate of the changes applied in the last 5 minutes",
            labels=["quantile"],
        )
        for quantile in (0.5, 0.99, 1.0):
            value = lags[min(len(lags) - 1, int(len(lags) * quantile))] if lags else 0.0
            lag.add_metric([str(quantile)], value)
        yield lag

    @staticmethod
    def _query(db: Any, now: datetime) -> tuple[list[Any], list[float]]:
        with db.read() as session:
            states = session.execute(queue_depth_query()).all()
            lags = sorted(
                (applied - effective).total_seconds()
                for applied, effective in session.execute(
                    select(BandwidthChange.applied_at, BandwidthChange.effective_at).where(
                        BandwidthChange.applied_at >= now - LAG_WINDOW
                    )
                )
                if applied is not None
            )
        return list(states), lags


def build_registry(services: Services) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(services))
    http = HttpMetrics()
    registry.register(http)
    return registry, http


router = APIRouter(tags=["Health"])

_LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def _from_loopback(request: Request) -> bool:
    try:
        address = ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    return any(address in network for network in _LOOPBACK)


def check_access(request: Request, token: SecretStr | None) -> None:
    """/metrics shows every route's traffic and the queue: not for customers. With
    IOD_METRICS_TOKEN a scraper sends it as a bearer token; without one only the loopback
    (the peer, or the client a trusted proxy forwarded) is answered."""
    if token is None:
        if not _from_loopback(request):
            # As if there were nothing here: customers need not learn of it.
            raise NotFound("no such resource")
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized(
            "metrics need 'Authorization: Bearer <IOD_METRICS_TOKEN>'",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        401: problem("IOD_METRICS_TOKEN is set and the request does not carry it"),
        404: problem("No IOD_METRICS_TOKEN is set and the caller is not on the loopback"),
    },
)
async def metrics(request: Request) -> Response:
    """Request counts and latency by route and status (this process), job queue depth and
    the lag between a change's effectiveDate and its application (from the database).
    For operators: with `Authorization: Bearer <IOD_METRICS_TOKEN>`, or from the loopback
    when no token is set."""
    check_access(request, request.app.state.services.settings.metrics_token)
    registry = request.app.state.metrics_registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def queue_depth_query() -> Select[Any]:
    """Jobs per state, done ones left out: `state IN (…)` is a range of the (state, run_at)
    index, so the done jobs (most of the table) are never read; `!=` would scan them."""
    statement: Select[Any] = (
        select(Job.state, func.count())  # type: ignore[assignment]
        .where(Job.state.in_(("queued", "running", "failed")))
        .group_by(Job.state)
    )
    return statement
