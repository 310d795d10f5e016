"""The names of the connection tasks and how a connection's job is enqueued.

Every job of a connection has the lock key `connection:<id>`, so its jobs run one at a time
and in the order they were scheduled. The tasks themselves are in `tasks.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from iod.jobs import queue
from iod.models import Job

PROVISION = "provision"
APPLY_BANDWIDTH = "apply_bandwidth"
SUSPEND = "suspend"
RESUME = "resume"
TERMINATE = "terminate"


def lock_key(connection_id: str) -> str:
    return f"connection:{connection_id}"


def enqueue(
    session: Session,
    task: str,
    connection_id: str,
    *,
    run_at: datetime,
    now: datetime,
    max_attempts: int,
    change_id: str | None = None,
) -> Job:
    return queue.enqueue(
        session,
        task,
        run_at=run_at,
        now=now,
        max_attempts=max_attempts,
        **_fields(connection_id, change_id),
    )


def insert(
    session: Session,
    task: str,
    connection_id: str,
    *,
    run_at: datetime,
    now: datetime,
    max_attempts: int,
    change_id: str | None = None,
) -> None:
    """`enqueue` as one Core INSERT (`queue.insert`): the connection (and the change) must
    be written already."""
    queue.insert(
        session,
        task,
        run_at=run_at,
        now=now,
        max_attempts=max_attempts,
        **_fields(connection_id, change_id),
    )


def _fields(connection_id: str, change_id: str | None) -> dict[str, Any]:
    args = {"connectionId": connection_id}
    if change_id is not None:
        args["changeId"] = change_id
    return {
        "args": args,
        "lock_key": lock_key(connection_id),
        "connection_id": connection_id,
        "change_id": change_id,
    }
