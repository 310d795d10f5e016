"""Revision 20261130_0007 on a database with the previous release's jobs: they get the lock
key of their connection and keep running in order; the downgrade keeps them too. On SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from iod.infra.db import Database
from iod.jobs import queue
from tests.conftest import migrate_to

BEFORE = "20261126_0006"


def test_existing_jobs_get_their_connections_lock_key_and_keep_running(
    database: Database,
) -> None:
    migrate_to(database, BEFORE, down=True)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    stamp = at.replace(tzinfo=None) if database.is_sqlite else at
    with database.engine.begin() as conn:
        for kind, connection_id in (
            ("provision", "con_a"),
            ("apply_bandwidth", "con_a"),
            ("provision", "con_b"),
        ):
            conn.execute(
                text(
                    "INSERT INTO jobs (kind, connection_id, state, run_at, scheduled_at,"
                    " attempts, max_attempts, created_at) VALUES (:k, :c, 'queued', :t, :t,"
                    " 0, 5, :t)"
                ),
                {"k": kind, "c": connection_id, "t": stamp},
            )
    migrate_to(database, "head", down=False)
    with database.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, kind, lock_key, queue, args FROM jobs ORDER BY id")
        ).all()
    assert [(r.kind, r.lock_key, r.queue) for r in rows] == [
        ("provision", "connection:con_a", "default"),
        ("apply_bandwidth", "connection:con_a", "default"),
        ("provision", "connection:con_b", "default"),
    ]
    # Still one at a time per connection, in order.
    with database.write() as session:
        claimed = queue.claim_batch(session, at, 30, "w1", 10)
        assert sorted(j.id for j in claimed) == [rows[0].id, rows[2].id]
        assert all(j.args == {} for j in claimed)
    # A job of a new kind, then back to the previous schema: the connection jobs stay.
    with database.write() as session:
        queue.enqueue(session, "retention.events", run_at=at, now=at, max_attempts=1)
    migrate_to(database, BEFORE, down=True)
    with database.engine.connect() as conn:
        left = conn.execute(text("SELECT kind, connection_id FROM jobs ORDER BY id")).all()
    assert [tuple(r) for r in left] == [
        ("provision", "con_a"),
        ("apply_bandwidth", "con_a"),
        ("provision", "con_b"),
    ]
    migrate_to(database, "head", down=False)
