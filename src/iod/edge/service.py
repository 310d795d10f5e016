"""The controller's side of the edge agents: registering them, the desired state of their
location (a snapshot and the changes after a cursor), their reports, and handing a job's
network operation to a location's agent.

A location has an agent once `iod network agents add` registered one (a row of
`edge_agents`); from then on its jobs' operations become rows of `edge_desired` (what the
edge should hold, one per connection, numbered by the location's sequence) and
`edge_operations` (the job's operation, acknowledged by the agent's report). Applying a
desired row is idempotent on the edge, so a row delivered twice (a reconnect, a resync) is
applied once in effect, and an operation is acknowledged once: by its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from iod.auth.passwords import SecretHasher
from iod.customers import repository as customers
from iod.customers.service import NewClient, create_client
from iod.domain.status import ConnectionStatus
from iod.edge import repository
from iod.infra.clock import Clock
from iod.infra.db import uow
from iod.infra.errors import Conflict, NotFound, shown
from iod.jobs import queue
from iod.models import Connection, Customer, EdgeAgent, EdgeDesired, EdgeOperation

# The customer that owns the agents' clients: agents are the provider's, not a customer's.
EDGE_CUSTOMER_ID = "cus_edge_agents"
EDGE_CUSTOMER_NAME = "Edge agents (internal)"
ACTIVE, SUSPENDED, ABSENT = "active", "suspended", "absent"
_IN_FORCE = [ConnectionStatus.ACTIVE.value, ConnectionStatus.SUSPENDED.value]
RETRIED = "retried"  # a failed operation whose failure a job attempt has counted
TOPIC = "edge"  # woken by every commit that changes some location's desired state


@dataclass(frozen=True)
class Registered:
    agent: EdgeAgent
    client: NewClient
    seeded: int


def register_agent(
    session: Session, clock: Clock, location_id: str, hasher: SecretHasher
) -> Registered:
    """Registers the agent of a location with new client credentials (scope `edge`, bound to
    the location by this row) and seeds the location's desired state with its connections
    in force: from now on its operations go to the agent."""
    from iod.models import Location

    # The location's row locked first: two registrations of one location at once run one
    # after the other, and the second is refused below (not a unique key's error).
    if session.get(Location, location_id, with_for_update=True) is None:
        raise NotFound(f"no location {shown(location_id)}")
    if repository.agent(session, location_id) is not None:
        raise Conflict(f"location {location_id} already has an agent")
    now = clock.now()
    if customers.get_customer(session, EDGE_CUSTOMER_ID) is None:
        session.add(Customer(id=EDGE_CUSTOMER_ID, name=EDGE_CUSTOMER_NAME, created_at=now))
        session.flush()
    client = create_client(
        session, clock, EDGE_CUSTOMER_ID, "edge", hasher=hasher, name=f"edge agent {location_id}"
    )
    agent = EdgeAgent(location_id=location_id, client_id=client.client_id, cursor=0,
                      acked_cursor=0, created_at=now)  # fmt: skip
    session.add(agent)
    session.flush()
    in_force = session.execute(
        Connection.__table__.select()
        .with_only_columns(
            Connection.id, Connection.status, Connection.bandwidth_mbps, Connection.ipv4_block
        )
        .where(
            Connection.location_id == location_id,
            Connection.status.in_(
                [ConnectionStatus.ACTIVE.value, ConnectionStatus.SUSPENDED.value]
            ),
        )
        .order_by(Connection.id)
    ).all()
    seq = (
        repository.next_seq(session, location_id, len(in_force)) - len(in_force) if in_force else 0
    )
    for connection_id, status, mbps, block in in_force:
        seq += 1
        session.add(
            EdgeDesired(
                location_id=location_id,
                connection_id=connection_id,
                seq=seq,
                op_id=None,
                state=_state_of(status),
                bandwidth_mbps=mbps,
                ipv4_block=block,
                updated_at=now,
            )
        )
    session.flush()
    return Registered(agent, client, len(in_force))


def remove_agent(session: Session, clock: Clock, location_id: str) -> EdgeAgent:
    """The location goes back to the in-process driver; its agent's client is disabled."""
    agent = repository.agent(session, location_id, lock=True)
    if agent is None:
        raise NotFound(f"location {shown(location_id)} has no agent")
    client = customers.get_client(session, agent.client_id)
    if client is not None:
        client.enabled = False
        client.disabled_at = clock.now()
    session.execute(delete(EdgeDesired).where(EdgeDesired.location_id == location_id))
    session.execute(delete(EdgeOperation).where(EdgeOperation.location_id == location_id))
    session.delete(agent)
    session.flush()
    return agent


def agent_for(session: Session, location_id: str, client_id: str) -> EdgeAgent:
    """The agent of `location_id` if `client_id` is it; otherwise 404, whether the location
    has another agent, none, or does not exist (an agent learns nothing of other places)."""
    agent = repository.agent(session, location_id)
    if agent is None or agent.client_id != client_id:
        raise NotFound(f"no location {shown(location_id)} for this agent")
    return agent


