"""Python SDK of Internet On-Demand.

    from iod.client import Client

    with Client() as iod:  # IOD_URL, IOD_CLIENT_ID, IOD_CLIENT_SECRET
        conn = iod.create_connection("PL0001247634", "100 Mbps", wait=True)
        iod.update_bandwidth(conn.id, "1 Gbps", wait=True)

Standalone: it imports nothing of the server (only httpx and pydantic).
"""

from iod.client._async import AsyncClient
from iod.client._sync import Client
from iod.client.auth import ClientCredentialsAuth
from iod.client.errors import (
    ApiError,
    ChangeNotApplied,
    ConfigurationError,
    Conflict,
    FieldError,
    Forbidden,
    InvalidRequest,
    IodError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    UnprocessableContent,
    WaitFailed,
    WaitTimeout,
)
from iod.client.models import (
    BandwidthChange,
    BandwidthUpdateResult,
    Connection,
    PendingBandwidthChange,
    Token,
)
from iod.client.retry import RetryPolicy

__all__ = [
    "ApiError",
    "AsyncClient",
    "BandwidthChange",
    "BandwidthUpdateResult",
    "ChangeNotApplied",
    "Client",
    "ClientCredentialsAuth",
    "ConfigurationError",
    "Conflict",
    "Connection",
    "FieldError",
    "Forbidden",
    "InvalidRequest",
    "IodError",
    "NotFound",
    "PendingBandwidthChange",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Token",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "UnprocessableContent",
    "WaitFailed",
    "WaitTimeout",
]
