"""`iod jobs`: the job queue and the periodic tasks, read from the database.

The server's modules are imported inside each command, so `iod --help` stays fast
(tests/client/test_cli_edges.py checks the import graph)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from iod.cli.common import console, open_db_or_exit
from iod.client.terminal import safe
from iod.infra.clock import rfc3339

jobs_app = typer.Typer(help="The job queue and the periodic tasks.", no_args_is_help=True)

STATES = ("queued", "running", "done", "failed")


def _when(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        list[str] | None,
        typer.Option(help="Only jobs in this state (queued, running, done, failed); repeatable."),
    ] = None,
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The newest jobs first."""
    from sqlalchemy import select

    from iod.models import Job

    wanted = state or []
    unknown = sorted(set(wanted) - set(STATES))
    if unknown:
        raise typer.BadParameter(
            f"unknown state {', '.join(unknown)}; one of {', '.join(STATES)}", param_hint="--state"
        )
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if wanted:
        query = query.where(Job.state.in_(wanted))
    if task is not None:
        query = query.where(Job.kind == task)
    with open_db_or_exit().read() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": job.id,
                "task": job.kind,
                "state": job.state,
                "queue": job.queue,
                "lockKey": job.lock_key,
                "args": job.args,
                "attempts": job.attempts,
                "maxAttempts": job.max_attempts,
                "runAt": _when(job.run_at),
                "finishedAt": _when(job.finished_at),
                "lastError": job.last_error,
            }
            for job in session.scalars(query)
        ]
    if as_json:
        typer.echo(json.dumps({"jobs": rows}))
        return
    table = Table("id", "task", "state", "lock key", "attempts", "run at", "finished", "error")
    for row in rows:
        table.add_row(
            str(row["id"]),
            safe(row["task"]),
            row["state"],
            safe(row["lockKey"] or ""),
            f"{row['attempts']}/{row['maxAttempts']}",
            row["runAt"] or "",
            row["finishedAt"] or "",
            safe((row["lastError"] or "")[:120]),
        )
    console.print(table, highlight=False)


@jobs_app.command("periodic")
def jobs_periodic(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The periodic tasks: their schedule, the last period enqueued and the next one."""
    from iod import features
    from iod.infra.clock import SystemClock
    from iod.jobs import periodic as scheduling
    from iod.jobs.registry import PERIODIC

    features.load()
    now = SystemClock().now()
    with open_db_or_exit().read() as session:
        rows: list[dict[str, Any]] = []
        for name in sorted(PERIODIC):
            entry = PERIODIC[name]
            last = scheduling.last_period(session, name)
            latest = entry.schedule.latest(now)
            rows.append(
                {
                    "task": name,
                    "schedule": entry.schedule.describe(),
                    "lastPeriod": _when(last),
                    "nextPeriod": _when(
                        latest if last is None or last < latest else entry.schedule.after(latest)
                    ),
                }
            )
    if as_json:
        typer.echo(json.dumps({"periodic": rows}))
        return
    table = Table("task", "schedule", "last period", "next period")
    for row in rows:
        table.add_row(
            safe(row["task"]), row["schedule"], row["lastPeriod"] or "-", row["nextPeriod"]
        )
    console.print(table, highlight=False)
