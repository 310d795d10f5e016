"""The one Settings object: nothing else in the package reads the environment."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    database_tcp_timeout: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="Seconds a PostgreSQL server may leave an open connection unanswered "
        "(sent data unacknowledged, keepalive probes lost) before the connection is given up "
        "and the request answered 503; 0 keeps the operating system's defaults (about 15 "
        "minutes on Linux).",
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
    secret_hash_key_file: Path | None = Field(
        default=None,
        description="The key of the client secrets' keyed hash (HMAC-SHA-256); unset means "
        "data_dir/secret-hash.key, created (mode 0600) on first use. Every process of one "
        "installation (API, worker, admin commands) must read the same key.",
    )
    key_refresh_seconds: float = Field(
        default=5.0,
        ge=0.1,
        le=60,
        description="How often each process reloads the signing keys; `iod keys rotate` "
        "activates a new key two intervals later, so every process knows it first.",
    )
    # Secrets at rest (docs/security.md, "Secrets at rest"; iod/secure.py).
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Encrypts the signing keys' private PEM at rest (at least 32 bytes); "
        "keys stored unencrypted before are encrypted at the next start.",
    )
    key_encryption_key_file: Path | None = Field(
        default=None,
        description="A file holding the key encryption key (mode 0600), instead of "
        "IOD_KEY_ENCRYPTION_KEY.",
    )
    allow_insecure_key_store: bool = Field(
        default=False,
        description="Start even if the key store (a SQLite file outside the data directory, "
        "the key encryption key file) is readable by group or others; warns instead.",
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
    worker_gather_seconds: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="After a batch that was not full, a busy worker waits this long before "
        "the next, so the jobs arriving one by one are claimed and recorded together (a "
        "surge of changes at one location: 40 % less worker CPU). An idle worker starts "
        "a job at once; 0 turns it off.",
    )
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
    http_worker_healthcheck_seconds: int = Field(
        default=60,
        ge=1,
        description="`iod serve --workers N`: a process that does not answer its supervisor's "
        "ping within this is taken for hung, killed and replaced, with every request it has "
        "in hand; uvicorn's own 5 s could take a saturated process for a hung one.",
    )
    http_keep_alive_seconds: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    http_header_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A connection must send a request's complete headers within this (its "
        "first request: of the connection opening), or it is closed.",
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
        description="Requests in progress per process beyond which a request is answered "
        "503 problem+json with Retry-After; idle connections do not count; 0: no limit.",
    )
    http_max_connections: int = Field(
        default=4096,
        ge=0,
        description="Open connections per process; one more is answered 503 and closed. "
        "`iod serve` raises its open-files limit to the hard limit; 0: no limit.",
    )
    http_max_connections_per_address: int = Field(
        default=128,
        ge=0,
        description="Open connections per client address and process (trusted proxies "
        "exempt); one more is answered 429 and closed; 0: no limit.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (e.g. `10.0.0.5, 10.1.0.0/16`) "
        "whose X-Forwarded-For and X-Forwarded-Proto are believed; empty: none, the peer "
        "address is the client's.",
    )
    inprocess_worker: bool = Field(
        default=True, description="Whether `iod serve` runs the job worker in each API process."
    )
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="The bearer token /metrics requires; unset: /metrics answers the "
        "loopback only (404 to anyone else).",
    )
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
    # The events feed and stream (iod.events).
    events_max_wait_seconds: float = Field(
        default=60,
        ge=0,
        le=600,
        description="Longest long poll of GET /events (`wait` is clamped to it).",
    )
    events_heartbeat_seconds: float = Field(
        default=15, gt=0, description="Seconds between comment lines on an idle event stream."
    )
    events_stream_max_seconds: float = Field(
        default=3600,
        gt=0,
        description="An event stream ends after this long; clients resume with Last-Event-ID.",
    )
    events_streams_per_client: int = Field(
        default=5, ge=1, description="Open event streams per API client and process (429 past)."
    )
    events_recheck_seconds: float = Field(
        default=2,
        gt=0,
        description="A waiting feed or stream reads again at least this often, even unwoken "
        "(commits of processes it cannot hear: another process on SQLite).",
    )
    http_threads: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Threads per API process for the request work that blocks (database "
        "transactions, secret and password checks); more requests wait their turn. Each "
        "thread holds at most one pooled database connection while it works.",
    )
    list_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Threads per API process that serve list answers (connections, "
        "bandwidth changes) off the event loop; each keeps one database connection.",
    )
    # --- schedules (recurring bandwidth schedules, docs/schedules.md) ---
    schedules_horizon_hours: float = Field(
        default=48,
        gt=0,
        le=24 * 30,
        description="How far ahead a schedule's transitions are planned as bandwidth changes.",
    )
    schedules_plan_batch: int = Field(
        default=50,
        ge=1,
        description="Schedules planned per job of the planner (more: a follow-up job). A job "
        "holds its connections' locations' rows from its last statements until it commits.",
    )
    schedules_plan_at_once: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches the planner has in flight at once on PostgreSQL, each in a "
        "transaction of its own, so the database writes one while the next is evaluated "
        "(SQLite: one at a time).",
    )

    # The customer portal (iod.portal, docs/portal.md).
    portal_session_idle_seconds: int = Field(
        default=1800, ge=60, description="A portal session ends after this long unused."
    )
    portal_session_absolute_seconds: int = Field(
        default=43200, ge=60, description="A portal session ends this long after sign-in."
    )
    portal_sign_in_link_seconds: int = Field(
        default=3600, ge=60, description="How long a one-time sign-in link works."
    )
    portal_password_min_length: int = Field(
        default=12, ge=8, le=128, description="Shortest portal password accepted."
    )
    portal_max_failed_sign_ins: int = Field(
        default=5, ge=1, description="Failed sign-ins in a row before a temporary lockout."
    )
    portal_lockout_seconds: int = Field(
        default=900, ge=1, description="How long an account stays locked after them."
    )
    portal_sign_ins_per_minute: float = Field(
        default=10, ge=0, description="Sign-in attempts per source address and minute (0: off)."
    )
    portal_sign_ins_burst: int = Field(
        default=10, ge=0, description="Sign-in attempts a source address may make at once."
    )

    # --- Lumen compatibility (issue 19, iod.lumen; docs/lumen.md) ---
    lumen_partner_id: str = Field(
        default="1000",
        min_length=1,
        max_length=64,
        description="The partner id the Lumen paths show for this deployment "
        "(`/Network/v1/provider`, `locationProfile.relatedParty.id`).",
    )
    lumen_partner_name: str = Field(default="Internet On-Demand", min_length=1)
    lumen_partner_type: str = Field(default="CLOUD_PARTNER", min_length=1)
    lumen_hq_country: str = Field(
        default="US", description="The `hqCountry` of the customers' billing accounts."
    )
    lumen_product_code: str = Field(
        default="718", description="Lumen's product code of Internet On-Demand."
    )

    # --- money (issue 15): quotes, metering, statements (docs/money.md) ---
    quote_ttl_seconds: int = Field(
        default=900, ge=1, le=86400, description="How long a quote may be used (15 minutes)."
    )
    metering_suspended: str = Field(
        default="full",
        description="What a suspended hour costs: full, none, or a fraction of the rate (0.5).",
    )
    metering_settle_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="An hour is rated this long after it ends (late commits of its facts).",
    )
    metering_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Connections rated per statement batch."
    )
    metering_max_per_run: int = Field(
        default=200_000,
        ge=1,
        description="Connection-hours one metering run rates at most (the rest: next run).",
    )

    @field_validator("metering_suspended")
    @classmethod
    def _suspended_rule(cls, value: str) -> str:
        from iod.domain.rating import parse_fraction

        parse_fraction(value)  # ValueError names the bad value
        return value

    # Edge agents and traffic telemetry (issue 20: iod.edge, iod.traffic).
    edge_ack_recheck_seconds: float = Field(
        default=5,
        gt=0,
        description="A job waiting for an edge agent's acknowledgement is looked at again "
        "this often (an acknowledgement also wakes it at once).",
    )
    edge_ack_timeout_seconds: float = Field(
        default=86400,
        gt=0,
        description="An operation an edge agent has not acknowledged after this long counts "
        "as a failed attempt of its job (a partition longer than this fails orders).",
    )
    edge_max_wait_seconds: float = Field(
        default=30, ge=0, le=600, description="Longest long poll of an edge agent's watch."
    )
    edge_locations_cache_seconds: float = Field(
        default=2,
        ge=0,
        description="How long a process trusts its list of the locations that have an agent.",
    )
    traffic_sample_seconds: float = Field(
        default=10,
        gt=0,
        description="Seconds between samples of each connection's counters (edge agents and "
        "the in-process drivers).",
    )
    traffic_raw_retention_hours: float = Field(
        default=48,
        gt=0,
        description="Raw traffic samples older than this are folded into 5-minute ones.",
    )
    traffic_retention_days: float = Field(
        default=400, gt=0, description="5-minute traffic samples older than this are pruned."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        """Normalised networks (`10.1.0.5/16` → `10.1.0.0/16`): uvicorn's proxy middleware
        parses them strictly, and must trust exactly what the connection bounds exempt."""
        parts = (part.strip() for part in self.trusted_proxies.split(","))
        return [str(ipaddress.ip_network(part, strict=False)) for part in parts if part]

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
            "tcp_timeout": self.database_tcp_timeout,
            "pool_timeout": self.database_pool_timeout,
            "busy_timeout": self.sqlite_busy_timeout,
        }

    @property
    def effective_secret_hash_key_file(self) -> Path:
        return self.secret_hash_key_file or self.data_dir / "secret-hash.key"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    # --- webhooks (issue 16) ---------------------------------------------------------------
    webhook_allow_http: bool = Field(
        default=False,
        description="Webhook endpoints may be plain http:// URLs (development); else https only.",
    )
    webhook_allow_networks: str = Field(
        default="",
        description="Comma-separated CIDRs webhooks may be delivered to although they are "
        "loopback, private, link-local or reserved (e.g. 127.0.0.0/8 for a local receiver).",
    )
    webhook_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="How long one webhook attempt may take in all, from connecting to the "
        "last byte of the answer kept (the host name's lookup before it aside).",
    )
    webhook_retry_schedule: str = Field(
        default="0,5,300,1800,7200,18000,36000,36000",
        description="Seconds before each attempt of a delivery (the first is the first "
        "attempt's delay); as many attempts as entries. Each delay gets +-20% jitter.",
    )
    webhook_disable_after_seconds: float = Field(
        default=5 * 86400,
        gt=0,
        description="An endpoint whose every attempt failed for this long is disabled.",
    )
    webhook_secret_grace_seconds: float = Field(
        default=86400,
        ge=0,
        description="After a secret rotation the previous secret signs too for this long.",
    )
    webhook_max_endpoints: int = Field(
        default=20, ge=1, description="Webhook endpoints per customer."
    )

    @field_validator("webhook_allow_networks")
    @classmethod
    def _webhook_networks(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _webhook_schedule(cls, value: str) -> str:
        steps = [float(part) for part in value.split(",") if part.strip()]
        if not steps or any(step < 0 for step in steps):
            raise ValueError("a comma-separated list of non-negative seconds")
        return value

    @property
    def webhook_retry_delays(self) -> list[float]:
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