def touch(agent: EdgeAgent, now: datetime, version: str | None = None) -> None:
    agent.last_contact_at = now
    if version:
        agent.version = version[:64]


@dataclass(frozen=True)
class DesiredRow:
    connection_id: str
    state: str
    bandwidth_mbps: int
    ipv4_block: str | None
    seq: int
    op_id: str | None
    acked: bool


def _rows(session: Session, rows: list[EdgeDesired]) -> list[DesiredRow]:
    ops = {
        op.op_id: op.status
        for op in repository.operations(session, [r.op_id for r in rows if r.op_id])
    }
    return [
        DesiredRow(
            r.connection_id,
            r.state,
            r.bandwidth_mbps,
            r.ipv4_block,
            r.seq,
            r.op_id,
            r.op_id is None or ops.get(r.op_id, "done") != "pending",
        )
        for r in rows
    ]


def snapshot(session: Session, agent: EdgeAgent) -> tuple[int, list[DesiredRow]]:
    """The whole desired state of the agent's location and its cursor. Tombstones of
    connections whose removal is not yet acknowledged are included; older ones are not."""
    rows = repository.desired_of_location(session, agent.location_id)
    out = _rows(session, list(rows))
    return agent.cursor, [r for r in out if r.state != ABSENT or not r.acked]


