"""create_app(): routers, error handlers, middleware, the in-process worker, the OpenAPI."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from anyio import to_thread
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from iod import features
from iod.auth.dependencies import authenticate, remember_early
from iod.auth.directory import ClientDirectory
from iod.auth.endpoints import router as auth_router
from iod.auth.keys import KeyStore
from iod.auth.passwords import SecretHasher, open_hasher
from iod.auth.tokens import TokenService
from iod.billing.endpoints import router as billing_router
from iod.connections.endpoints import router as connections_router
from iod.connections.fastpath import (
    BANDWIDTH_PATH,
    CREATE_PATH,
    ROUTE_PATH,
    ConnectionReadFastPath,
    ConnectionWriteFastPath,
)
from iod.connections.service import Policy
from iod.customers import repository as customers_repository
from iod.edge.driver import EdgeRouter
from iod.edge.endpoints import router as edge_router
from iod.events.endpoints import router as events_router
from iod.infra.clock import Clock, SystemClock
from iod.infra.config import Settings
from iod.infra.db import Database, is_unavailable, make_engine
from iod.infra.errors import ProblemError, Unauthorized
from iod.infra.health import router as health_router
from iod.infra.metrics import build_registry
from iod.infra.metrics import router as metrics_router
from iod.infra.middleware import RequestContextMiddleware
from iod.infra.openapi import build_openapi
from iod.infra.problems import install_error_handlers
from iod.infra.problems import router as problems_router
from iod.infra.ratelimit import Limits, Rate, build_limits
from iod.infra.redirects import relative_slash_redirects
from iod.infra.secure import key_encryption_key
from iod.jobs.worker import Worker, WorkerPolicy
from iod.lumen.api import AUTHENTICATED_PREFIXES as LUMEN_AUTHENTICATED
from iod.lumen.api import LumenDispatch, create_lumen_app, render_reject
from iod.network.base import NetworkDriver
from iod.network.factory import make_driver
from iod.portal.endpoints import router as portal_router
from iod.portal.hooks_pages import router as portal_hooks_router
from iod.portal.money_pages import router as portal_money_router
from iod.schedules.endpoints import router as schedules_router
from iod.traffic.endpoints import router as traffic_router
from iod.version import __version__
from iod.webhooks.endpoints import router as webhooks_router

log = structlog.get_logger("iod.app")


@dataclass
class Services:
    """Everything a request or the worker needs, built once per process."""

    settings: Settings
    db: Database
    clock: Clock
    keys: KeyStore
    tokens: TokenService
    clients: ClientDirectory
    driver: NetworkDriver
    policy: Policy
    limits: Limits
    secret_hasher: SecretHasher
    wakeup: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # A commit that enqueued a job due now wakes this process's worker (the unit of
        # work's "jobs" topic); other processes hear the same commit through NOTIFY.
        self.db.listen("jobs", self.wakeup.set)

    def reconcile_network(self) -> None:
        """Run at a worker's start (IOD_RECONCILE_ON_START): the network is mended to match
        the database before jobs run. A failure is logged; the jobs still run."""
        if not self.settings.reconcile_on_start:
            return
        from iod.connections.reconcile import reconcile

        try:
            reconcile(self.db, self.network(), self.clock)
        except Exception:
            log.exception("network.reconcile_failed")

    def network(self) -> NetworkDriver:
        """The worker's driver: a location with an edge agent gets its operations through
        the agent (iod.edge), the others through `driver` in this process."""
        return EdgeRouter(self.db, self.clock, self.driver, self.settings)

    def worker(self) -> Worker:
        s = self.settings
        return Worker(
            self.db,
            self.network(),
            self.clock,
            WorkerPolicy(
                lease_seconds=s.job_lease_seconds,
                poll_seconds=s.worker_poll_seconds,
                backoff_seconds=s.job_backoff_seconds,
                backoff_cap_seconds=s.job_backoff_cap_seconds,
                batch_size=s.worker_batch_size,
                outage_backoff_cap_seconds=s.worker_outage_backoff_cap,
                gather_seconds=s.worker_gather_seconds,
            ),
            wakeup=self.wakeup,
            settings=s,
            queues=[q.strip() for q in s.worker_queues.split(",") if q.strip()] or None,
            periodic=s.periodic_tasks,
        )


def build_services(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    driver: NetworkDriver | None = None,
    ticker: Callable[[], float] = time.monotonic,
) -> Services:
    """`ticker` is the rate limiters' monotonic clock (seconds); tests move it by hand."""
    features.load()  # their tasks, periodic tasks and event subscribers
    clock = clock or SystemClock()
    db = db or Database(make_engine(settings.effective_database_url, **settings.engine_options))
    keys = KeyStore(db, clock, settings.key_refresh_seconds, key_encryption_key(settings))
    return Services(
        settings=settings,
        db=db,
        clock=clock,
        keys=keys,
        tokens=TokenService(
            keys,
            clock,
            issuer=settings.issuer.rstrip("/"),
            audience=settings.audience,
            ttl=settings.token_ttl,
        ),
        clients=ClientDirectory(db, settings.client_cache_seconds),
        driver=driver or make_driver(settings),
        policy=Policy(
            max_attempts=settings.job_max_attempts,
            max_schedule_days=settings.max_schedule_days,
            max_pending_changes=settings.max_pending_changes,
        ),
        limits=build_limits(
            reads=Rate(settings.rate_limit_reads_per_second, settings.rate_limit_reads_burst),
            writes=Rate(settings.rate_limit_writes_per_second, settings.rate_limit_writes_burst),
            token_requests=Rate(
                settings.token_requests_per_minute / 60, settings.token_requests_burst
            ),
            token_failures=Rate(
                settings.token_failures_per_minute / 60, settings.token_failures_burst
            ),
            ticker=ticker,
        ),
        secret_hasher=open_hasher(
            settings.effective_secret_hash_key_file,
            stored_key_ids=lambda: _stored_key_ids(db),
        ),
    )


