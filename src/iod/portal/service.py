"""People of the portal: users with roles, one-time sign-in links, passwords, server-side
sessions with CSRF tokens, failed sign-ins and lockout. Services flush; the edge commits.

Secrets are never stored in clear: the session id of the cookie and the token of a sign-in
link are generated (256 random bits) and kept as their keyed hash (`SecretHasher`, the key
file the client secrets use), so the database alone cannot sign anyone in. Passwords are
argon2id (`auth.passwords.hash_password`).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from zxcvbn import zxcvbn  # type: ignore[import-untyped]  # it ships no type information

from iod import events
from iod.audit import service as audit
from iod.auth.passwords import (
    SecretHasher,
    hash_password,
    is_generated,
    new_secret,
    verify_password,
)
from iod.auth.tokens import Principal
from iod.customers import repository as customers
from iod.domain.text import text_problem
from iod.infra.clock import Clock, as_utc, rfc3339
from iod.infra.config import Settings
from iod.infra.db import Database
from iod.infra.errors import Forbidden, NotFound, ValidationFailed, shown
from iod.infra.ids import looks_like_id, new_id
from iod.models import PortalSession, PortalSignInLink, PortalUser
from iod.portal import repository

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# A practical address check: one @, no spaces, a dot in the domain. Mail is never sent.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
# A session's last use is written at most this often (not on every page).
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class PortalPolicy:
    idle: timedelta
    absolute: timedelta
    link: timedelta
    min_password_length: int
    max_failed_sign_ins: int
    lockout: timedelta

    @classmethod
    def of(cls, settings: Settings) -> PortalPolicy:
        return cls(
            idle=timedelta(seconds=settings.portal_session_idle_seconds),
            absolute=timedelta(seconds=settings.portal_session_absolute_seconds),
            link=timedelta(seconds=settings.portal_sign_in_link_seconds),
            min_password_length=settings.portal_password_min_length,
            max_failed_sign_ins=settings.portal_max_failed_sign_ins,
            lockout=timedelta(seconds=settings.portal_lockout_seconds),
        )


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in person of a request, from their session."""

    user_id: str
    customer_id: str
    email: str
    role: str
    time_zone: str
    csrf_token: str
    session_hash: str

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    @property
    def principal(self) -> Principal:
        """The services' caller: the user's id stands where an API client's would
        (`created_by`, `requested_by`), for the user's customer."""
        scopes = {"read", "write"} if self.can("operator") else {"read"}
        return Principal(self.user_id, self.customer_id, frozenset(scopes), 0.0)


class RoleRefused(Forbidden):
    """A portal user's role does not allow this (viewer < operator < admin)."""

    type_name = "insufficient-role"
    title = "Not allowed for your role"


def require_role(user: CurrentUser, role: str) -> None:
    """Role checks are made here, on the server, whatever the page offered."""
    if not user.can(role):
        raise RoleRefused(f"this needs the {role} role; you are {user.role}")


def actor(user_id: str, source: str, request_id: str | None) -> audit.Actor:
    return audit.Actor("user", user_id, source, request_id)


def normalise_email(text: str) -> str:
    email = text.strip().lower()
    check_text("/email", email)
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ValidationFailed.field("/email", "must be an email address such as ana@example.com")
    return email


