"""Connections: the spec's four operations plus the lifecycle extensions.

Endpoints parse, call one service function inside one transaction, and return a schema.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from iod.audit import service as audit
from iod.auth.dependencies import actor, charge_rows, require_read, require_write
from iod.auth.tokens import Principal
from iod.connections import lifecycle, service
from iod.connections.fastpath import connection_response, create_work, update_work
from iod.connections.schemas import (
    BandwidthChange,
    BandwidthChangeList,
    BandwidthUpdate,
    BandwidthUpdateResult,
    Connection,
    ConnectionList,
    ConnectionRequest,
    StatusHistory,
    StatusTransitionOut,
)
from iod.domain.status import Action, ConnectionStatus
from iod.infra import idempotency
from iod.infra.errors import shown
from iod.infra.http import (
    ETAG_HEADER,
    PRECONDITION_FAILED,
    READ_ERRORS,
    WRITE_ERRORS,
    IfMatchHeader,
    StrictJsonRoute,
    check_if_match,
    problem,
    require_json,
)

if TYPE_CHECKING:
    from iod.app import Services

router = APIRouter(prefix="/internet-on-demand", route_class=StrictJsonRoute)
T = TypeVar("T")

# Reads of one thing are `async def`; the fast GET queries the database on the event loop
# (primary-key reads that never wait for locks, SQLite WAL, PostgreSQL MVCC, cost less than
# the hop to a thread) on the loop's kept connection (`db.PreparedSelect`), which never waits
# for a pool. Reads through a session (the shared pool, which writers may exhaust) wait in a
# thread (`run_in_threadpool`), never on the loop. Lists, whose cost grows with their rows,
# run on the list threads (`off_the_loop`). Writes stay plain `def` (in the threadpool): they
# may wait for SQLite's write lock.

NOT_FOUND = problem("No such connection for this customer")
CHANGE_NOT_FOUND = problem("No such connection or bandwidth change for this customer")
CONFLICT = problem(
    "Not possible now: the location's capacity would be exceeded "
    "(`/problems/capacity-exceeded`), the connection is terminated "
    "(`/problems/invalid-state`), or, rarely, the row of the same Idempotency-Key came and "
    "went while the request looked for it (`/problems/idempotency-key-in-use`; retry)"
)
CHANGE_CONFLICT = problem(
    "Not possible now: the location's capacity would be exceeded "
    "(`/problems/capacity-exceeded`), the connection is terminated "
    "(`/problems/invalid-state`), it already has the most pending bandwidth changes allowed "
    "(`IOD_MAX_PENDING_CHANGES`, default 100: `/problems/too-many-pending-changes`), or, "
    "rarely, the row of the same Idempotency-Key came and went while the request looked for "
    "it (`/problems/idempotency-key-in-use`; retry)"
)
ILLEGAL = problem("The state machine does not allow it (`/problems/invalid-state`)")
BY_ID = {"connectionId": "$response.body#/id"}
CONNECTION_LINKS: dict[str, Any] = {
    name: {"operationId": op, "parameters": BY_ID, "description": text}
    for name, op, text in [
        ("GetConnection", "getConnection", "The connection."),
        ("UpdateBandwidth", "updateBandwidth", "Change its bandwidth."),
        ("ListBandwidthChanges", "listBandwidthChanges", "Its bandwidth changes."),
        ("GetStatusHistory", "getStatusHistory", "Its status transitions."),
        ("SuspendConnection", "suspendConnection", "Suspend it."),
        ("ResumeConnection", "resumeConnection", "Resume it."),
        ("TerminateConnection", "terminateConnection", "Terminate it."),
    ]
}
CHANGE_BY_ID = {
    "connectionId": "$request.path.connectionId",
    "changeId": "$response.body#/change/id",
}
CHANGE_LINKS: dict[str, Any] = {
    "GetBandwidthChange": {
        "operationId": "getBandwidthChange",
        "parameters": CHANGE_BY_ID,
        "description": "The change this request created.",
    },
    "CancelBandwidthChange": {
        "operationId": "cancelBandwidthChange",
        "parameters": CHANGE_BY_ID,
        "description": "Cancel it while it is still scheduled.",
    },
}  # fmt: skip

ConnectionId = Annotated[str, Path(description="The connection's id, as returned on creation.")]
ChangeId = Annotated[str, Path(description="The bandwidth change's id.")]
READ = Annotated[Principal, require_read]
WRITE = Annotated[Principal, require_write]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _act_for(session: Session, request: Request, principal: Principal) -> None:
    """The events of this transaction are the client's doing (and audited as such)."""
    audit.act_for(session, actor(request, principal))


# A cursor is the id of the last connection of the previous page (service.encode_cursor).
CURSOR_PATTERN = r"^con_[0-9a-hjkmnp-tv-z]{29}$"


