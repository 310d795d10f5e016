"""The one Settings object: nothing else in the package reads the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOD_", extra="ignore")

    data_dir: Path = Path(".iod")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means a SQLite file under data_dir.",
    )
    database_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to open a PostgreSQL connection."
    )
    database_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request waits for a pooled connection."
    )
    sqlite_busy_timeout: float = Field(
        default=10.0, ge=0, description="Seconds a SQLite writer waits for the write lock."
    )
    unavailable_retry_after: int = Field(
        default=2,
        ge=0,
        le=3600,
        description="Retry-After (seconds) of the 503 answered while the database is down.",
    )
    shutdown_timeout: int = Field(
        default=30,
        gt=0,
        description="On SIGTERM, seconds in-flight requests may take before they are cut.",
    )
    worker_outage_backoff_cap: float = Field(
        default=5.0,
        gt=0,
        description="While the database is down the worker retries after "
        "IOD_WORKER_POLL_SECONDS, doubling up to this many seconds.",
    )
    network_driver: Literal["simulated", "linux"] = Field(
        default="simulated",
        description="simulated: a pretend network; linux: real namespaces, veth and HTB.",
    )
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "internet-on-demand"
    token_ttl: int = Field(default=3600, ge=5, le=86400)
    client_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=4.0,
        description="How long a client's state (enabled, secret generation) is cached.",
    )
    key_refresh_seconds: float = Field(
        default=5.0,
        ge=0.1,
        le=60,
        description="How often each process reloads the signing keys; `iod keys rotate` "
        "activates a new key two intervals later, so every process knows it first.",
    )
    simulated_provision_seconds: float = Field(default=2.0, ge=0)
    simulated_change_seconds: float = Field(default=1.0, ge=0)
    simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # The linux driver (docs/network.md). Names: namespaces `<prefix>-edge-<location>` and
    # `<prefix>-<connection id>`, edge-side links `<prefix><hash of the connection id>`.
    linux_name_prefix: str = Field(default="iod", pattern=r"^[a-z][a-z0-9]{0,4}$")
    linux_customer_ifname: str = Field(
        default="eth0",
        pattern=r"^[A-Za-z0-9_.-]{1,15}$",
        description="The interface name inside each customer namespace.",
    )
    linux_dry_run: bool = Field(
        default=False, description="Print the netlink operations instead of applying them."
    )
    reconcile_on_start: bool = Field(
        default=True, description="A worker compares the network with the database first."
    )
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    worker_batch_size: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Jobs a worker claims and records per transaction; what the network has "
        "not carried out within half the lease goes back to the queue.",
    )
    job_max_attempts: int = Field(default=5, ge=1)
    job_backoff_seconds: float = Field(default=1.0, ge=0)
    job_backoff_cap_seconds: float = Field(default=60.0, ge=0)
    max_body_bytes: int = 64 * 1024
    max_schedule_days: int = 365
    max_pending_changes: int = Field(
        default=100,
        ge=1,
        description="Bandwidth changes a connection may have scheduled or applying at once; "
        "one more is 409 /problems/too-many-pending-changes.",
    )
    # Per OAuth client and per API process (N processes: up to N times these); 0 disables.
    rate_limit_reads_per_second: float = Field(default=100.0, ge=0)
    rate_limit_reads_burst: int = Field(default=200, ge=0)
    rate_limit_writes_per_second: float = Field(default=20.0, ge=0)
    rate_limit_writes_burst: int = Field(default=40, ge=0)
    # The token endpoint, per client id and per source address, per process; 0 disables.
    token_requests_per_minute: float = Field(
        default=60.0, ge=0, description="Every token request, refused or not."
    )
    token_requests_burst: int = Field(default=30, ge=0)
    token_failures_per_minute: float = Field(
        default=10.0, ge=0, description="Failed client authentications: wrong or unknown."
    )
    token_failures_burst: int = Field(default=10, ge=0)
    # `iod serve` (uvicorn): the event loop, and slow or greedy clients.
    http_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="The event loop of `iod serve` (auto: uvloop, installed with the "
        "service). asyncio's shares one saturated process more fairly among slow requests, "
        "but accepts greedily: with --workers N one process may take every connection "
        "(docs/performance.md).",
    )
    http_keep_alive_seconds: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection must send a request's complete headers within this.",
    )
    http_max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="The request line and headers, at most."
    )
    http_body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A request body must arrive completely within this."
    )
    http_max_concurrency: int = Field(
        default=1000,
        ge=0,
        description="Connections plus requests in progress per process beyond which uvicorn "
        "answers 503; 0 means no limit.",
    )
    inprocess_worker: bool = Field(
        default=True, description="Whether `iod serve` runs the job worker in each API process."
    )
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    log_level: str = "INFO"
    log_json: bool = True
    worker_queues: str = Field(
        default="",
        description="Comma-separated job queues this process's workers take; empty: all.",
    )
    periodic_tasks: bool = Field(
        default=True,
        description="Whether this process's workers enqueue the periodic tasks' periods (each "
        "period runs once however many do; off: leave it to other processes).",
    )
    # Retention (the periodic tasks of iod.retention, hourly).
    events_retention_days: float = Field(
        default=30, gt=0, description="Domain events older than this are pruned."
    )
    jobs_retention_days: float = Field(
        default=7, gt=0, description="Finished (done or failed) jobs older than this are purged."
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'iod.sqlite3').resolve()}"

    @property
    def engine_options(self) -> dict[str, float]:
        """make_engine()'s timeouts."""
        return {
            "connect_timeout": self.database_connect_timeout,
            "pool_timeout": self.database_pool_timeout,
            "busy_timeout": self.sqlite_busy_timeout,
        }

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
