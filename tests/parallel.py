"""What `make pytest`'s parallel pass needs: a PostgreSQL database per xdist worker, and the
tests that must run alone.

`make pytest` (tests/two_passes.py) runs pytest twice: first the tests that may share the
machine, with pytest-xdist (`-n PYTEST_WORKERS -m "not serial"`), then, without xdist, the
tests marked `serial`: the data-plane throughput tests (iperf3 timing is disturbed by a busy
CPU), the fault tests (PostgreSQL restarted, processes killed) and the timing-sensitive ones.
Every test under a directory of SERIAL_DIRS is marked `serial` at collection, so a new test
there is too; a timing-sensitive test elsewhere says `@pytest.mark.serial` itself.

Each worker (PYTEST_XDIST_WORKER `gw0`, `gw1`, ...) tests PostgreSQL in a database of its own,
named after IOD_TEST_DATABASE_URL's (`<db>_gw0`): created afresh when the worker starts (on the
same server, through its `postgres` database with the same credentials), dropped when it ends;
the controller drops any a killed worker left. The serial pass uses IOD_TEST_DATABASE_URL
itself, as a run without xdist always did.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

TESTS = Path(__file__).resolve().parent
# Directories whose every test runs in the serial pass.
SERIAL_DIRS = (TESTS / "dataplane", TESTS / "faults")


def is_serial_path(path: Path) -> bool:
    return any(path.is_relative_to(directory) for directory in SERIAL_DIRS)


def mark(items: list[pytest.Item], config: pytest.Config) -> None:
    """`serial` on the tests of SERIAL_DIRS; and the tests of a module that share a
    module-scoped fixture (a served process, a built venv) in one xdist group, so that
    `--dist loadgroup` sets it up once, on one worker, rather than once on each."""
    grouping = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if is_serial_path(item.path):
            item.add_marker(pytest.mark.serial)
        info = getattr(item, "_fixtureinfo", None)
        if (
            grouping
            and info is not None
            and any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())
        ):
            item.add_marker(pytest.mark.xdist_group(str(item.path.relative_to(TESTS))))


def worker_id() -> str | None:
    """`gw0`, `gw1`, ... in an xdist worker; None in the controller or without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER") or None


def worker_url(url: str, worker: str) -> str:
    """IOD_TEST_DATABASE_URL with the worker's database: `.../iod_test` → `.../iod_test_gw0`."""
    parsed = make_url(url)
    if not parsed.database:
        raise ValueError(f"IOD_TEST_DATABASE_URL names no database: {parsed!r}")
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(False)


def _admin(url: str) -> psycopg.Connection:
    """The server's `postgres` database, with the test database's credentials."""
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(admin.render_as_string(False), connect_timeout=10, autocommit=True)


def _drop(conn: psycopg.Connection, name: str) -> None:
    # FORCE (PostgreSQL 13+): a connection a killed served process left does not keep it.
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_worker_database(url: str, worker: str) -> str:
    """A fresh, empty database for the worker (one a killed run left is dropped first)."""
    target = worker_url(url, worker)
    name = make_url(target).database
    assert name is not None
    with _admin(url) as conn:
        _drop(conn, name)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Commits here do not wait for the WAL's flush to disk (about 1 ms each on the CI
        # machine's disk): nothing in the parallel pass crashes PostgreSQL, and a crash could
        # only lose this throwaway database's last commits, never corrupt it. The serial pass
        # (the PostgreSQL restart among its fault tests) keeps the durable default.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name))
        )
    return target


def drop_database(url: str) -> None:
    name = make_url(url).database
    assert name is not None
    with _admin(url) as conn:
        _drop(conn, name)


def drop_worker_databases(url: str) -> list[str]:
    """Every `<db>_gwN` of IOD_TEST_DATABASE_URL's database still there (a worker killed
    before its end); returns their names."""
    base = make_url(url).database
    assert base is not None
    pattern = re.compile(re.escape(base) + r"_gw\d+")
    with _admin(url) as conn:
        names = [str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")]
        left = [name for name in names if pattern.fullmatch(name)]
        for name in left:
            _drop(conn, name)
    return left
