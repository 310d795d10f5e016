"""The tables. Relationships are not used: queries live in repositories and load explicitly."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from iod.infra.db import Base, UTCDateTime


def _where(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, for PostgreSQL and SQLite alike."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


def _index_not_null(column: str) -> Index:
    """An index of `column`'s values without its NULLs (a partial index, on PostgreSQL and
    SQLite alike): for a column NULL in almost every new row, looked up only by value
    (`column = x`, `column < x`, which imply `IS NOT NULL`, so both databases use it).
    Each NULL row would otherwise add an entry that no query reads (docs/performance.md,
    "Fewer index entries and foreign-key checks per planned transition")."""
    return Index(None, column, **_where(f"{column} IS NOT NULL"))


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Lumen compatibility (issue 19): the `x-customer-number` its clients send (`1-ABCDE`).
    customer_number: Mapped[str | None] = mapped_column(
        String(40), nullable=True, unique=True, index=True
    )


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    secret_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Secret rotation: the generation counts rotations and is a claim of every token, so the
    # tokens obtained with a replaced secret stop when its grace period ends. The replaced
    # secret's hash is kept only until then.
    secret_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    previous_secret_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When it starts signing (a rotation publishes the key ahead of that, so every process
    # can verify its tokens first); NULL means from creation.
    activates_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Location(Base):
    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(512))
    capacity_mbps: Mapped[int] = mapped_column(Integer)
    tiers_mbps: Mapped[list[int]] = mapped_column(JSON)
    # Connections' IPv4 blocks come from this pool; `ipv4_next` is the offset (in addresses)
    # where the next never-used block starts. Freed blocks are reused first (Ipv4Block).
    ipv4_pool: Mapped[str] = mapped_column(String(18))
    ipv4_next: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The sum of its connections' `committed_mbps`, kept in step by
    # `iod.connections.capacity.recommit` so an order's capacity check is one row, not a sum
    # over every connection at the location (docs/decisions.md, "Capacity counter").
    committed_mbps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Ipv4Block(Base):
    """A block carved from a location's pool; `connection_id` is None once it is free again."""

    __tablename__ = "ipv4_blocks"
    # The free blocks only, in the order an order takes them (`addressing.allocate`: the
    # lowest free block of a size at a location). A block in use is not in it, so a new
    # block adds no entry; before migration 20261204_0016 the index held every block with
    # its connection, and SQLite's planner walked the location's blocks to find a free one.
    __table_args__ = (
        Index(None, "location_id", "prefix_length", "offset", **_where("connection_id IS NULL")),
    )

    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id"), primary_key=True)
    offset: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix_length: Mapped[int] = mapped_column(Integer)
    network: Mapped[str] = mapped_column(String(18))
    connection_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (Index(None, "customer_id", "id"), Index(None, "location_id", "status"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id"))
    status: Mapped[str] = mapped_column(String(16))
    # The status the accepted actions lead to; equals `status` when none is pending.
    target_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bandwidth_mbps: Mapped[int] = mapped_column(Integer)
    # What it commits at its location: the most it has or will have (its bandwidth or a
    # pending change's), 0 once terminated. Maintained by `capacity.recommit` only.
    committed_mbps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The IPv4 block the connection was given (CIDR); kept after termination, for history.
    ipv4_block: Mapped[str | None] = mapped_column(String(18), nullable=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BandwidthChange(Base):
    __tablename__ = "bandwidth_changes"
    __table_args__ = (
        Index(None, "connection_id", "status"),
        _index_not_null("revert_of"),
        _index_not_null("schedule_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id"))
    from_mbps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_mbps: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(40))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A boost's revert points at the boost; cancelling the boost cancels its revert.
    revert_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The schedule whose transition this change is (docs/schedules.md); None for others.
    # No foreign key: the change stays in the history after its schedule is deleted.
    schedule_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class StatusTransition(Base):
    """Each connection's status changes, with when and why."""

    __tablename__ = "status_transitions"
    __table_args__ = (Index(None, "connection_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id"))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Job(Base):
    """A task to run (`kind` names it in the task registry, `args` are its JSON arguments).

    Jobs sharing a `lock_key` run one at a time in (scheduled_at, id) order (a connection's
    jobs use `connection:<id>`); jobs without one run as soon as they are due. `queue` lets a
    worker take only some tasks. `connection_id`/`change_id` are kept for the connection
    tasks (and the jobs of earlier releases)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "state", "run_at"),
        Index(None, "lock_key", "state", "scheduled_at"),
        _index_not_null("finished_at"),  # `purge_finished`'s `finished_at < x`
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    change_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    lock_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    queue: Mapped[str] = mapped_column(String(32), default="default", server_default="default")
    state: Mapped[str] = mapped_column(String(16))
    run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PeriodicRun(Base):
    """One row per periodic task and period: the primary key is what makes a period run
    once across every process (the job is enqueued in the transaction that inserts it)."""

    __tablename__ = "periodic_runs"

    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Event(Base):
    """A domain event, appended in the transaction of the change it describes (an outbox).

    `position` counts each customer's events from 1 without gaps, in commit order (see
    `iod.events`); rows are never updated, only pruned past their retention."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("customer_id", "position"),
        Index(None, "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Who caused it ({"type", "id", "source", "requestId"}), None for the worker's own.
    actor: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class EventStream(Base):
    """Each customer's last event position: the row its writers update at commit, which
    serialises them and so hands out positions in commit order."""

    __tablename__ = "event_streams"

    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


# How long an IdempotencyKey row is kept (its `expires_at`), the API's and the portal's.
IDEMPOTENCY_KEEP = timedelta(hours=24)


class IdempotencyKey(Base):
    """A client's Idempotency-Key and the first response to it, kept at least 24 hours."""

    __tablename__ = "idempotency_keys"

    customer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AuditEvent(Base):
    """Who changed what, when and from where; written in the transaction of the change."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "at"),
        Index(None, "customer_id", "id"),
        Index(None, "target_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "client" (actor_id is the client id) or "operator" (the OS user running `iod`).
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(255))
    # The caller's address for API requests, "cli" for the admin command line.
    source: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(255))
    # The customer the target belongs to, when it belongs to one (not for signing keys).
    customer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- schedules (recurring bandwidth schedules, docs/schedules.md) ------------------------


class Schedule(Base):
    """A connection's recurring bandwidth schedule (at most one per connection). Its rules
    and exceptions are JSON as the API has them, bandwidths in Mbps; `planned_until` is how
    far ahead its transitions are planned as bandwidth changes."""

    __tablename__ = "schedules"
    __table_args__ = (Index(None, "customer_id", "id"), Index(None, "paused", "planned_until"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id"), unique=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    default_mbps: Mapped[int] = mapped_column(Integer)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    exceptions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The local date its RRULEs count from (their DTSTART): validFrom's, else creation's.
    anchor: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(Integer, default=1)
    planned_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduleTransition(Base):
    """One planned transition of a schedule: the primary key (schedule, instant) is what
    makes planning exactly once across workers and reruns (INSERT … ON CONFLICT DO
    NOTHING in the transaction that creates the change).

    No foreign key to `schedules` (since 20261201_0015): its check cost the planner's
    database a lookup per row. Its only writer is the planner, with the schedule's row
    locked (read `FOR UPDATE` in the same transaction), and deleting a schedule deletes
    its transitions first, under the same lock (`repository.delete_all_transitions`)."""

    __tablename__ = "schedule_transitions"

    schedule_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    mbps: Mapped[int] = mapped_column(Integer)
    # "planned" (change_id is its change) or "refused" (detail says why: capacity, state).
    outcome: Mapped[str] = mapped_column(String(16))
    change_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- webhooks (issue 16): endpoints, one delivery per (event, endpoint), its attempts ------


class WebhookEndpoint(Base):
    """A customer's URL that is sent the events it subscribes to, signed with its secret.

    `secret` (and `previous_secret` during a rotation's grace period) are stored encrypted
    with the key encryption key when one is configured (`iod.webhooks.secrets`)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "customer_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Event type prefixes or exact names; empty: every event.
    event_types: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Since when every attempt failed (None: the last one succeeded, or none yet).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one endpoint: its id is the `webhook-id` of every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_position"),
        Index(None, "endpoint_id", "id"),
        Index(None, "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(40))
    event_position: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the JSON body, as signed
    status: Mapped[str] = mapped_column(String(16))  # pending, succeeded, failed
    attempts: Mapped[int] = mapped_column(Integer)
    # Bumped by a manual retry and by each next attempt scheduled: a job of an older
    # generation does nothing.
    generation: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: what the receiver answered (body cut to 1 KiB)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(40))
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)


# -- the customer portal (iod.portal) ----------------------------------------------------------


class PortalUser(Base):
    """A person who signs in to the portal for one customer, with a role (viewer, operator,
    admin). No password until they set one through a sign-in link."""

    __tablename__ = "portal_users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    # Lower-cased; one account per address across customers (it names the person signing in).
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Failed sign-ins in a row; at the limit the account is locked until `locked_until`.
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PortalSignInLink(Base):
    """A one-time sign-in link (to set a password): only the keyed hash of its token."""

    __tablename__ = "portal_sign_in_links"

    token_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("portal_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PortalSession(Base):
    """A signed-in browser: the keyed hash of the cookie's session id, its CSRF token, and
    its idle and absolute expiry."""

    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("portal_users.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    source: Mapped[str] = mapped_column(String(255), default="")


# --- Lumen compatibility (issue 19, iod.lumen) ----------------------------------------------


class LumenService(Base):
    """The 11-digit Lumen `serviceId` of a connection, given when it is ordered (through
    either API) by the `iod.lumen` subscriber of `connection.ordered`."""

    __tablename__ = "lumen_services"
    __table_args__ = (Index(None, "customer_id", "connection_id"),)

    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id"), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(11), unique=True, index=True)
    customer_id: Mapped[str] = mapped_column(String(40))


class LumenOrder(Base):
    """An order received on `POST /Customer/v3/Ordering/orderRequest`: idempotent on the
    customer's `externalId`; `items` ties each order item to the connection (and bandwidth
    change) it acted on, so its state is read from them."""

    __tablename__ = "lumen_orders"
    __table_args__ = (UniqueConstraint("customer_id", "external_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    external_id: Mapped[str] = mapped_column(String(20))
    fingerprint: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- money (issue 15): price book, quotes, metered usage, statements -------------------------


class Price(Base):
    """One version of the hourly rate of a tier at a location: in force from `effective_from`
    until the next version's. Amounts are integers in the currency's minor units (cents)."""

    __tablename__ = "prices"
    __table_args__ = (UniqueConstraint("location_id", "tier_mbps", "effective_from"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id"))
    tier_mbps: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    hourly_minor: Mapped[int] = mapped_column(Integer)
    monthly_cap_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Quote(Base):
    """A price promised to a customer for 15 minutes; once used, the rate charged for its
    tier on that connection until the next change (`used_change_id`: the change it priced,
    None for the order itself)."""

    __tablename__ = "quotes"
    __table_args__ = (Index(None, "customer_id", "id"), Index(None, "used_connection_id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    location_id: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    tier_mbps: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    hourly_minor: Mapped[int] = mapped_column(Integer)
    monthly_cap_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    price_id: Mapped[str] = mapped_column(String(40))
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revert_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    used_connection_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    used_change_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class UsageHour(Base):
    """One row per connection and hour rated: its primary key is what makes an hour rated
    exactly once (INSERT … ON CONFLICT DO NOTHING); its lines are written with it."""

    __tablename__ = "usage_hours"

    connection_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    amount_minor: Mapped[int] = mapped_column(Integer)
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageLine(Base):
    """A stretch of one hour of one connection at one tier, status and rate."""

    __tablename__ = "usage_lines"
    __table_args__ = (
        UniqueConstraint("connection_id", "hour", "start_at"),
        Index(None, "customer_id", "hour"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(String(40))
    hour: Mapped[datetime] = mapped_column(UTCDateTime())
    customer_id: Mapped[str] = mapped_column(String(40))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[int] = mapped_column(Integer)
    tier_mbps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    hourly_minor: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(Integer)
    monthly_cap_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # "price:<id>" or "quote:<id>": where the rate came from.
    source: Mapped[str] = mapped_column(String(48))


class MeteredHour(Base):
    """An hour every connection has been rated for (its `usage.rated` events are out)."""

    __tablename__ = "metered_hours"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Statement(Base):
    """A customer's calendar month (UTC): open while it runs, then closed with its lines
    frozen in `document` (never changed again)."""

    __tablename__ = "statements"
    __table_args__ = (UniqueConstraint("customer_id", "month"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    month: Mapped[str] = mapped_column(String(7))
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


# --- edge agents and traffic telemetry (issue 20, iod.edge and iod.traffic) -------------


class EdgeAgent(Base):
    """The agent of a location: its jobs' network operations go to it, not to an in-process
    driver. `cursor` is the last sequence number handed out for the location's desired state
    (its row lock orders them); `acked_cursor` the last the agent reported having applied."""

    __tablename__ = "edge_agents"

    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40), unique=True)
    cursor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acked_cursor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hostname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    actual_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What the agent's last full resynchronisation had to correct on its kernel (created,
    # corrected, removed): the edge's drift from the desired state, as it found it.
    drift: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class EdgeDesired(Base):
    """What the controller wants a location's edge to hold for one connection; `state`
    `absent` is a tombstone (the agent removes it). `seq` orders the location's changes."""

    __tablename__ = "edge_desired"
    __table_args__ = (Index(None, "location_id", "seq"),)

    location_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    op_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    bandwidth_mbps: Mapped[int] = mapped_column(Integer)
    ipv4_block: Mapped[str | None] = mapped_column(String(18), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EdgeOperation(Base):
    """A job's network operation handed to an agent (the job id is the operation id); the
    job completes once the agent reports it `done`."""

    __tablename__ = "edge_operations"
    __table_args__ = (Index(None, "location_id", "status"),)

    op_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location_id: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TrafficCounter(Base):
    """The last cumulative counters seen for a connection, to turn the next into a delta."""

    __tablename__ = "traffic_counters"

    connection_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    packets_in: Mapped[int] = mapped_column(BigInteger)
    packets_out: Mapped[int] = mapped_column(BigInteger)


class TrafficSample(Base):
    """Bytes and packets of one connection over `seconds` ending at `at`; `in` is towards
    the customer (download), `out` from it (upload). Raw samples are folded into 300-second
    ones after the raw retention (`resolution` 0: raw, else the bucket's seconds)."""

    __tablename__ = "traffic_samples"
    __table_args__ = (Index(None, "connection_id", "at"), Index(None, "resolution", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[float] = mapped_column(Float)
    resolution: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    packets_in: Mapped[int] = mapped_column(BigInteger)
    packets_out: Mapped[int] = mapped_column(BigInteger)
    peak_in_bps: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    peak_out_bps: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class StatementInterval(Base):
    """A statement line as the hours are rated: one connection's stretch of one tier,
    status and rate within a month, extended by each hour that continues it (so a month's
    statement reads one row per interval, not every hourly line)."""

    __tablename__ = "statement_intervals"
    __table_args__ = (
        Index(None, "customer_id", "month", "connection_id"),
        Index(None, "connection_id", "end_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    month: Mapped[str] = mapped_column(String(7))
    connection_id: Mapped[str] = mapped_column(String(40))
    tier_mbps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    hourly_minor: Mapped[int] = mapped_column(Integer)
    monthly_cap_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(48))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(Integer)


# --- Lumen quotes (issue 19, iod.lumen.pricing): what a Lumen priceRequest adds to a quote --


class LumenQuote(Base):
    """A quote asked for through `POST /Product/v1/priceRequest`: the money feature's quote
    (`quote_id`, its price) with what only Lumen has: the request as sent (descriptions,
    purchase order number), the service of a change, and the order that used it."""

    __tablename__ = "lumen_quotes"
    __table_args__ = (Index(None, "customer_id", "quote_id"),)

    quote_id: Mapped[str] = mapped_column(ForeignKey("quotes.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    service_id: Mapped[str | None] = mapped_column(String(11), nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
