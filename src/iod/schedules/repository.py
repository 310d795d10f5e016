"""Queries for schedules and their planned transitions, scoped to a customer where asked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from iod.domain.status import ChangeStatus, ConnectionStatus
from iod.models import BandwidthChange, Connection, Schedule, ScheduleTransition


def get_for_customer(
    session: Session, customer_id: str, schedule_id: str, *, lock: bool = False
) -> Schedule | None:
    statement = select(Schedule).where(
        Schedule.id == schedule_id, Schedule.customer_id == customer_id
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.scalar(statement)


def get_locked(session: Session, schedule_id: str) -> Schedule | None:
    return session.scalar(
        select(Schedule)
        .where(Schedule.id == schedule_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def of_connection(session: Session, connection_id: str) -> Schedule | None:
    return session.scalar(select(Schedule).where(Schedule.connection_id == connection_id))


def page_for_customer(
    session: Session, customer_id: str, after_id: str | None, limit: int
) -> Sequence[Schedule]:
    statement = select(Schedule).where(Schedule.customer_id == customer_id)
    if after_id is not None:
        statement = statement.where(Schedule.id > after_id)
    return session.scalars(statement.order_by(Schedule.id).limit(limit)).all()


def due_for_planning(
    session: Session, before: datetime, after_id: str | None, limit: int
) -> Sequence[tuple[str, str]]:
    """(schedule id, connection id) of active schedules planned less far than `before`, on
    connections not terminated, in id order after `after_id`."""
    statement = (
        select(Schedule.id, Schedule.connection_id)
        .join(Connection, Connection.id == Schedule.connection_id)
        .where(
            Schedule.paused.is_(False),
            or_(Schedule.planned_until.is_(None), Schedule.planned_until < before),
            Connection.status != ConnectionStatus.TERMINATED.value,
        )
    )
    if after_id is not None:
        statement = statement.where(Schedule.id > after_id)
    rows = session.execute(statement.order_by(Schedule.id).limit(limit)).all()
    return [(row[0], row[1]) for row in rows]


def unstarted_changes(session: Session, schedule_id: str) -> Sequence[BandwidthChange]:
    """The schedule's changes still `scheduled`, locked (after their connection's row)."""
    return session.scalars(
        select(BandwidthChange)
        .where(
            BandwidthChange.schedule_id == schedule_id,
            BandwidthChange.status == ChangeStatus.SCHEDULED.value,
        )
        .order_by(BandwidthChange.effective_at, BandwidthChange.id)
        .with_for_update()
    ).all()


def forget_transitions(
    session: Session, schedule_id: str, after: datetime, change_ids: Sequence[str]
) -> None:
    """Drops the planned transitions from `after` on and those of `change_ids` (cancelled), so
    planning again may plan those instants anew."""
    condition = ScheduleTransition.at >= after
    if change_ids:
        condition = or_(condition, ScheduleTransition.change_id.in_(list(change_ids)))
    session.execute(
        delete(ScheduleTransition).where(ScheduleTransition.schedule_id == schedule_id, condition)
    )


def delete_all_transitions(session: Session, schedule_id: str) -> None:
    session.execute(delete(ScheduleTransition).where(ScheduleTransition.schedule_id == schedule_id))


def mark_change(session: Session, change_id: str, schedule_id: str) -> None:
    session.execute(
        update(BandwidthChange)
        .where(BandwidthChange.id == change_id)
        .values(schedule_id=schedule_id)
    )


def transitions_of(session: Session, schedule_id: str) -> Sequence[ScheduleTransition]:
    return session.scalars(
        select(ScheduleTransition)
        .where(ScheduleTransition.schedule_id == schedule_id)
        .order_by(ScheduleTransition.at)
    ).all()