def _cursor(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(CURSOR_PATTERN, value):
        raise ValueError(
            f"{shown(value)} is not a cursor: pass the `nextCursor` of the previous page"
        )
    return value


# A cursor of the change list is the id of the last change of the previous page.
CHANGE_CURSOR_PATTERN = r"^chg_[0-9a-hjkmnp-tv-z]{29}$"


def _change_cursor(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(CHANGE_CURSOR_PATTERN, value):
        raise ValueError(
            f"{shown(value)} is not a cursor: pass the `nextCursor` of the previous page"
        )
    return value


_list_pool: ThreadPoolExecutor | None = None
_list_pool_lock = threading.Lock()


async def off_the_loop(services: Any, work: Callable[[], T]) -> T:
    """Runs a list answer's work (query, validation, JSON) on the process's list threads
    (`IOD_LIST_THREADS`), not on the event loop: a page of 1,000 takes milliseconds of CPU,
    and other clients' requests (the fast GET above all) must not wait behind it. A pool of
    its own, not the threadpool of the writes: its threads keep a database connection each
    (`db.PreparedSelect`), so they are few, and heavy listers queue behind one another."""
    global _list_pool
    if _list_pool is None:
        with _list_pool_lock:
            if _list_pool is None:
                _list_pool = ThreadPoolExecutor(
                    services.settings.list_threads, thread_name_prefix="iod-list"
                )
    return await asyncio.get_running_loop().run_in_executor(_list_pool, work)


@router.get(
    "/connections",
    operation_id="listConnections",
    summary="List connections",
    tags=["Connections"],
    response_model=ConnectionList,
    response_model_exclude_none=True,
    responses={
        200: {"description": "Successful response"},
        400: problem("Invalid query parameter"),
        **READ_ERRORS,
    },
)
async def list_connections(
    request: Request,
    principal: READ,
    status: Annotated[
        list[ConnectionStatus] | None,
        Query(
            description="Extension: only these statuses (repeatable). Default: all but terminated."
        ),
    ] = None,
    location: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            description="Extension: only this location id.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Extension: page size.")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="Extension: `nextCursor` of the previous page.",
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
        AfterValidator(_cursor),
    ] = None,
) -> Response:
    """Retrieve a list of internet on-demand connections (only the caller's customer's).

    Pages are in creation order and stable under concurrent inserts; the next page is named
    by `nextCursor` and by an RFC 8288 `Link: <…>; rel="next"` header. An answer costs one
    read of the rate limit plus one per 100 connections in it.
    """
    services = _services(request)

    def page() -> tuple[bytes, str | None, int]:
        documents, next_cursor = service.list_connections(
            services.db,
            principal,
            statuses=status or (),
            location_id=location,
            cursor=cursor,
            limit=limit,
        )
        # Validated once as the response model (in pydantic's core, not per connection in
        # Python) and serialised here, as FastAPI would, without validating it a second time.
        page = ConnectionList.model_validate({"connections": documents, "nextCursor": next_cursor})
        return page.model_dump_json(exclude_none=True).encode(), next_cursor, len(documents)

    body, next_cursor, rows = await off_the_loop(services, page)
    charge_rows(services, request.scope.setdefault("state", {}), principal, rows)
    return _page_answer(request, body, next_cursor)


def _page_answer(request: Request, body: bytes, next_cursor: str | None) -> Response:
    """A list page's JSON answer, with a `Link` to the next page when there is one."""
    answer = Response(body, media_type="application/json")
    if next_cursor is not None:
        url = request.url.include_query_params(cursor=next_cursor)
        answer.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return answer


