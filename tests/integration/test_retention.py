"""Retention, the first periodic tasks: expired Idempotency-Keys, old events and finished
jobs are deleted; what is still needed stays. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from iod import events
from iod.app import Services
from iod.jobs import queue
from iod.jobs.registry import JobRef, TaskContext
from iod.models import Event, IdempotencyKey, Job
from iod.retention import tasks as retention

DAY = timedelta(days=1)


def _ctx(services: Services) -> TaskContext:
    return TaskContext(services.clock, services.settings, services.driver)


def _ref() -> JobRef:
    return JobRef(0, "retention", None, None, 1, 1)


def test_expired_idempotency_keys_are_deleted(services: Services) -> None:
    now = services.clock.now()
    with services.db.write() as session:
        for key, expires in (("old", now - DAY), ("edge", now), ("fresh", now + DAY)):
            session.add(
                IdempotencyKey(
                    customer_id="cus_a",
                    key=key,
                    fingerprint="f",
                    state="done",
                    created_at=expires - DAY,
                    expires_at=expires,
                )
            )
    with services.db.write() as session:
        retention._idempotency_keys(session, _ref(), _ctx(services))
    with services.db.read() as session:
        assert list(session.scalars(select(IdempotencyKey.key))) == ["fresh"]


def test_events_past_their_retention_are_pruned(services: Services) -> None:
    clock = services.clock
    with services.db.write() as session:
        for days_ago in (40, 31, 29, 1):
            events.record(
                session, "connection.activated", customer_id="cus_a", subject_id=f"d{days_ago}",
                at=clock.now() - days_ago * DAY,
            )  # fmt: skip
    with services.db.write() as session:
        retention._events(session, _ref(), _ctx(services))
    with services.db.read() as session:
        kept = list(session.scalars(select(Event.subject_id).order_by(Event.position)))
    assert kept == ["d29", "d1"], "the default retention is 30 days"
    # Positions go on from where they were: a consumer's cursor stays valid.
    with services.db.write() as session:
        events.record(
            session, "connection.activated", customer_id="cus_a", subject_id="new", at=clock.now()
        )
    with services.db.read() as session:
        assert session.scalar(select(Event.position).where(Event.subject_id == "new")) == 5


def test_finished_jobs_past_their_retention_are_purged(services: Services) -> None:
    now = services.clock.now()
    ids = {}
    with services.db.write() as session:
        for name, state, finished in (
            ("old-done", "done", now - 8 * DAY),
            ("old-failed", "failed", now - 8 * DAY),
            ("recent-done", "done", now - DAY),
            ("queued", "queued", None),
        ):
            job = queue.enqueue(session, "test.any", run_at=now - 9 * DAY, now=now, max_attempts=1)
            job.state, job.finished_at = state, finished
            session.flush()
            ids[job.id] = name
    with services.db.write() as session:
        retention._jobs(session, _ref(), _ctx(services))
    with services.db.read() as session:
        left = sorted(ids[i] for i in session.scalars(select(Job.id)))
    assert left == ["queued", "recent-done"]


def test_the_queue_depth_query_does_not_scan_finished_jobs(services: Services) -> None:
    """/metrics counts unfinished and failed jobs through the (state, run_at) index, so the
    done jobs (most of the table) are never read."""
    from iod.infra.metrics import queue_depth_query

    if services.db.is_sqlite:
        with services.db.read() as session:
            statement = queue_depth_query().compile(
                session.get_bind(), compile_kwargs={"literal_binds": True}
            )
            rows = session.execute(text(f"EXPLAIN QUERY PLAN {statement}"))
            plan = " ".join(str(r[-1]) for r in rows)
        assert "SEARCH jobs USING COVERING INDEX ix_jobs_state_run_at (state=?)" in plan, plan
        return
    # PostgreSQL's planner decides by statistics: a table as in production (mostly done
    # jobs, a few waiting), analysed, in a transaction that is rolled back (ANALYZE's
    # statistics with it). On an empty table any plan is as cheap as another.
    now = services.clock.now()
    with services.db.write() as session:
        template = queue.enqueue(session, "test.any", run_at=now, now=now, max_attempts=1)
        template.state, template.finished_at = "done", now
        session.flush()
        columns = [c.name for c in Job.__table__.columns if c.name not in ("id", "state")]
        names = ", ".join(columns)
        for state, count in (("done", 20_000), ("queued", 50), ("failed", 5)):
            session.execute(
                text(
                    f"INSERT INTO jobs (state, {names}) "
                    f"SELECT :state, {names} "
                    "FROM jobs, generate_series(1, :count) AS g WHERE id = :template"
                ),
                {"state": state, "count": count, "template": template.id},
            )
        session.execute(text("ANALYZE jobs"))
        statement = queue_depth_query().compile(
            session.get_bind(), compile_kwargs={"literal_binds": True}
        )
        plan = " ".join(r[0] for r in session.execute(text(f"EXPLAIN {statement}")))
        session.rollback()
    assert "ix_jobs_state_run_at" in plan and "Index Cond" in plan, plan


def test_a_key_renewed_while_retention_deletes_survives(services: Services) -> None:
    """A request may claim an expired key again (renew it) between retention's SELECT of the
    expired keys and its DELETE; on PostgreSQL the DELETE then waits for the row and sees it
    renewed. It must not delete it: a retry of that request would act a second time."""
    now = services.clock.now()
    with services.db.write() as session:
        for key in ("renewed", "expired"):
            session.add(
                IdempotencyKey(
                    customer_id="cus_a", key=key, fingerprint="f", state="done",
                    created_at=now - 2 * DAY, expires_at=now - DAY,
                )
            )  # fmt: skip
    with services.db.write() as session:
        execute = session.execute
        statements = []

        def renew_after_the_select(statement, *args, **kwargs):  # type: ignore[no-untyped-def]
            result = execute(statement, *args, **kwargs)
            statements.append(statement)
            if len(statements) == 1:  # the SELECT of the expired keys has run
                execute(
                    text(
                        "UPDATE idempotency_keys SET expires_at = :later"
                        " WHERE customer_id = 'cus_a' AND key = 'renewed'"
                    ),
                    {"later": now + DAY},
                )
            return result

        session.execute = renew_after_the_select  # type: ignore[method-assign]
        assert retention.expire_idempotency_keys(session, now) == 2, "both were selected"
    with services.db.read() as session:
        assert list(session.scalars(select(IdempotencyKey.key))) == ["renewed"]
