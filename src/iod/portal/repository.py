"""The portal's queries: people, their one-time links and their sessions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from iod.models import PortalSession, PortalSignInLink, PortalUser


def get_user(session: Session, user_id: str) -> PortalUser | None:
    return session.get(PortalUser, user_id)


def users_for_update(session: Session, user_ids: Sequence[str]) -> dict[str, PortalUser]:
    """These users, their rows locked in id order (the order every such lock is taken in)."""
    query = (
        select(PortalUser)
        .where(PortalUser.id.in_(sorted(user_ids)))
        .order_by(PortalUser.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {user.id: user for user in session.scalars(query).all()}


def user_by_email(session: Session, email: str, *, lock: bool = False) -> PortalUser | None:
    query = select(PortalUser).where(PortalUser.email == email)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def users_of(session: Session, customer_id: str) -> Sequence[PortalUser]:
    return session.scalars(
        select(PortalUser).where(PortalUser.customer_id == customer_id).order_by(PortalUser.email)
    ).all()


def add_link(session: Session, link: PortalSignInLink) -> None:
    session.add(link)


def use_up_links(session: Session, user_id: str, now: datetime) -> None:
    """Every link of the user not used yet is used up now."""
    session.execute(
        update(PortalSignInLink)
        .where(PortalSignInLink.user_id == user_id, PortalSignInLink.used_at.is_(None))
        .values(used_at=now)
    )


def link_for_update(session: Session, token_hash: str) -> PortalSignInLink | None:
    return session.scalars(
        select(PortalSignInLink).where(PortalSignInLink.token_hash == token_hash).with_for_update()
    ).first()


def add_session(session: Session, row: PortalSession) -> None:
    session.add(row)


def session_with_user(session: Session, id_hash: str) -> Any | None:
    """The session's row and its user's, or None."""
    row = session.execute(
        select(PortalSession, PortalUser)
        .join(PortalUser, PortalUser.id == PortalSession.user_id)
        .where(PortalSession.id_hash == id_hash)
    ).first()
    return row


def delete_session(session: Session, id_hash: str) -> int:
    result = session.execute(delete(PortalSession).where(PortalSession.id_hash == id_hash))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_sessions_of(session: Session, user_id: str) -> int:
    result = session.execute(delete(PortalSession).where(PortalSession.user_id == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge(session: Session, now: datetime, idle_before: datetime) -> int:
    """Deletes sessions past their absolute or idle expiry and links past theirs."""
    gone = session.execute(
        delete(PortalSession).where(
            (PortalSession.expires_at <= now) | (PortalSession.last_seen_at <= idle_before)
        )
    )
    links = session.execute(delete(PortalSignInLink).where(PortalSignInLink.expires_at <= now))
    return int(gone.rowcount or 0) + int(links.rowcount or 0)  # type: ignore[attr-defined]