@router.post(
    "/connections",
    operation_id="createConnection",
    summary="Create a connection",
    tags=["Connections"],
    status_code=201,
    response_model=Connection,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        201: {
            "description": "Connection created",
            "links": CONNECTION_LINKS,
            "headers": ETAG_HEADER,
        },
        409: CONFLICT,
        **WRITE_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def create_connection(
    request: Request, body: ConnectionRequest, principal: WRITE, key: idempotency.KeyHeader = None
) -> Response:
    """Provision a new internet on-demand connection.

    The connection starts `provisioning` and becomes `active` once the network is configured.
    The bandwidth must be a tier the location offers and fit its remaining capacity.
    """
    # Usually answered before it gets here, by connections/fastpath.py, with the same code.
    services = _services(request)
    work = create_work(services, actor(request, principal), principal, body)
    return idempotency.run(services, request, principal, key, body, work)


@router.get(
    "/connections/{connectionId}",
    operation_id="getConnection",
    summary="Get connection details",
    tags=["Connections"],
    response_model=Connection,
    response_model_exclude_none=True,
    responses={
        200: {"description": "Successful response", "headers": ETAG_HEADER},
        404: NOT_FOUND,
        **READ_ERRORS,
    },
)
async def get_connection(request: Request, connectionId: ConnectionId, principal: READ) -> Response:
    """Retrieve details of a specific connection, with its `ETag`."""
    # Usually answered before it gets here, by connections/fastpath.py, with the same code.
    return connection_response(_services(request).db, principal, connectionId)


@router.put(
    "/connections/{connectionId}/bandwidth",
    operation_id="updateBandwidth",
    summary="Update bandwidth",
    tags=["Bandwidth"],
    response_model=BandwidthUpdateResult,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        200: {"description": "Bandwidth updated", "links": CHANGE_LINKS, "headers": ETAG_HEADER},
        404: NOT_FOUND,
        409: CHANGE_CONFLICT,
        412: PRECONDITION_FAILED,
        **WRITE_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def update_bandwidth(
    request: Request,
    connectionId: ConnectionId,
    body: BandwidthUpdate,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
    if_match: IfMatchHeader = None,
) -> Response:
    """Dynamically adjust the bandwidth for an existing connection.

    Without `effectiveDate`, or with one not in the future, the change is applied now;
    otherwise at that moment. Until it is in force the connection keeps its current
    `bandwidth` and lists the change in `pendingBandwidthChanges`. With `revertAt` the change
    is a boost that reverts by itself. With `If-Match`, only if the connection still has
    that `ETag`. A change to the bandwidth the connection will have at that time anyway
    records nothing: 200 with the connection as it is and no `change`.
    """
    # Usually answered before it gets here, by connections/fastpath.py, with the same code.
    services = _services(request)
    work = update_work(services, actor(request, principal), principal, connectionId, body, if_match)
    return idempotency.run(services, request, principal, key, body, work)


def _action(
    request: Request,
    connection_id: str,
    principal: Principal,
    action: Action,
    key: str | None,
    if_match: str | None,
) -> Response:
    services = _services(request)

    def work(session: Session) -> idempotency.Outcome:
        _act_for(session, request, principal)
        connection = service.get_connection(session, principal, connection_id, lock=True)

        def precondition(locked: Any) -> None:
            check_if_match(if_match, service.etag(session, locked))

        lifecycle.request_action(
            session, services.clock, principal, connection, action,
            services.policy.max_attempts, precondition if if_match is not None else None,
            locked=True,
        )  # fmt: skip
        result = service.present(session, [connection])[0]
        return idempotency.Outcome(202, result, {"ETag": service.etag_of(result)})

    return idempotency.run(services, request, principal, key, None, work)


BAD_KEY = problem("A malformed Idempotency-Key header")
ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: `targetStatus` shows where it is heading",
        "headers": ETAG_HEADER,
    },
    400: problem("A malformed Idempotency-Key or If-Match header"),
    404: NOT_FOUND,
    409: ILLEGAL,
    412: PRECONDITION_FAILED,
    **READ_ERRORS,
    **idempotency.KEY_RESPONSES,
}


@router.post(
    "/connections/{connectionId}/suspend",
    operation_id="suspendConnection",
    summary="Suspend a connection",
    tags=["Lifecycle"],
    status_code=202,
    response_model=Connection,
    response_model_exclude_none=True,
    responses=ACTION_RESPONSES,
)
def suspend(
    request: Request,
    connectionId: ConnectionId,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
    if_match: IfMatchHeader = None,
) -> Response:
    """Extension: block traffic and keep the configuration (active → suspended)."""
    return _action(request, connectionId, principal, Action.SUSPEND, key, if_match)


@router.post(
    "/connections/{connectionId}/resume",
    operation_id="resumeConnection",
    summary="Resume a connection",
    tags=["Lifecycle"],
    status_code=202,
    response_model=Connection,
    response_model_exclude_none=True,
    responses=ACTION_RESPONSES,
)
def resume(
    request: Request,
    connectionId: ConnectionId,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
    if_match: IfMatchHeader = None,
) -> Response:
    """Extension: let traffic flow again (suspended → active)."""
    return _action(request, connectionId, principal, Action.RESUME, key, if_match)


@router.post(
    "/connections/{connectionId}/terminate",
    operation_id="terminateConnection",
    summary="Terminate a connection",
    tags=["Lifecycle"],
    status_code=202,
    response_model=Connection,
    response_model_exclude_none=True,
    responses=ACTION_RESPONSES,
)
def terminate(
    request: Request,
    connectionId: ConnectionId,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
    if_match: IfMatchHeader = None,
) -> Response:
    """Extension: remove the configuration; the record stays readable as `terminated` and
    accepts no further change. Scheduled bandwidth changes are cancelled."""
    return _action(request, connectionId, principal, Action.TERMINATE, key, if_match)


