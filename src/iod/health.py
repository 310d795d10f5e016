"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from iod.errors import ProblemError
from iod.http import problem

router = APIRouter(tags=["Health"])


class NotReady(ProblemError):
    status = 503
    type_name = "service-unavailable"
    title = "Service unavailable"


@router.get("/healthz", operation_id="getHealth", summary="Liveness")
def healthz() -> dict[str, str]:
    """Answers while the process lives."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness",
    responses={503: problem("The database is not reachable")},
)
async def readyz(request: Request) -> dict[str, Any]:
    """Answers 200 only when the database is reachable."""
    db = request.app.state.services.db

    def ping() -> None:
        with db.read() as session:
            session.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:
        raise NotReady("the database is not reachable") from exc
    return {"status": "ready"}
