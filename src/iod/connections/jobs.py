"""The names of the connection tasks and how a connection's job is enqueued.

Every job of a connection has the lock key `connection:<id>`, so its jobs run one at a time
and in the order they were scheduled. The tasks themselves are in `tasks.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from iod.jobs import queue

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
) -> None:
    """The job, written at once with one INSERT (`queue.insert`, issue 14): the connection
    (and the change) must be written already."""
    args = {"connectionId": connection_id}
    if change_id is not None:
        args["changeId"] = change_id
    key = lock_key(connection_id)
    queue.insert(session, queue.new_job(task, run_at, now, max_attempts, args, key, None,
                                        connection_id, change_id))  # fmt: skip
