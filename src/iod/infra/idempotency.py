"""Idempotency-Key: a retried POST or PUT replays the first response instead of acting twice.

The key is claimed in a short transaction of its own (so a concurrent duplicate sees it), and
the response is stored in the same transaction as the work it describes, so the two commit or
roll back together. The claim carries a random token (in `body` while it is `running`); the
work transaction starts by locking the key's row and checking the token is still its own.

So a claim is in one of two places: inside its work transaction, where its row is locked (a
duplicate waits for the lock and then replays the stored answer; SQLite's single writer does
the same), or outside it, which means its request has not started its work yet or has died
(a crash, a killed process, a database outage). A duplicate then takes the claim over at
once, and should the first request still be alive, its token check fails and it answers 409
without acting: the work is done exactly once, and a client retrying after a crash is not
kept waiting. A 5xx releases the key so the client may retry.

The key's row is read, claimed, held and stored with statements compiled once and run on
the transaction's connection (`TransactionSelect`, `TransactionWrite`), not ORM objects:
every write the SDK sends carries a key, and the ORM's loading and flushes of this row were
about a fifth of such a write's CPU (issue 14, docs/performance.md).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.infra.db import TransactionSelect, TransactionWrite
from iod.infra.errors import Conflict, ProblemError, ValidationFailed
from iod.infra.http import problem
from iod.infra.problems import problem_response
from iod.models import IDEMPOTENCY_KEEP, IdempotencyKey

if TYPE_CHECKING:
    from iod.app import Services

HEADER = "Idempotency-Key"
KEEP = IDEMPOTENCY_KEEP


class KeyReused(ProblemError):
    status = 422
    type_name = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class KeyInUse(Conflict):
    type_name = "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still running"


class _ClaimLost(Exception):
    """A repeat of this request took its claim over: the repeat does the work."""


KEY_MAX_LENGTH = 255
KEY_CHARACTERS = "A-Za-z0-9_.:~+/=-"
KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        max_length=KEY_MAX_LENGTH,
        pattern=f"^[{KEY_CHARACTERS}]+$",
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


_ROW = and_(
    IdempotencyKey.customer_id == bindparam("of_customer"),
    IdempotencyKey.key == bindparam("of_key"),
)
# The key's row, locked: a duplicate waits here while the key's work transaction runs.
_KEY_COLUMNS: list[Any] = [
    IdempotencyKey.fingerprint,
    IdempotencyKey.state,
    IdempotencyKey.status_code,
    IdempotencyKey.body,
    IdempotencyKey.headers,
    IdempotencyKey.expires_at,
]
_LOCKED = TransactionSelect(select(*_KEY_COLUMNS).where(_ROW).with_for_update())
_KEYS = cast(Table, IdempotencyKey.__table__)
_INSERT = TransactionWrite(insert(_KEYS))
_OWN = and_(_ROW, IdempotencyKey.state == "running", IdempotencyKey.body == bindparam("token"))
_DELETE = delete(_KEYS).where(_ROW)
_RELEASE = delete(_KEYS).where(_OWN)  # the claim, if it is still this request's
# The answer, written over the claim if it is still this request's.
_STORE = TransactionWrite(
    update(_KEYS)
    .where(_OWN)
    .values(
        state="done",
        status_code=bindparam("status_code"),
        body=bindparam("answer", type_=IdempotencyKey.body.type),
        headers=bindparam("answer_headers", type_=IdempotencyKey.headers.type),
    )
)


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
    services: Services,
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[Session], Outcome],
) -> Response:
    """Runs `work` in one write transaction, at most once per Idempotency-Key."""
    if key is None:
        return run_without_key(services, work)
    if len(request.headers.getlist(HEADER)) > 1:  # which one would the client mean?
        raise ValidationFailed.field(f"/header/{HEADER}", f"send one {HEADER} header, not several")
    print_ = fingerprint(request, body)
    token = uuid.uuid4().hex
    replay = _claim(services, principal.customer_id, key, print_, token)
    if replay is not None:
        return replay
    try:
        with services.db.write() as session:
            _hold(session, principal.customer_id, key, token)
            outcome = work(session)
            _store(session, principal.customer_id, key, token, outcome.status,
                   outcome.model.model_dump_json(exclude_none=True), outcome.headers)  # fmt: skip
    except _ClaimLost as exc:
        raise KeyInUse(f"a repeat of this request with {HEADER} {key!r} is running") from exc
    except ProblemError as exc:
        if exc.status >= 500:
            _release(services, principal.customer_id, key, token)
            raise
        # The first answer, even a refusal, is what a retry gets.
        response = problem_response(exc, instance=request.url.path)
        with services.db.write() as session:
            _store(session, principal.customer_id, key, token, exc.status,
                   bytes(response.body).decode(), dict(exc.headers))  # fmt: skip
        raise
    except BaseException:
        _release(services, principal.customer_id, key, token)
        raise
    return _render(outcome)


def run_without_key(services: Services, work: Callable[[Session], Outcome]) -> Response:
    """`run` for a request without an Idempotency-Key: the work in one write transaction.
    Also what the fast writes (connections/fastpath.py) answer, so both render alike."""
    with services.db.write() as session:
        outcome = work(session)
    return _render(outcome)


def _claim(
    services: Services, customer_id: str, key: str, print_: str, token: str
) -> Response | None:
    """Claims the key (None: go ahead) or answers from it (a replay, 409 or 422)."""
    now = services.clock.now()
    for _ in range(2):
        try:
            with services.db.write() as session:
                # Waits while the key's work transaction runs (it holds the row's lock).
                rows = _LOCKED.rows(session, of_customer=customer_id, of_key=key)
                row = rows[0] if rows else None
                if row is not None and row.expires_at <= now:
                    _delete(session, customer_id, key)  # expired: the key may be used afresh
                    row = None
                if row is not None and row.fingerprint != print_:
                    raise KeyReused(
                        f"{HEADER} {key!r} was first used for a different request; "
                        "use a new key for a new request"
                    )
                if row is not None and row.state == "running":
                    # Claimed by a request that is not working on it (not started yet, or
                    # dead): this one takes over; see the module's docstring.
                    _delete(session, customer_id, key)
                    row = None
                if row is None:
                    _INSERT.execute(
                        session,
                        {
                            "customer_id": customer_id, "key": key, "fingerprint": print_,
                            "state": "running", "status_code": None, "body": token,
                            "headers": None, "created_at": now, "expires_at": now + KEEP,
                        },
                    )  # fmt: skip
                    return None
                return Response(
                    content=row.body or "",
                    status_code=row.status_code or 200,
                    headers={**(row.headers or {}), "Idempotent-Replayed": "true"},
                    media_type="application/problem+json"
                    if (row.status_code or 200) >= 400
                    else "application/json",
                )
        except IntegrityError:
            continue  # a concurrent request claimed it first: look again
    raise KeyInUse(f"the first request with {HEADER} {key!r} is still running")


def _delete(session: Session, customer_id: str, key: str) -> None:
    session.execute(_DELETE, {"of_customer": customer_id, "of_key": key})


def _hold(session: Session, customer_id: str, key: str, token: str) -> None:
    """Locks the claim for the work transaction; raises _ClaimLost if it was taken over."""
    rows = _LOCKED.rows(session, of_customer=customer_id, of_key=key)
    if not rows or rows[0].state != "running" or rows[0].body != token:
        raise _ClaimLost


def _store(
    session: Session,
    customer_id: str,
    key: str,
    token: str,
    status: int,
    body: str,
    headers: dict[str, str],
) -> None:
    """The answer, stored over the claim if the claim is still this request's (in the work
    transaction, whose `_hold` locked it; nothing otherwise)."""
    # The ETag names the representation in the stored body, so a replay carries it too.
    kept = {k: v for k, v in headers.items() if k.lower() in ("location", "link", "etag")}
    _STORE.execute(
        session,
        {
            "of_customer": customer_id, "of_key": key, "token": token, "status_code": status,
            "answer": body, "answer_headers": kept,
        },
    )  # fmt: skip


def _release(services: Services, customer_id: str, key: str, token: str) -> None:
    with services.db.write() as session:
        session.execute(_RELEASE, {"of_customer": customer_id, "of_key": key, "token": token})
