"""The spec's four operations. Endpoints parse, call one service function, return a schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from iod.auth.dependencies import require_read, require_write
from iod.auth.tokens import Principal
from iod.connections import service
from iod.connections.schemas import (
    BandwidthUpdate,
    BandwidthUpdateResult,
    Connection,
    ConnectionList,
    ConnectionRequest,
)
from iod.http import READ_ERRORS, WRITE_ERRORS, problem, require_json

router = APIRouter(prefix="/internet-on-demand")

NOT_FOUND = problem("No such connection for this customer")
CONFLICT = problem(
    "Not possible now: the location's capacity would be exceeded "
    "(`/problems/capacity-exceeded`) or the connection is terminated "
    "(`/problems/invalid-state`)"
)
CREATE_LINKS: dict[str, Any] = {
    "GetConnection": {
        "operationId": "getConnection",
        "parameters": {"connectionId": "$response.body#/id"},
        "description": "The connection just created.",
    },
    "UpdateBandwidth": {
        "operationId": "updateBandwidth",
        "parameters": {"connectionId": "$response.body#/id"},
        "description": "Change the bandwidth of the connection just created.",
    },
}

ConnectionId = Annotated[str, Path(description="The connection's id, as returned on creation.")]


def _services(request: Request) -> Any:
    return request.app.state.services


@router.get(
    "/connections",
    operation_id="listConnections",
    summary="List connections",
    tags=["Connections"],
    response_model=ConnectionList,
    response_model_exclude_none=True,
    responses={200: {"description": "Successful response"}, **READ_ERRORS},
)
def list_connections(
    request: Request, principal: Annotated[Principal, require_read]
) -> ConnectionList:
    """Retrieve a list of internet on-demand connections (only the caller's customer's)."""
    services = _services(request)
    with services.db.read() as session:
        rows = service.list_connections(session, principal)
        return ConnectionList(connections=service.present(session, rows))


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
        201: {"description": "Connection created", "links": CREATE_LINKS},
        409: CONFLICT,
        **WRITE_ERRORS,
    },
)
def create_connection(
    request: Request,
    response: Response,
    body: ConnectionRequest,
    principal: Annotated[Principal, require_write],
) -> Connection:
    """Provision a new internet on-demand connection.

    The connection starts `provisioning` and becomes `active` once the network is configured.
    The bandwidth must be a tier the location offers and fit its remaining capacity.
    """
    services = _services(request)
    with services.db.write() as session:
        connection = service.create_connection(
            session, services.clock, principal, body, services.policy
        )
        result = service.present(session, [connection])[0]
    services.notify_worker()
    response.headers["Location"] = f"/internet-on-demand/connections/{connection.id}"
    return result


@router.get(
    "/connections/{connectionId}",
    operation_id="getConnection",
    summary="Get connection details",
    tags=["Connections"],
    response_model=Connection,
    response_model_exclude_none=True,
    responses={200: {"description": "Successful response"}, 404: NOT_FOUND, **READ_ERRORS},
)
def get_connection(
    request: Request, connectionId: ConnectionId, principal: Annotated[Principal, require_read]
) -> Connection:
    """Retrieve details of a specific connection."""
    services = _services(request)
    with services.db.read() as session:
        connection = service.get_connection(session, principal, connectionId)
        return service.present(session, [connection])[0]


@router.put(
    "/connections/{connectionId}/bandwidth",
    operation_id="updateBandwidth",
    summary="Update bandwidth",
    tags=["Bandwidth"],
    response_model=BandwidthUpdateResult,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
    responses={
        200: {"description": "Bandwidth updated"},
        404: NOT_FOUND,
        409: CONFLICT,
        **WRITE_ERRORS,
    },
)
def update_bandwidth(
    request: Request,
    connectionId: ConnectionId,
    body: BandwidthUpdate,
    principal: Annotated[Principal, require_write],
) -> BandwidthUpdateResult:
    """Dynamically adjust the bandwidth for an existing connection.

    Without `effectiveDate`, or with one not in the future, the change is applied now;
    otherwise at that moment. Until it is in force the connection keeps its current
    `bandwidth` and lists the change in `pendingBandwidthChanges`.
    """
    services = _services(request)
    with services.db.write() as session:
        connection, change = service.update_bandwidth(
            session, services.clock, principal, connectionId, body, services.policy
        )
        result = service.present_update(session, connection, change)
    services.notify_worker()
    return result