def _stored_key_ids(db: Database) -> set[str]:
    """The key ids of the stored secret hashes; none when the database cannot be reached now
    (the process starts unready, as it does then, and the key file is created as before)."""
    try:
        return customers_repository.secret_hash_key_ids(db)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("secret_hash.stored_keys_unchecked", error=str(exc)[:200])
        return set()


def _route(router: APIRouter, path: str, method: str) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")


def create_app(
    services: Services, *, run_worker: bool = False, freeze_heap: bool = False
) -> FastAPI:
    """`freeze_heap`: for a served process (`iod serve`), see the lifespan. Not for tests,
    which build many apps in one process and would collect the whole heap at each start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.keys.ensure()
        # Fewer threads than anyio's 40: each waits for the GIL after every database round
        # trip, and 40 of them (more than the pool's 30 connections) spent the surge's CPU
        # on switching and held row locks the longer (docs/performance.md, "Tenth step").
        to_thread.current_default_thread_limiter().total_tokens = services.settings.http_threads
        if freeze_heap:
            # Everything alive now (modules, routes, schemas: some 100,000 objects) lives as
            # long as the process. Moved out of the cyclic garbage collector's reach, a full
            # collection no longer walks them all: those walks paused every request for 50
            # to 250 ms at a time, which was most of the GET's p99.
            gc.collect()
            gc.freeze()
            # Start-up is over: the collector `iod` turned off while it started (cli/main.py)
            # runs again from the first request, not when its timer fires 5 s after the
            # start. Until then each request's cycles piled up, and the first collection
            # walked them all at once: a pause of 40 ms and more, under load, in the first
            # seconds of a process (docs/performance.md, "Fourteenth step").
            gc.enable()
        stop = threading.Event()
        thread: threading.Thread | None = None
        if run_worker:
            worker = services.worker()

            def work() -> None:
                services.reconcile_network()
                worker.run_forever(stop)

            thread = threading.Thread(target=work, name="iod-worker", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            services.wakeup.set()
            if thread is not None:
                thread.join(timeout=30)
            if freeze_heap:
                gc.unfreeze()

    app = FastAPIOffline(
        title="Internet On-Demand API",
        version=__version__,
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
        # iod has its own /metrics and logs. FastAPI's OpenTelemetry hooks, on, check on
        # every request whether a provider has been configured (environment lookups that
        # were a tenth of the fast GET's time, issue 6).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    metrics = None
    if services.settings.metrics:
        app.state.metrics_registry, metrics = build_registry(services)
        app.include_router(metrics_router)
    install_error_handlers(app)
    relative_slash_redirects(app.router)
    app.include_router(connections_router)
    app.include_router(events_router)
    app.include_router(schedules_router)
    app.include_router(webhooks_router)
    app.include_router(billing_router)  # money (issue 15)
    app.include_router(edge_router)
    app.include_router(traffic_router)
    app.include_router(auth_router)
    app.include_router(health_router)
    app.include_router(problems_router)
    app.include_router(portal_router)
    app.include_router(portal_hooks_router)
    app.include_router(portal_money_router)  # the portal's usage and statements
    # Innermost first: the fast GET runs inside the request context (id, headers, metrics).
    app.add_middleware(
        ConnectionReadFastPath,
        services=services,
        route=_route(connections_router, ROUTE_PATH, "GET"),
    )
    # The two hottest writes, the same way (issue 14): the usual request is answered here,
    # anything else goes on to its FastAPI route.
    app.add_middleware(
        ConnectionWriteFastPath,
        services=services,
        create=_route(connections_router, CREATE_PATH, "POST"),
        bandwidth=_route(connections_router, BANDWIDTH_PATH, "PUT"),
    )
    # The Lumen-compatible API (issue 19): its own paths, errors and /lumen/openapi.json.
    app.add_middleware(LumenDispatch, lumen=create_lumen_app(services))

    async def authenticate_early(
        state: dict[str, Any], authorization: str | None
    ) -> ProblemError | None:
        try:
            principal = await authenticate(services, state, authorization)
        except Unauthorized as exc:
            return exc
        except Exception:  # e.g. the database is down: the route answers it properly
            return None
        remember_early(state, authorization, principal)
        return None

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=services.settings.max_body_bytes,
        body_timeout=services.settings.http_body_timeout_seconds,
        metrics=metrics,
        authenticate=authenticate_early,
        authenticated_prefix=("/internet-on-demand/", *LUMEN_AUTHENTICATED),
        render_reject=render_reject,
    )

    if services.settings.trusted_proxy_list:
        # Outermost: the peer address every layer sees (token throttle, audit) is the one
        # a trusted proxy forwarded; from anyone else the headers are ignored.
        app.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=services.settings.trusted_proxy_list
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
