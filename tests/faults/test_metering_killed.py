"""Three `iod worker` processes on PostgreSQL, the one rating killed (SIGKILL) in the middle
of it: every connection hour is rated, none twice (docs/money.md, "Metering").

Worker A starts alone with a backlog of hours (suspended connections: the Python path, the
slow one); once PostgreSQL shows its rating statements in flight, A is killed, and B and C
start. A's transaction dies with it (the periodic job was claimed in that transaction, so it
is due again at once), B or C rates the backlog, and the counts are exact.

Short: 600 connections x 6 hours; long: 5,000 x 6.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text

from iod.domain.rating import floor_hour
from iod.infra.clock import SystemClock
from iod.infra.db import Database, make_engine
from iod.models import MeteredHour, UsageHour, UsageLine
from tests.conftest import postgres_url
from tests.e2e.conftest import base_env, wait_for
from tests.e2e.test_crash import start_worker
from tests.faults.conftest import report, size
from tests.integration.test_metering import seed

RATING_NOW = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND state <> 'idle' AND query ILIKE '%usage_%'"
)


def test_a_worker_killed_mid_rating(tmp_path: Path) -> None:
    postgres_url()
    n = size(600, 5000)
    env = base_env(tmp_path, "postgres", IOD_METERING_BATCH="100", IOD_LOG_LEVEL="WARNING",
                   IOD_JOB_LEASE_SECONDS="3", IOD_WORKER_POLL_SECONDS="0.2")  # fmt: skip
    db = Database(make_engine(env["IOD_DATABASE_URL"]))
    now = datetime.now(UTC)
    start = floor_hour(now - timedelta(seconds=60)) - timedelta(hours=6) + timedelta(minutes=30)
    seed(db, SystemClock(), n, start, suspended=True)
    hours = 6  # start's hour and the 5 after it (more if an hour ends meanwhile)
    workers = [start_worker(env, tmp_path / "a.log")]
    try:

        def rating_now() -> int:
            # A connection (a transaction) per look: PostgreSQL keeps one snapshot of its
            # activity statistics for the whole of a transaction.
            with db.engine.connect() as conn:
                return int(conn.execute(text(RATING_NOW)).scalar() or 0)

        wait_for(rating_now, timeout=60, interval=0.05)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        killed_at = datetime.now(UTC)
        workers += [start_worker(env, tmp_path / f"{name}.log") for name in ("b", "c")]

        def complete() -> bool:
            with db.read() as session:
                return (session.scalar(select(func.count()).select_from(MeteredHour)) or 0) >= hours

        wait_for(complete, timeout=180, interval=0.5)
        with db.read() as session:
            usage_hours = session.scalar(select(func.count()).select_from(UsageHour))
            seconds = session.scalar(select(func.sum(UsageLine.seconds)))
            doubled = session.execute(
                select(UsageLine.connection_id, UsageLine.hour)
                .group_by(UsageLine.connection_id, UsageLine.hour)
                .having(func.sum(UsageLine.seconds) > 3600)
            ).all()
            complete_hours = session.scalar(select(func.count()).select_from(MeteredHour))
            last = session.scalar(select(func.max(MeteredHour.hour)))
        assert last is not None and complete_hours is not None and complete_hours >= hours
        assert usage_hours == n * complete_hours
        # Billed from start + 1 minute (provisioning is free) to the end of the last hour.
        billed = int((last + timedelta(hours=1) - (start + timedelta(minutes=1))).total_seconds())
        assert seconds == n * billed, "an hour rated twice or missing"
        assert doubled == []
        recovered = round((datetime.now(UTC) - killed_at).total_seconds(), 1)
        report("metering_worker_killed", connections=n, hours=hours, recovered_seconds=recovered)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except Exception:
                worker.kill()
        db.dispose()