def check_text(pointer: str, value: str) -> str:
    """`value` of a form's free-text field, if the API would take it in a text field (its
    rule: `domain.text.text_problem`); else a 400 at `pointer`."""
    problem = text_problem(value)
    if problem is not None:
        raise ValidationFailed.field(pointer, problem)
    return value


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationFailed.field("/role", f"must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str, email: str, policy: PortalPolicy) -> None:
    """A minimum length, and not a common password (zxcvbn's frequency lists of leaked
    passwords, English words and names) nor one guessed in under 10^8 tries."""
    if len(password) < policy.min_password_length:
        raise ValidationFailed.field(
            "/password", f"must have at least {policy.min_password_length} characters"
        )
    if len(password) > 256:
        raise ValidationFailed.field("/password", "must have at most 256 characters")
    # zxcvbn's cost grows with the length; the first 100 characters decide.
    result: dict[str, Any] = zxcvbn(password[:100], user_inputs=[email, email.split("@")[0]])
    common = [
        m
        for m in result.get("sequence", [])
        if m.get("pattern") == "dictionary" and m.get("dictionary_name") == "passwords"
    ]
    if common and sum(len(m.get("token", "")) for m in common) * 2 >= len(password):
        raise ValidationFailed.field(
            "/password", "is built on a commonly used password; choose another"
        )
    if int(result.get("score", 0)) < 3:
        warning = (result.get("feedback") or {}).get("warning") or "it is too easy to guess"
        raise ValidationFailed.field(
            "/password", f"is too easy to guess ({warning.rstrip('.')}); choose another"
        )


def keyed(hasher: SecretHasher, value: str | None) -> str | None:
    """The keyed hash of a session id or link token, or None when the value cannot be one
    (not the shape `new_secret()` gives): `SecretHasher.hash` would take anything else for
    a person's password and spend an argon2 hash on it, which a forged cookie must not
    make the server do."""
    if not value or len(value) > 64 or not is_generated(value):
        return None
    return hasher.hash(value)


def _event(session: Session, name: str, user: PortalUser, at: datetime, **payload: Any) -> None:
    events.record(
        session,
        name,
        customer_id=user.customer_id,
        subject_id=user.id,
        at=at,
        userId=user.id,
        email=user.email,
        **payload,
    )


def create_user(
    session: Session, clock: Clock, customer_id: str, email: str, role: str
) -> PortalUser:
    if customers.get_customer(session, customer_id) is None:
        raise NotFound(f"no customer {customer_id}")
    email = normalise_email(email)
    role = check_role(role)
    if repository.user_by_email(session, email) is not None:
        raise ValidationFailed.field("/email", f"{email} already has a portal account")
    user = PortalUser(
        id=new_id("usr"),
        customer_id=customer_id,
        email=email,
        role=role,
        password_hash=None,
        time_zone="UTC",
        created_at=clock.now(),
        failed_sign_ins=0,
    )
    session.add(user)
    _event(session, "portal_user.created", user, clock.now(), role=role)
    session.flush()
    return user


def user_of(session: Session, customer_id: str, user_id: str) -> PortalUser:
    """Another customer's user is a 404, like one that does not exist."""
    user = repository.get_user(session, user_id) if looks_like_id(user_id) else None
    if user is None or user.customer_id != customer_id:
        raise NotFound(f"no user {shown(user_id)}")
    return user


def issue_link(
    session: Session, clock: Clock, hasher: SecretHasher, user: PortalUser, policy: PortalPolicy
) -> str:
    """A one-time token to set a password (and sign in); only its keyed hash is stored."""
    token = new_secret()
    now = clock.now()
    repository.add_link(
        session,
        PortalSignInLink(
            token_hash=hasher.hash(token),
            user_id=user.id,
            created_at=now,
            expires_at=now + policy.link,
        ),
    )
    _event(session, "portal_user.link_issued", user, now, expiresAt=rfc3339(now + policy.link))
    session.flush()
    return token


def link_user(session: Session, clock: Clock, hasher: SecretHasher, token: str) -> PortalUser:
    """The user of a link still usable (not used, not expired), else 404."""
    token_hash = keyed(hasher, token)
    link = repository.link_for_update(session, token_hash) if token_hash else None
    if link is None or link.used_at is not None or as_utc(link.expires_at) <= clock.now():
        raise NotFound("this sign-in link is unknown, already used or expired; ask for a new one")
    user = repository.get_user(session, link.user_id)
    if user is None or user.disabled_at is not None:
        raise NotFound("this sign-in link is unknown, already used or expired; ask for a new one")
    return user


def redeem_link(
    session: Session,
    clock: Clock,
    hasher: SecretHasher,
    token: str,
    password: str,
    policy: PortalPolicy,
) -> PortalUser:
    """Sets the password of the link's user and uses the link up, with every other link of
    the user still out (an older link must not set the password again); every other session
    of the user ends (a reset must lock out whoever knew the old password)."""
    user = link_user(session, clock, hasher, token)
    check_password(password, user.email, policy)
    link = repository.link_for_update(session, keyed(hasher, token) or "")
    assert link is not None
    now = clock.now()
    link.used_at = now
    repository.use_up_links(session, user.id, now)
    user.password_hash = hash_password(password)
    user.failed_sign_ins = 0
    user.locked_until = None
    repository.delete_sessions_of(session, user.id)
    _event(session, "portal_user.password_set", user, now)
    session.flush()
    return user


@dataclass(frozen=True)
class NewSession:
    session_id: str  # the cookie's value, in clear only here
    csrf_token: str


def start_session(
    session: Session,
    clock: Clock,
    hasher: SecretHasher,
    user: PortalUser,
    policy: PortalPolicy,
    source: str,
    replacing: Sequence[str] = (),
) -> NewSession:
    """A new session id at every sign-in; the ones the browser had (`replacing`, any cookie
    values) are ended, so an id planted before sign-in never becomes signed in (fixation)."""
    for old in replacing:
        old_hash = keyed(hasher, old)
        if old_hash is not None:
            repository.delete_session(session, old_hash)
    now = clock.now()
    raw = new_secret()
    csrf = secrets.token_urlsafe(32)
    repository.add_session(
        session,
        PortalSession(
            id_hash=hasher.hash(raw),
            user_id=user.id,
            customer_id=user.customer_id,
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
            source=source[:255],
        ),
    )
    session.flush()
    return NewSession(raw, csrf)


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: a session, or the error to show (the failure itself is
    recorded and committed: counting failures is the point)."""

    session: NewSession | None
    user: PortalUser | None
    error: str | None
    locked: bool = False


REFUSED = "the email address or the password is not right"


def sign_in(
    session: Session,
    clock: Clock,
    hasher: SecretHasher,
    email: str,
    password: str,
    policy: PortalPolicy,
    source: str,
    replacing: Sequence[str],
    request_id: str | None = None,
) -> SignIn:
    now = clock.now()
    # An address no account can have (a NUL, an invisible character) is refused before it
    # is looked up or written to the audit log.
    address = check_text("/email", email.strip().lower()[:254])
    user = repository.user_by_email(session, address, lock=True) if address else None
    if user is not None and user.locked_until is not None and as_utc(user.locked_until) > now:
        # Not even checked: a locked account cannot be guessed at meanwhile.
        minutes = max(1, int((as_utc(user.locked_until) - now).total_seconds() + 59) // 60)
        audit.act_for(session, actor(user.id, source, request_id))
        _event(session, "portal_user.sign_in_failed", user, now, cause="locked", source=source)
        return SignIn(
            None,
            user,
            f"too many failed sign-ins: this account is locked for {minutes} more minutes",
            locked=True,
        )
    usable = user is not None and user.disabled_at is None
    ok = verify_password(user.password_hash if usable and user else None, password)
    if not ok or user is None:
        if user is None:
            # No account: the audit log still says someone tried (no customer, no event).
            audit.record(
                session, clock, audit.Actor("user", address or "-", source, request_id),
                "portal.sign_in_failed", "portal_user", address or "-",
                details={"reason": "unknown email"},
            )  # fmt: skip
            return SignIn(None, None, REFUSED)
        audit.act_for(session, actor(user.id, source, request_id))
        user.failed_sign_ins = (user.failed_sign_ins or 0) + 1
        _event(session, "portal_user.sign_in_failed", user, now, cause="password", source=source)
        if user.failed_sign_ins >= policy.max_failed_sign_ins:
            user.locked_until = now + policy.lockout
            user.failed_sign_ins = 0
            _event(session, "portal_user.locked", user, now, lockedUntil=rfc3339(user.locked_until))
        session.flush()
        return SignIn(None, user, REFUSED)
    audit.act_for(session, actor(user.id, source, request_id))
    user.failed_sign_ins = 0
    user.locked_until = None
    new = start_session(session, clock, hasher, user, policy, source, replacing)
    _event(session, "portal_user.signed_in", user, now, source=source)
    return SignIn(new, user, None)


def resolve(
    db: Database, clock: Clock, hasher: SecretHasher, raw: str | None, policy: PortalPolicy
) -> CurrentUser | None:
    """The user of a session cookie, or None when it is unknown, expired (idle or
    absolute) or its user is disabled. Its last use is written at most once a minute."""
    id_hash = keyed(hasher, raw)
    if id_hash is None:
        return None
    now = clock.now()
    with db.read() as session:
        row = repository.session_with_user(session, id_hash)
        if row is None:
            return None
        portal_session, user = row
        expired = (
            as_utc(portal_session.expires_at) <= now
            or as_utc(portal_session.last_seen_at) + policy.idle <= now
            or user.disabled_at is not None
        )
        stale = as_utc(portal_session.last_seen_at) + TOUCH_EVERY <= now
        current = CurrentUser(
            user.id,
            user.customer_id,
            user.email,
            user.role,
            user.time_zone,
            portal_session.csrf_token,
            id_hash,
        )
    if expired:
        with db.write() as session:
            repository.delete_session(session, id_hash)
        return None
    if stale:
        with db.write() as session:
            row = session.get(PortalSession, id_hash)
            if row is not None:
                row.last_seen_at = now
    return current


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def sign_out(session: Session, clock: Clock, user: CurrentUser, *, everywhere: bool) -> int:
    row = repository.get_user(session, user.user_id)
    assert row is not None
    if everywhere:
        ended = repository.delete_sessions_of(session, user.user_id)
    else:
        ended = repository.delete_session(session, user.session_hash)
    _event(
        session, "portal_user.signed_out", row, clock.now(), everywhere=everywhere, sessions=ended
    )
    return ended


def _acted_on_by_admin(session: Session, admin: CurrentUser, user_id: str) -> PortalUser:
    """The user an admin changes. Both rows are locked, in id order, and the admin's own
    role and state are read again here: the session's were read before this transaction,
    and another admin may have taken them away meanwhile (two admins demoting or disabling
    each other at once both passed the session's check and left the customer without an
    admin). The second of them is refused."""
    ids = [admin.user_id, user_id] if looks_like_id(user_id) else [admin.user_id]
    acting = repository.users_for_update(session, ids).get(admin.user_id)
    if acting is None or acting.disabled_at is not None or acting.role != "admin":
        raise RoleRefused("this needs the admin role; yours was taken away meanwhile")
    return user_of(session, admin.customer_id, user_id)


def set_role(session: Session, clock: Clock, admin: CurrentUser, user_id: str, role: str) -> None:
    user = _acted_on_by_admin(session, admin, user_id)
    role = check_role(role)
    if user.id == admin.user_id and role != "admin":
        raise ValidationFailed.field("/role", "you cannot take the admin role from yourself")
    if user.role != role:
        _event(
            session, "portal_user.role_changed", user, clock.now(), fromRole=user.role, role=role
        )
        user.role = role
    session.flush()


def set_disabled(
    session: Session, clock: Clock, admin: CurrentUser, user_id: str, disabled: bool
) -> None:
    user = _acted_on_by_admin(session, admin, user_id)
    if user.id == admin.user_id and disabled:
        raise ValidationFailed.field("/userId", "you cannot disable your own account")
    if disabled and user.disabled_at is None:
        user.disabled_at = clock.now()
        repository.delete_sessions_of(session, user.id)
        _event(session, "portal_user.disabled", user, clock.now())
    elif not disabled and user.disabled_at is not None:
        user.disabled_at = None
        _event(session, "portal_user.enabled", user, clock.now())
    session.flush()


def users_of(session: Session, customer_id: str) -> list[PortalUser]:
    return list(repository.users_of(session, customer_id))


def set_time_zone(session: Session, user: CurrentUser, zone: str) -> None:
    row = repository.get_user(session, user.user_id)
    if row is not None and row.time_zone != zone:
        row.time_zone = zone


def purge(session: Session, now: datetime, policy: PortalPolicy) -> int:
    return repository.purge(session, now, now - policy.idle)
