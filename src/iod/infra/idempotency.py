"""Idempotency-Key: a retried POST or PUT replays the first response instead of acting twice.

The key is claimed, the work done and its answer stored in one write transaction: the
transaction's first statement inserts the key's row (`INSERT … ON CONFLICT DO NOTHING`), so a
concurrent duplicate's insert waits for that transaction (PostgreSQL's unique index; SQLite's
single writer) and then finds the stored answer and replays it. Nothing of a claim outlives
its transaction: a crash, a killed process or an outage rolls the claim back with the work,
and a retry finds the key free. So the work is done exactly once and a retry after a crash
is served at once. A refusal (4xx) rolls the work back and is stored in a transaction of its
own, so a retry gets it too; a 5xx stores nothing, so the client may retry.

Until 2026-12-02 the claim was committed in a transaction of its own before the work's
(issue 14: one transaction less per keyed write). A `running` row left by that version
(a request that died between its claim and its work) is taken over like an expired key.

The key's row is claimed, read and stored with statements compiled once and run on the
transaction's connection (`TransactionSelect`, `TransactionWrite`), not ORM objects:
every write the SDK sends carries a key, and the ORM's loading and flushes of this row were
about a fifth of such a write's CPU (issue 14, docs/performance.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Header, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Table, and_, bindparam, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
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
    title = "The Idempotency-Key changed while looked up; retry"


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
            "true`) without acting again; the same key with a different request is 422; a "
            "repeat that arrives while the first is still running waits for it and replays "
            "its answer. Keys are kept 24 hours."
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
# The key's row, locked: what a repeat finds once the first request's transaction is over.
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
_CLAIM_VALUES = {
    "customer_id": bindparam("of_customer"),
    "key": bindparam("of_key"),
    "fingerprint": bindparam("fingerprint"),
    "state": "running",
    "created_at": bindparam("now", type_=IdempotencyKey.created_at.type),
    "expires_at": bindparam("expires_at", type_=IdempotencyKey.expires_at.type),
}


def _claim_statement(insert: Any) -> TransactionSelect:
    """The key's row, inserted as this transaction's claim unless it exists: a row back
    means the key is this request's. A duplicate in flight makes it wait for that one's
    transaction (PostgreSQL's unique index; SQLite has one writer)."""
    return TransactionSelect(
        insert(_KEYS)
        .values(**_CLAIM_VALUES)
        .on_conflict_do_nothing(index_elements=[_KEYS.c.customer_id, _KEYS.c.key])
        .returning(_KEYS.c.state)
    )


_CLAIMS = {
    "sqlite": _claim_statement(sqlite.insert),
    "postgresql": _claim_statement(postgresql.insert),
}
# An expired key, or a claim left by the version that committed claims on their own: this
# request's now.
_RENEW = TransactionWrite(
    update(_KEYS)
    .where(_ROW)
    .values(
        **{
            name: value
            for name, value in _CLAIM_VALUES.items()
            if name not in ("customer_id", "key")
        },
        status_code=null(),
        body=null(),
        headers=null(),
    )
)
# The answer, written over the claim this transaction holds.
_STORE = TransactionWrite(
    update(_KEYS)
    .where(_ROW)
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


def _render(outcome: Outcome, body: str) -> Response:
    """The answer: `body` is the outcome's model serialised (`_serialise`), which is also
    what is stored for a replay, so the first answer and its replays are the same bytes."""
    return Response(body, outcome.status, outcome.headers, media_type="application/json")


def _serialise(outcome: Outcome) -> str:
    return outcome.model.model_dump_json(exclude_none=True)


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
    customer_id = principal.customer_id
    try:
        with services.db.write() as session:
            replay = _claim(session, services.clock.now(), customer_id, key, print_)
            if replay is not None:
                return replay
            outcome = work(session)
            body_sent = _serialise(outcome)
            _store(session, customer_id, key, outcome.status, body_sent, outcome.headers)
    except (KeyReused, KeyInUse):
        raise  # about the key, not the work: nothing to store
    except ProblemError as exc:
        if exc.status >= 500:
            raise  # nothing stored: the client may retry
        # The first answer, even a refusal, is what a retry gets. The work was rolled back
        # with the claim; the refusal is stored unless a repeat has stored an answer since.
        response = problem_response(exc, instance=request.url.path)
        with services.db.write() as session:
            claimed = _claim(session, services.clock.now(), customer_id, key, print_)
            if claimed is None:
                _store(session, customer_id, key, exc.status,
                       bytes(response.body).decode(), dict(exc.headers))  # fmt: skip
        raise
    return _render(outcome, body_sent)


def run_without_key(services: Services, work: Callable[[Session], Outcome]) -> Response:
    """`run` for a request without an Idempotency-Key: the work in one write transaction.
    Also what the fast writes (connections/fastpath.py) answer, so both render alike."""
    with services.db.write() as session:
        outcome = work(session)
    return _render(outcome, _serialise(outcome))


def _claim(
    session: Session, now: datetime, customer_id: str, key: str, print_: str
) -> Response | None:
    """Claims the key in this transaction (None: go ahead) or answers from it (a replay or
    422). Raises KeyInUse if the key's row came and went twice while it looked (deleted by
    the retention task, or a duplicate that rolled back, each time)."""
    claim = _CLAIMS[session.get_bind().dialect.name]
    params = {"of_customer": customer_id, "of_key": key, "fingerprint": print_,
              "now": now, "expires_at": now + KEEP}  # fmt: skip
    for _ in range(2):
        if claim.rows(session, **params):
            return None
        rows = _LOCKED.rows(session, of_customer=customer_id, of_key=key)
        if not rows:
            continue  # gone since the insert met it: try the insert again
        row = rows[0]
        if row.expires_at <= now or row.state == "running":
            # Expired: the key may be used afresh. Running: a claim the earlier version
            # committed on its own, whose request died before its work (see the docstring).
            _RENEW.execute(session, params)
            return None
        if row.fingerprint != print_:
            raise KeyReused(
                f"{HEADER} {key!r} was first used for a different request; "
                "use a new key for a new request"
            )
        return Response(
            content=row.body or "",
            status_code=row.status_code or 200,
            headers={**(row.headers or {}), "Idempotent-Replayed": "true"},
            media_type="application/problem+json"
            if (row.status_code or 200) >= 400
            else "application/json",
        )
    raise KeyInUse(
        f"the row of {HEADER} {key!r} was written and removed twice while this request "
        "looked for it; retry the request"
    )


def _store(
    session: Session,
    customer_id: str,
    key: str,
    status: int,
    body: str,
    headers: dict[str, str],
) -> None:
    """The answer, stored over the claim this transaction holds (`_claim`)."""
    # The ETag names the representation in the stored body, so a replay carries it too.
    kept = {k: v for k, v in headers.items() if k.lower() in ("location", "link", "etag")}
    _STORE.later(  # with the COMMIT's round trip on PostgreSQL (`db/later.py`)
        session,
        {
            "of_customer": customer_id, "of_key": key, "status_code": status,
            "answer": body, "answer_headers": kept,
        },
    )  # fmt: skip
