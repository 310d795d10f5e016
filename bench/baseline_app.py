"""The baseline: a bare Starlette endpoint answering a connection-shaped JSON document.

It stands for the practical limit of one Python ASGI process on this machine. No middleware,
no validation, no database: the service's rows are reported as a ratio to this one, measured
in the same run. It is served by uvicorn with the settings `iod serve` uses
(src/iod/cli/), so that the difference between the two is the application.

    python bench/baseline_app.py --port 8099
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def get_connection(request: Request) -> JSONResponse:
    # The same fields and the same kind of values as GET /internet-on-demand/connections/{id}.
    return JSONResponse(
        {
            "id": request.path_params["connection_id"],
            "status": "active",
            "bandwidth": "100 Mbps",
            "location": "BENCH-ROOMY-0001",
            "createdAt": "2030-01-01T09:00:00Z",
            "updatedAt": "2030-01-01T09:00:02Z",
            "pendingBandwidthChanges": [],
        }
    )


app = Starlette(routes=[Route("/internet-on-demand/connections/{connection_id}", get_connection)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    # Keep in step with `iod serve` (src/iod/cli/): same server, same settings.
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_level="warning",
        server_header=False, timeout_graceful_shutdown=10,
        loop=os.environ.get("IOD_HTTP_LOOP", "auto"),  # as `--server-env IOD_HTTP_LOOP=...`
    )  # fmt: skip


if __name__ == "__main__":
    main()
