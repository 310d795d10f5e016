"""Revision 20261130_0013 (Lumen, issue 19) on a database of the previous release: every
customer gets a customer number and every connection a service id, distinct; the
downgrade drops them. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import text

from iod.infra.db import Database
from tests.conftest import migrate_to

BEFORE = "20261130_0012"  # the revision before lumen's (the merged chain)


def test_existing_customers_and_connections_get_numbers(database: Database) -> None:
    migrate_to(database, BEFORE, down=True)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    stamp = at.replace(tzinfo=None) if database.is_sqlite else at
    with database.engine.begin() as conn:
        for customer in ("cus_a", "cus_b"):
            conn.execute(
                text("INSERT INTO customers (id, name, created_at) VALUES (:i, :i, :t)"),
                {"i": customer, "t": stamp},
            )
        conn.execute(
            text(
                "INSERT INTO locations (id, name, address, capacity_mbps, tiers_mbps, ipv4_pool,"
                " ipv4_next, committed_mbps, created_at, updated_at) VALUES ('PL1', 'n', 'a',"
                " 1000, '[100]', '10.0.0.0/16', 0, 0, :t, :t)"
            ),
            {"t": stamp},
        )
        for connection, customer in (("con_1", "cus_a"), ("con_2", "cus_a"), ("con_3", "cus_b")):
            conn.execute(
                text(
                    "INSERT INTO connections (id, customer_id, location_id, status,"
                    " bandwidth_mbps, committed_mbps, created_by, created_at, updated_at)"
                    " VALUES (:c, :k, 'PL1', 'active', 100, 100, 'cli', :t, :t)"
                ),
                {"c": connection, "k": customer, "t": stamp},
            )
    migrate_to(database, "head", down=False)
    with database.engine.connect() as conn:
        numbers = conn.execute(text("SELECT customer_number FROM customers")).scalars().all()
        services = conn.execute(
            text("SELECT connection_id, service_id, customer_id FROM lumen_services")
        ).all()
    assert len(set(numbers)) == 2 and all(re.fullmatch(r"1-[0-9A-Z]{7}", n) for n in numbers)
    assert sorted((s.connection_id, s.customer_id) for s in services) == [
        ("con_1", "cus_a"), ("con_2", "cus_a"), ("con_3", "cus_b"),
    ]  # fmt: skip
    ids = [s.service_id for s in services]
    assert len(set(ids)) == 3 and all(re.fullmatch(r"77[0-9]{9}", i) for i in ids)
    migrate_to(database, BEFORE, down=True)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 2
    migrate_to(database, "head", down=False)
