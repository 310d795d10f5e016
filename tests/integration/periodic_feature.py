"""A test feature with a periodic task, imported by tests/integration/test_periodic.py and by
the worker processes it starts (`python -m tests.integration.periodic_feature URL SECONDS`).
"""

from __future__ import annotations

import sys
import threading

from sqlalchemy.orm import Session

from iod.jobs.registry import JobRef, TaskContext, periodic, unregister

NAME = "test.tick"
SEEN: list[str] = []


def tick(session: Session, job: JobRef, ctx: TaskContext) -> None:
    SEEN.append(str(job.args["period"]))


def register(every: str) -> None:
    """Declares the task, as a feature's tasks.py does with `@periodic` at import."""
    unregister(NAME)
    periodic(NAME, every=every)(tick)


def main(url: str, seconds: float) -> None:
    """One worker process: runs the worker loop (periodic scheduler included) for a while."""
    from iod.app import build_services
    from iod.infra.config import Settings

    register("1s")
    settings = Settings(
        database_url=url, worker_poll_seconds=0.05, reconcile_on_start=False, log_json=True
    )
    services = build_services(settings)
    worker = services.worker()
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    worker.run_forever(stop)
    services.db.dispose()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
