"""Forms that act once: a reload of the page a POST answered, or a button pressed twice,
does not create, rotate or order a second time.

Every portal form carries a random `once` field beside its CSRF token (macros.html). The
write transaction that does the form's work first records it, per customer, in the
idempotency keys' table (`portal-form:` + the value, kept as long as the API's keys and
expired by the same retention task). A second POST of the same form finds it recorded and
is answered 409 with a page that says so, before anything is done: a secret shown once is
not replaced by another one the user never saw. No secret is stored. A form posted without
the field (a script with curl) acts as before.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iod.infra.errors import Conflict, ValidationFailed
from iod.models import IDEMPOTENCY_KEEP, IdempotencyKey

FIELD = "once"
PREFIX = "portal-form:"
_VALUE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class FormAlreadySent(Conflict):
    type_name = "form-already-sent"
    title = "This form was already sent"


def new_value() -> str:
    return secrets.token_urlsafe(18)


def checked(value: str | None) -> str | None:
    """The field's value, None when absent; a malformed one is a 400."""
    if value is None:
        return None
    if not _VALUE.fullmatch(value):
        raise ValidationFailed.field(f"/{FIELD}", "malformed form token: reload the page")
    return value


def record(session: Session, now: datetime, customer_id: str, value: str) -> None:
    """Records the form as sent, in the transaction of its work; FormAlreadySent if it was."""
    key = PREFIX + value
    already = FormAlreadySent(
        "Nothing was done again: this form had been sent before (the page reloaded, or the "
        "button pressed twice). A secret or link is shown only once: if it was lost, "
        "rotate the secret or ask for a new link."
    )
    if session.get(IdempotencyKey, (customer_id, key)) is not None:
        raise already
    session.add(
        IdempotencyKey(
            customer_id=customer_id, key=key, fingerprint="portal-form", state="done",
            status_code=FormAlreadySent.status, body=None, headers=None,
            created_at=now, expires_at=now + IDEMPOTENCY_KEEP,
        )
    )  # fmt: skip
    try:
        session.flush()
    except IntegrityError as exc:  # the same form sent twice at once: the other one won
        raise already from exc
