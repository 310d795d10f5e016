"""Revision 20261201_0015 (partial indexes, `schedule_transitions` without its foreign key)
with rows in the tables: the upgrade and the downgrade keep them; the downgrade drops the
transitions of schedules gone (the foreign key it restores would refuse them). On SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text

from iod.infra.db import Database
from tests.conftest import migrate_to

BEFORE = "20261130_0014"


def _foreign_keys(database: Database) -> list[str | None]:
    return [fk["name"] for fk in inspect(database.engine).get_foreign_keys("schedule_transitions")]


def _seed(database: Database) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    t = at.replace(tzinfo=None) if database.is_sqlite else at
    statements = [
        "INSERT INTO customers (id, name, created_at) VALUES ('cus_a', 'a', :t)",
        "INSERT INTO locations (id, name, address, capacity_mbps, tiers_mbps, ipv4_pool,"
        " ipv4_next, committed_mbps, created_at, updated_at) VALUES ('PL1', 'n', 'a', 1000,"
        " '[100]', '10.0.0.0/16', 0, 0, :t, :t)",
        "INSERT INTO connections (id, customer_id, location_id, status, bandwidth_mbps,"
        " committed_mbps, created_by, created_at, updated_at) VALUES ('con_1', 'cus_a', 'PL1',"
        " 'active', 100, 100, 'cli', :t, :t)",
        "INSERT INTO schedules (id, customer_id, connection_id, time_zone, default_mbps, rules,"
        " exceptions, paused, anchor, version, created_by, created_at, updated_at) VALUES"
        " ('sch_1', 'cus_a', 'con_1', 'UTC', 100, '[]', '[]', false, '2030-01-01', 1, 'cli',"
        " :t, :t)",
        "INSERT INTO bandwidth_changes (id, connection_id, to_mbps, effective_at, status,"
        " requested_by, requested_at, revert_of, schedule_id) VALUES ('chg_1', 'con_1', 100,"
        " :t, 'scheduled', 'cli', :t, NULL, 'sch_1'), ('chg_2', 'con_1', 100, :t, 'scheduled',"
        " 'cli', :t, 'chg_1', NULL)",
        "INSERT INTO jobs (kind, args, queue, state, run_at, scheduled_at, attempts,"
        " max_attempts, created_at, finished_at) VALUES ('t', '{}', 'default', 'done', :t, :t,"
        " 1, 1, :t, :t), ('t', '{}', 'default', 'queued', :t, :t, 0, 1, :t, NULL)",
        "INSERT INTO schedule_transitions (schedule_id, at, mbps, outcome, change_id,"
        " created_at) VALUES ('sch_1', :t, 100, 'planned', 'chg_1', :t)",
    ]
    with database.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {"t": t})


def _counts(database: Database) -> dict[str, int]:
    with database.engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("bandwidth_changes", "jobs", "schedule_transitions")
        }


def test_rows_survive_the_upgrade_and_the_downgrade(database: Database) -> None:
    migrate_to(database, BEFORE, down=True)
    assert _foreign_keys(database) == ["fk_schedule_transitions_schedule_id_schedules"]
    _seed(database)
    migrate_to(database, "head", down=False)
    assert _foreign_keys(database) == []
    assert _counts(database) == {"bandwidth_changes": 2, "jobs": 2, "schedule_transitions": 1}
    with database.engine.begin() as conn:  # a schedule's row gone: not refused any more
        conn.execute(
            text(
                "INSERT INTO schedule_transitions (schedule_id, at, mbps, outcome, created_at)"
                " SELECT 'sch_gone', at, mbps, 'refused', created_at FROM schedule_transitions"
            )
        )
    migrate_to(database, BEFORE, down=True)
    assert _foreign_keys(database) == ["fk_schedule_transitions_schedule_id_schedules"]
    assert _counts(database) == {"bandwidth_changes": 2, "jobs": 2, "schedule_transitions": 1}
    migrate_to(database, "head", down=False)
    assert _counts(database) == {"bandwidth_changes": 2, "jobs": 2, "schedule_transitions": 1}