def changes(
    session: Session, agent: EdgeAgent, after: int, limit: int
) -> tuple[int, list[DesiredRow], bool]:
    """The rows changed after `after` (at most `limit`), the cursor to ask from next, and
    whether more are waiting."""
    rows = list(repository.changes_after(session, agent.location_id, after, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1].seq if rows else max(after, 0)
    return cursor, _rows(session, rows), more


@dataclass(frozen=True)
class Result:
    op_id: str
    ok: bool
    error: str | None = None


def report(
    session: Session,
    clock: Clock,
    agent: EdgeAgent,
    results: list[Result],
    *,
    cursor: int | None,
    version: str | None,
    hostname: str | None,
    actual_count: int | None,
    drift: int | None = None,
) -> tuple[int, int]:
    """Records an agent's results by operation id (a repeated report changes nothing) and
    its state; wakes the jobs whose operation is done. Returns (recorded, unknown)."""
    now = clock.now()
    touch(agent, now, version)
    if hostname:
        agent.hostname = hostname[:255]
    if actual_count is not None:
        agent.actual_count = actual_count
    if drift is not None:
        agent.drift = drift
    if cursor is not None:
        agent.acked_cursor = max(agent.acked_cursor, min(cursor, agent.cursor))
    known = {op.op_id: op for op in repository.operations(session, [r.op_id for r in results])}
    recorded = unknown = 0
    for result in results:
        op = known.get(result.op_id)
        if op is None or op.location_id != agent.location_id:
            unknown += 1
            continue
        if op.status != "pending":
            continue  # already recorded: an operation is acknowledged once
        op.status = "done" if result.ok else "failed"
        op.error = None if result.ok else (result.error or "failed on the edge")[:2000]
        op.acked_at = now
        recorded += 1
        job_id = op.op_id[4:].split(".")[0]  # job-<id>, or job-<id>.<n> handed again
        if op.op_id.startswith("job-") and job_id.isdigit():
            queue.wake_job(session, int(job_id), now)
    session.flush()
    return recorded, unknown


# --- the driver's side: hand an operation to the agent -------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a job's operation at an edge location is: `done`, `failed` (with the error),
    `waiting` (handed over or not yet acknowledged), `timeout`, or `local` (no agent)."""

    status: str
    error: str | None = None


def hand_over(
    session: Session,
    now: datetime,
    *,
    location_id: str | None,
    connection_id: str,
    kind: str,
    op_id: str,
    mbps: int | None,
    block: str | None,
    timeout: timedelta,
) -> Outcome:
    """One write transaction of the edge driver (`iod.edge.driver`): the operation's state,
    or, the first time, its desired row and operation row (the agent is woken)."""
    # The job's operation, or its latest hand-over after failures (`job-<id>.<n>`, the n-th
    # one again): each a primary-key lookup, and failures are few.
    base, retries = op_id, 0
    op = repository.operation(session, op_id, lock=True)
    while op is not None and op.status == RETRIED:
        retries += 1
        op_id = f"{base}.{retries}"
        op = repository.operation(session, op_id, lock=True)
    if op is not None:
        if op.status == "done":
            return Outcome("done")
        if op.status == "failed":
            # This attempt fails; the next one hands the operation over afresh, under an id
            # of its own: a report of this failure sent again (its answer was lost) must
            # not fail the new hand-over, which the agent has not applied yet.
            op.status = RETRIED
            return Outcome("failed", op.error)
        if now - op.created_at > timeout:
            # As a failure: this attempt fails, and the next hands the operation over again
            # under an id of its own, with a window of its own (every later attempt timed out
            # at once before, with nothing handed over again).
            op.status = RETRIED
            return Outcome("timeout")
        return Outcome("waiting")
    if location_id is None:  # terminate names only the connection
        rows = session.scalars(
            EdgeDesired.__table__.select()
            .with_only_columns(EdgeDesired.location_id)
            .where(EdgeDesired.connection_id == connection_id)
        ).all()
        location_id = rows[0] if rows else None
        if location_id is None:
            return Outcome("local")
    if repository.agent(session, location_id) is None:
        return Outcome("local")
    seq = repository.next_seq(session, location_id)
    row = repository.desired(session, location_id, connection_id)
    if kind == "terminate":
        state = ABSENT
    elif kind == "suspend":
        state = SUSPENDED
    elif kind in ("provision", "resume"):
        state = ACTIVE
    else:  # a bandwidth change keeps the suspension
        state = row.state if row is not None and row.state != ABSENT else ACTIVE
    if row is None:
        row = EdgeDesired(location_id=location_id, connection_id=connection_id)
        session.add(row)
    row.seq, row.op_id, row.state, row.updated_at = seq, op_id, state, now
    if mbps is not None:
        row.bandwidth_mbps = mbps
    elif row.bandwidth_mbps is None:
        row.bandwidth_mbps = 0
    if block is not None:
        row.ipv4_block = block
    session.add(
        EdgeOperation(op_id=op_id, location_id=location_id, connection_id=connection_id,
                      kind=kind, seq=seq, status="pending", created_at=now)
    )  # fmt: skip
    session.flush()
    uow.wake(session, TOPIC)
    return Outcome("waiting")


def reconcile_location(
    session: Session,
    now: datetime,
    location_id: str,
    desired: dict[str, tuple[int, bool, str | None]],
    skip: frozenset[str],
    *,
    dry_run: bool,
) -> tuple[list[str], list[str], list[str], int]:
    """Makes a location's desired rows say what the database has in force (connection ->
    (Mbps, suspended, block)); the agent then converges its kernel. Returns (created,
    removed, corrected, unchanged)."""
    rows = {r.connection_id: r for r in repository.desired_of_location(session, location_id)}
    created: list[str] = []
    removed: list[str] = []
    corrected: list[str] = []
    unchanged = 0
    for connection_id, (mbps, suspended, block) in sorted(desired.items()):
        if connection_id in skip:
            continue
        state = SUSPENDED if suspended else ACTIVE
        row = rows.get(connection_id)
        if row is not None and (row.state, row.bandwidth_mbps, row.ipv4_block) == (
            state,
            mbps,
            block,
        ):
            unchanged += 1
            continue
        (created if row is None or row.state == ABSENT else corrected).append(
            f"{connection_id}@{location_id}"
        )
        if dry_run:
            continue
        if row is None:
            row = EdgeDesired(location_id=location_id, connection_id=connection_id)
            session.add(row)
        _restate(session, now, row, state, mbps, block)
    for connection_id, row in sorted(rows.items()):
        if connection_id in desired or connection_id in skip or row.state == ABSENT:
            continue
        removed.append(f"{connection_id}@{location_id}")
        if not dry_run:
            row.seq = repository.next_seq(session, location_id)
            row.op_id, row.state, row.updated_at = None, ABSENT, now
    if not dry_run and (created or removed or corrected):
        session.flush()
        uow.wake(session, TOPIC)
    return created, removed, corrected, unchanged


def _state_of(status: str) -> str:
    """What an edge agent should have of a connection in `status`."""
    if status == ConnectionStatus.ACTIVE.value:
        return ACTIVE
    if status == ConnectionStatus.SUSPENDED.value:
        return SUSPENDED
    return ABSENT


def _restate(
    session: Session, now: datetime, row: EdgeDesired, state: str, mbps: int, block: str | None
) -> None:
    """`row` says `state` again, as a change of its own (a new seq, no operation)."""
    row.seq = repository.next_seq(session, row.location_id)
    row.op_id, row.state, row.bandwidth_mbps, row.ipv4_block = None, state, mbps, block
    row.updated_at = now


def settle(session: Session, now: datetime, connection: Connection) -> bool:
    """After a job of `connection` was given up for good: if an agent holds the connection,
    its desired row says again what the database has in force (what the failed operation
    asked for is withdrawn: the agent, when it comes back, converges to the database, not to
    a change recorded as failed). True when the row changed."""
    row = repository.desired(session, connection.location_id, connection.id)
    if row is None:
        return False
    state = _state_of(connection.status)
    mbps, block = connection.bandwidth_mbps, connection.ipv4_block
    if state == ABSENT:
        mbps, block = row.bandwidth_mbps, row.ipv4_block
    if (row.state, row.bandwidth_mbps, row.ipv4_block) == (state, mbps, block):
        return False
    _restate(session, now, row, state, mbps, block)
    session.flush()
    uow.wake(session, TOPIC)
    return True


def connections_of(session: Session, location_id: str) -> set[str]:
    """The connections the location's edge holds (or is removing)."""
    return {r.connection_id for r in repository.desired_of_location(session, location_id)}
