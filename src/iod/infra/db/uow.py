"""The unit of work: what one write transaction collects and what its commit does with it.

A write session (`Database.write()`) carries a `UnitOfWork` in `session.info`. Services and
worker tasks record domain events on it (`iod.events.record`) and mark topics to wake
(`wake`, e.g. "jobs" when a job was enqueued). Just before the commit the registered commit
hooks run in the same transaction (the events writer: the outbox, with positions; its
in-transaction subscribers such as the audit log); after a successful commit the database's
listeners of each woken topic are called (the in-process worker's wake-up). A rolled-back
transaction publishes nothing and wakes nobody; events recorded inside a savepoint that rolls
back are dropped with it.

This module knows no table: the events module registers its writer here when it is imported
(which it must be for anything to record an event), so `db` does not depend on `models`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, SessionTransaction

_KEY = "iod.uow"

CommitHook = Callable[[Session, list[Any]], None]
"""Runs inside the transaction, before its commit, with the events recorded (in order)."""

_commit_hooks: list[CommitHook] = []


def on_commit(hook: CommitHook) -> CommitHook:
    """Registers a hook run before every commit that has recorded events (once per hook)."""
    if hook not in _commit_hooks:
        _commit_hooks.append(hook)
    return hook


@dataclass
class UnitOfWork:
    """The events and topics of one write transaction."""

    # (the savepoint it was recorded in, or None for the outer transaction; the event)
    events: list[tuple[SessionTransaction | None, Any]] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)


def of(session: Session) -> UnitOfWork:
    """The session's unit of work (created on first use; a read session gets one too, but
    only `Database.write()` ever commits it)."""
    current: UnitOfWork | None = session.info.get(_KEY)
    if current is None:
        current = session.info[_KEY] = UnitOfWork()
    return current


def record(session: Session, event: Any) -> None:
    """Adds a domain event to the transaction; it is written at the commit."""
    of(session).events.append((session.get_nested_transaction(), event))


def wake(session: Session, topic: str) -> None:
    """After this transaction commits, the database's listeners of `topic` are called."""
    of(session).topics.add(topic)


def before_commit(session: Session) -> None:
    """Writes what the transaction collected, in the transaction (`Database.write()`)."""
    current: UnitOfWork | None = session.info.get(_KEY)
    if current is None or not current.events:
        return
    events = [event for _, event in current.events]
    current.events.clear()
    for hook in _commit_hooks:
        hook(session, events)
    session.flush()


def take_topics(session: Session) -> set[str]:
    """The topics to wake after a commit; the unit of work is done with them."""
    current: UnitOfWork | None = session.info.pop(_KEY, None)
    return current.topics if current is not None else set()


def discard(session: Session) -> None:
    """The transaction rolled back: nothing it collected is published."""
    session.info.pop(_KEY, None)


def discard_savepoint(session: Session, previous: SessionTransaction) -> None:
    """`after_soft_rollback` listener: drops the events recorded inside a rolled-back
    savepoint (or inside savepoints nested in it); a rollback of the whole transaction
    drops everything it collected, so nothing carries over into the next one."""
    current: UnitOfWork | None = session.info.get(_KEY)
    if current is None:
        return
    if not previous.nested:
        if previous.parent is None:
            discard(session)
        return
    if not current.events:
        return
    current.events = [
        (where, event) for where, event in current.events if not _inside(where, previous)
    ]


def _inside(where: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while where is not None:
        if where is savepoint:
            return True
        where = where.parent
    return False
