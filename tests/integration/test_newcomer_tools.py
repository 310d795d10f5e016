"""`make run` refuses a taken port before starting anything, and `make test` tests PostgreSQL
in a throwaway database when a local server answers (tests/local_postgres.py). Issue 12,
item 7."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import postgres_url

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import os, psycopg; url = os.environ.get('IOD_TEST_DATABASE_URL'); print('URL', url); "
    "url and psycopg.connect(url.replace('+psycopg', '')).execute('CREATE TABLE t (x int)')"
)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_make_run_refuses_a_taken_port_before_starting_anything(
    listener: int, tmp_path: Path
) -> None:
    if shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "iod").exists():
        pytest.skip("needs make and the project's .venv (make install)")
    data = tmp_path / "data"
    result = subprocess.run(
        # -o: the install stamp counts as up to date, so this never reinstalls.
        ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed-stamp", "run", f"PORT={listener}"],
        env={**os.environ, "IOD_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"127.0.0.1:{listener} is taken" in result.stderr, result.stderr
    assert f"make run PORT={listener + 1}" in result.stderr, "the next port suggested"
    assert not data.exists(), "the demo data was made although the port was taken"


def _wrap(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.local_postgres", "--", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IOD_TEST_DATABASE_URL"}
    return {**env, **values}


def test_a_set_database_url_is_used_as_it_is() -> None:
    given = "postgresql+psycopg://nobody@127.0.0.1:1/given"
    result = _wrap(
        _env(IOD_TEST_DATABASE_URL=given), sys.executable, "-c", "import os, sys; "
        "print(os.environ['IOD_TEST_DATABASE_URL']); sys.exit(3)",
    )  # fmt: skip
    assert result.returncode == 3  # the command's own exit status
    assert result.stdout.strip() == given
    assert "local_postgres" not in result.stderr


def test_without_a_server_the_command_runs_without_postgres() -> None:
    closed = "postgresql://postgres@127.0.0.1:1/postgres"
    result = _wrap(
        _env(IOD_TEST_POSTGRES_ADMIN_URL=closed), sys.executable, "-c", "import os, sys; "
        "print(os.environ.get('IOD_TEST_DATABASE_URL')); sys.exit(5)",
    )  # fmt: skip
    assert result.returncode == 5
    assert result.stdout.strip() == "None"
    assert "no PostgreSQL at" in result.stderr and "skipped" in result.stderr


def test_a_local_server_gets_a_fresh_database_dropped_after() -> None:
    # The server of IOD_TEST_DATABASE_URL stands in for "the local one".
    server = make_url(postgres_url())
    admin = server.set(drivername="postgresql", database="postgres")
    admin_url = admin.render_as_string(hide_password=False)
    result = _wrap(
        _env(IOD_TEST_POSTGRES_ADMIN_URL=admin_url), sys.executable, "-c", PROBE
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = make_url(result.stdout.split("URL ", 1)[1].strip())
    name = url.database
    assert name is not None and name.startswith("iod_test_") and name != server.database
    assert f"created database {name}" in result.stderr
    assert f"dropped database {name}" in result.stderr
    with psycopg.connect(admin_url, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert left is None, f"{name} was not dropped"
