"""Python SDK of Internet On-Demand.

    from iod.client import Client

    with Client() as iod:  # IOD_URL, IOD_CLIENT_ID, IOD_CLIENT_SECRET
        conn = iod.create_connection("PL0001247634", "100 Mbps", wait=True)
        iod.update_bandwidth(conn.id, "1 Gbps", wait=True)

Standalone: it imports nothing of the server (only httpx and pydantic), and is its own
distribution, iod-client (clients/python/). The names below are imported on first use, so that
`iod --help` and `iod.client.terminal` do not pay for httpx and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY: dict[str, str] = {
    "ApiError": "iod.client.errors",
    "AsyncClient": "iod.client._async",
    "BandwidthChange": "iod.client.models",
    "BandwidthUpdateResult": "iod.client.models",
    "ChangeNotApplied": "iod.client.errors",
    "Client": "iod.client._sync",
    "ClientCredentialsAuth": "iod.client.auth",
    "ConfigurationError": "iod.client.errors",
    "Conflict": "iod.client.errors",
    "Connection": "iod.client.models",
    "FieldError": "iod.client.errors",
    "Forbidden": "iod.client.errors",
    "InvalidRequest": "iod.client.errors",
    "IodError": "iod.client.errors",
    "NotFound": "iod.client.errors",
    "PendingBandwidthChange": "iod.client.models",
    "RateLimited": "iod.client.errors",
    "RetryPolicy": "iod.client.retry",
    "ServerError": "iod.client.errors",
    "ServiceUnavailable": "iod.client.errors",
    "Token": "iod.client.models",
    "Traffic": "iod.client.models",
    "TransportError": "iod.client.errors",
    "Unauthorized": "iod.client.errors",
    "UnexpectedResponse": "iod.client.errors",
    "UnprocessableContent": "iod.client.errors",
    "WaitFailed": "iod.client.errors",
    "WaitTimeout": "iod.client.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
    "Traffic",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "UnprocessableContent",
    "WaitFailed",
    "WaitTimeout",
]
