"""The names of the connection tasks and how a connection's job is enqueued.

Every job of a connection has the lock key `connection:<id>`, so its jobs run one at a time
and in the order they were scheduled. The tasks themselves are in `tasks.py`.
"""

from __future__ import annotations

from datetime import datetime

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
    args = {"connectionId": connection_id}
    if change_id is not None:
        args["changeId"] = change_id
    return queue.enqueue(
        session,
        task,
        run_at=run_at,
        now=now,
        max_attempts=max_attempts,
        args=args,
        lock_key=lock_key(connection_id),
        connection_id=connection_id,
        change_id=change_id,
    )
