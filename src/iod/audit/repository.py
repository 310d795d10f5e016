"""Queries of the audit log (the `audit_events` table): rows are only ever added."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from iod.infra.db import TransactionWrite
from iod.models import AuditEvent


def add(session: Session, event: AuditEvent) -> None:
    session.add(event)


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """One INSERT compiled once (`TransactionWrite`): the rows are never read back in the
    transaction, so ORM objects (and their flush) would be work for nothing on every
    write. Sent with the transaction's next round trip (`TransactionWrite.later`)."""
    if rows:
        _INSERT.later(session, rows)


_INSERT = TransactionWrite(insert(cast(Table, AuditEvent.__table__)))


def newest(
    session: Session,
    *,
    since: datetime | None = None,
    customer_id: str | None = None,
    target_id: str | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    """The newest matching rows first."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if since is not None:
        statement = statement.where(AuditEvent.at >= since)
    if customer_id is not None:
        statement = statement.where(AuditEvent.customer_id == customer_id)
    if target_id is not None:
        statement = statement.where(AuditEvent.target_id == target_id)
    return session.scalars(statement).all()