@router.get(
    "/connections/{connectionId}/status-history",
    operation_id="getStatusHistory",
    summary="A connection's status transitions",
    tags=["Lifecycle"],
    response_model=StatusHistory,
    response_model_exclude_none=True,
    responses={404: NOT_FOUND, **READ_ERRORS},
)
async def status_history(
    request: Request, connectionId: ConnectionId, principal: READ
) -> StatusHistory:
    """Extension: every status transition with its time and reason, oldest first."""
    services = _services(request)

    def history() -> StatusHistory:
        with services.db.read() as session:
            connection = service.get_connection(session, principal, connectionId)
            rows = lifecycle.history(session, connection.id)
        return StatusHistory(
            transitions=[
                StatusTransitionOut(
                    fromStatus=t.from_status, toStatus=t.to_status, reason=t.reason, at=t.at
                )
                for t in rows
            ]
        )

    # A session takes a connection of the shared pool, which writers may hold: wait in a
    # thread, never on the event loop.
    return await run_in_threadpool(history)


@router.get(
    "/connections/{connectionId}/bandwidth-changes",
    operation_id="listBandwidthChanges",
    summary="A connection's bandwidth changes",
    tags=["Bandwidth"],
    response_model=BandwidthChangeList,
    response_model_exclude_none=True,
    responses={400: problem("Invalid query parameter"), 404: NOT_FOUND, **READ_ERRORS},
)
async def list_changes(
    request: Request,
    connectionId: ConnectionId,
    principal: READ,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 1000,
    cursor: Annotated[
        str | None,
        Query(
            description="`nextCursor` of the previous page.",
            json_schema_extra={"pattern": CHANGE_CURSOR_PATTERN},
        ),
        AfterValidator(_change_cursor),
    ] = None,
) -> Response:
    """Extension: the connection's changes, past and pending, in the order they take effect
    (then by id), a page at a time: the next page is named by `nextCursor` and by an RFC 8288
    `Link: <…>; rel="next"` header. An answer costs one read of the rate limit plus one per
    100 changes in it."""
    services = _services(request)

    def changes() -> tuple[bytes, str | None, int]:
        with services.db.read() as session:
            connection = service.get_connection(session, principal, connectionId)
            rows, next_cursor = service.changes_page(
                session, connection.id, cursor=cursor, limit=limit
            )
            answer = BandwidthChangeList(
                bandwidthChanges=[service.change_to_schema(c) for c in rows],
                nextCursor=next_cursor,
            )
            return answer.model_dump_json(exclude_none=True).encode(), next_cursor, len(rows)

    body, next_cursor, rows = await off_the_loop(services, changes)
    charge_rows(services, request.scope.setdefault("state", {}), principal, rows)
    return _page_answer(request, body, next_cursor)


@router.get(
    "/connections/{connectionId}/bandwidth-changes/{changeId}",
    operation_id="getBandwidthChange",
    summary="One bandwidth change",
    tags=["Bandwidth"],
    response_model=BandwidthChange,
    response_model_exclude_none=True,
    responses={404: CHANGE_NOT_FOUND, **READ_ERRORS},
)
async def get_change(
    request: Request, connectionId: ConnectionId, changeId: ChangeId, principal: READ
) -> BandwidthChange:
    """Extension: one change, with its status and timestamps."""
    services = _services(request)

    def one() -> BandwidthChange:
        with services.db.read() as session:
            change = service.get_change(session, principal, connectionId, changeId)
            return service.change_to_schema(change)

    return await run_in_threadpool(one)  # the shared pool: waited for in a thread


@router.post(
    "/connections/{connectionId}/bandwidth-changes/{changeId}/cancel",
    operation_id="cancelBandwidthChange",
    summary="Cancel a scheduled bandwidth change",
    tags=["Bandwidth"],
    response_model=BandwidthChange,
    response_model_exclude_none=True,
    responses={
        404: CHANGE_NOT_FOUND,
        400: BAD_KEY,
        409: problem("The change is no longer scheduled (`/problems/invalid-state`)"),
        **READ_ERRORS,
        **idempotency.KEY_RESPONSES,
    },
)
def cancel_change(
    request: Request,
    connectionId: ConnectionId,
    changeId: ChangeId,
    principal: WRITE,
    key: idempotency.KeyHeader = None,
) -> Response:
    """Extension: cancel a change that is still `scheduled`; a boost's revert goes with it."""
    services = _services(request)

    def work(session: Session) -> idempotency.Outcome:
        _act_for(session, request, principal)
        change = service.cancel_change(session, services.clock, principal, connectionId, changeId)
        return idempotency.Outcome(200, service.change_to_schema(change), {})

    return idempotency.run(services, request, principal, key, None, work)
