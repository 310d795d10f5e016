"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from iod.infra.errors import ServiceUnavailable
from iod.infra.http import problem

router = APIRouter(tags=["Health"])


@router.get("/healthz", operation_id="getHealth", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answers while the process lives: on the event loop, not on one of the
    `IOD_HTTP_THREADS`, which requests waiting on a database that drops packets may all
    hold for seconds (docs/security.md)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness",
    responses={503: problem("The database is not reachable")},
)
async def readyz(request: Request) -> dict[str, Any]:
    """Answers 200 only when the database is reachable (503 with Retry-After while not)."""
    services = request.app.state.services
    db = services.db

    def ping() -> None:
        with db.read() as session:
            session.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:
        raise ServiceUnavailable.retry_later(
            "the database is not reachable", services.settings.unavailable_retry_after
        ) from exc
    return {"status": "ready"}
