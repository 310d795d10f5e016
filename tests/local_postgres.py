"""Runs a command (`make test`'s pytest) with a throwaway PostgreSQL database when one answers.

`python -m tests.local_postgres -- CMD ...`: unless IOD_TEST_DATABASE_URL is already set (CI
sets it), it connects to IOD_TEST_POSTGRES_ADMIN_URL (default: the local server's `postgres`
database as user `postgres`), creates a fresh database `iod_test_<random>`, runs CMD with
IOD_TEST_DATABASE_URL naming it, and drops it afterwards, whatever CMD did. When nothing
answers, CMD runs as it is (the PostgreSQL tests skip) and a line says so. So a newcomer's
`make test` on a machine with a local PostgreSQL tests both databases, and never touches an
existing database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _say(message: str) -> None:
    print(f"local_postgres: {message}", file=sys.stderr, flush=True)


def _admin() -> tuple[str, psycopg.Connection | None]:
    url = os.environ.get("IOD_TEST_POSTGRES_ADMIN_URL", DEFAULT_ADMIN_URL)
    try:
        return url, psycopg.connect(url, connect_timeout=2, autocommit=True)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _say(f"no PostgreSQL at {make_url(url).render_as_string()} ({first}); "
             "PostgreSQL tests will be skipped")  # fmt: skip
        return url, None


def run(command: list[str]) -> int:
    if os.environ.get("IOD_TEST_DATABASE_URL"):
        return subprocess.call(command)
    url, admin = _admin()
    if admin is None:
        return subprocess.call(command)
    name = f"iod_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        target = make_url(url).set(drivername="postgresql+psycopg", database=name)
        _say(f"created database {name}; it is dropped when the tests end")
        env = {**os.environ, "IOD_TEST_DATABASE_URL": target.render_as_string(False)}
        try:
            return subprocess.call(command, env=env)
        finally:
            # FORCE (PostgreSQL 13+): a connection a killed test left behind does not keep it.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            _say(f"dropped database {name}")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m tests.local_postgres [--] COMMAND [ARG...]")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
