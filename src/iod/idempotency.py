"""Idempotency-Key: a retried POST or PUT replays the first response instead of acting twice.

The key is claimed in a short transaction of its own (so a concurrent duplicate sees it and
gets 409), and the response is stored in the same transaction as the work it describes, so
the two commit or roll back together. A request that dies in between leaves a claim that
expires after CLAIM_SECONDS; a 5xx releases the key so the client may retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.errors import Conflict, ProblemError
from iod.http import problem
from iod.models import IdempotencyKey
from iod.problems import problem_response

HEADER = "Idempotency-Key"
KEEP = timedelta(hours=24)
CLAIM_SECONDS = 60


class KeyReused(ProblemError):
    status = 422
    type_name = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class KeyInUse(Conflict):
    type_name = "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still running"


KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:~+/=-]+$",
        description=(
            "Extension: makes a retry safe. A repeat with the same key and the same request, "
            "from the same customer, replays the first response (marked `Idempotent-Replayed: "
            "true`) without acting again; the same key with a different request is 422; while "
            "the first is still running, 409. Keys are kept 24 hours."
        ),
    ),
]
KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: problem("The Idempotency-Key was first used for a different request"),
}


@dataclass(frozen=True)
class Outcome:
    status: int
    model: BaseModel
    headers: dict[str, str]


def fingerprint(request: Request, body: BaseModel | None) -> str:
    """Method, path and the validated body: the same request, however it was spelled."""
    canonical = body.model_dump_json() if body is not None else ""
    text = f"{request.method} {request.url.path} {canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


def _render(outcome: Outcome) -> JSONResponse:
    return JSONResponse(
        outcome.model.model_dump(mode="json", exclude_none=True),
        status_code=outcome.status,
        headers=outcome.headers,
    )


def run(
    services: Any,
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[Session], Outcome],
) -> Response:
    """Runs `work` in one write transaction, at most once per Idempotency-Key."""
    if key is None:
        with services.db.write() as session:
            outcome = work(session)
        services.notify_worker()
        return _render(outcome)
    print_ = fingerprint(request, body)
    replay = _claim(services, principal.customer_id, key, print_)
    if replay is not None:
        return replay
    try:
        with services.db.write() as session:
            outcome = work(session)
            _store(session, principal.customer_id, key, outcome.status,
                   outcome.model.model_dump_json(exclude_none=True), outcome.headers)  # fmt: skip
    except ProblemError as exc:
        if exc.status >= 500:
            _release(services, principal.customer_id, key)
            raise
        # The first answer, even a refusal, is what a retry gets.
        response = problem_response(exc, instance=request.url.path)
        with services.db.write() as session:
            _store(session, principal.customer_id, key, exc.status,
                   bytes(response.body).decode(), dict(exc.headers))  # fmt: skip
        raise
    except BaseException:
        _release(services, principal.customer_id, key)
        raise
    services.notify_worker()
    return _render(outcome)


def _claim(services: Any, customer_id: str, key: str, print_: str) -> Response | None:
    now = services.clock.now()
    for _ in range(2):
        try:
            with services.db.write() as session:
                row = session.get(IdempotencyKey, (customer_id, key), with_for_update=True)
                if row is not None and (
                    row.expires_at <= now
                    or (
                        row.state == "running"
                        and row.created_at + timedelta(seconds=CLAIM_SECONDS) <= now
                    )
                ):
                    session.delete(row)  # expired, or its request died: start afresh
                    session.flush()
                    row = None
                if row is None:
                    session.add(
                        IdempotencyKey(
                            customer_id=customer_id, key=key, fingerprint=print_,
                            state="running", created_at=now, expires_at=now + KEEP,
                        )
                    )  # fmt: skip
                    return None
                if row.fingerprint != print_:
                    raise KeyReused(
                        f"{HEADER} {key!r} was first used for a different request; "
                        "use a new key for a new request"
                    )
                if row.state == "running":
                    raise KeyInUse(f"the first request with {HEADER} {key!r} is still running")
                response = Response(
                    content=row.body or "",
                    status_code=row.status_code or 200,
                    headers={**(row.headers or {}), "Idempotent-Replayed": "true"},
                    media_type="application/problem+json"
                    if (row.status_code or 200) >= 400
                    else "application/json",
                )
                return response
        except IntegrityError:
            continue  # a concurrent request claimed it first: look again
    raise KeyInUse(f"the first request with {HEADER} {key!r} is still running")


def _store(
    session: Session, customer_id: str, key: str, status: int, body: str, headers: dict[str, str]
) -> None:
    row = session.get(IdempotencyKey, (customer_id, key))
    if row is not None:
        row.state, row.status_code, row.body = "done", status, body
        # The ETag names the representation in the stored body, so a replay carries it too.
        row.headers = {
            k: v for k, v in headers.items() if k.lower() in ("location", "link", "etag")
        }


def _release(services: Any, customer_id: str, key: str) -> None:
    with services.db.write() as session:
        row = session.get(IdempotencyKey, (customer_id, key))
        if row is not None and row.state == "running":
            session.delete(row)
