"""`iod` at its edges (issue 12 item 7): --version, a confirmation before terminating, and a
start that does not import the server (`iod --help` took 3 s when it did)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import clean_env
from tests.e2e.conftest import free_port

# What `iod --help` and the customer commands must not import: the server and its libraries.
SERVER = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "pydantic_settings",
          "psycopg", "argon2", "pyroute2", "jwt", "iod.infra.config", "iod.infra.db",
          "iod.app")  # fmt: skip
SDK = ("httpx", "pydantic")  # what only a customer command that calls the API needs

# Runs `iod ARGS…` in this process and reports, at exit, every module it imported.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["iod", *sys.argv[1:]]
from iod.cli.main import app
app()
"""


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules]


def test_help_imports_neither_the_server_nor_the_sdk(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "--help"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "connections" in result.stdout and "serve" in result.stdout
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert loaded(modules, SERVER + SDK) == []


def test_a_customer_command_imports_the_sdk_but_not_the_server(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, IOD_URL=f"http://127.0.0.1:{free_port()}", IOD_CLIENT_ID="c",
        IOD_CLIENT_SECRET="s",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "connections", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 6 and "cannot reach" in result.stderr  # it did call the API
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert loaded(modules, SERVER) == []
    assert loaded(modules, SDK) == list(SDK)


def test_the_server_command_groups_import_the_server_only_when_run(tmp_path: Path) -> None:
    """The control for the two tests above: a server command does import it."""
    env = {**clean_env(tmp_path), "IOD_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "customers", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert "sqlalchemy" in modules and "iod.infra.config" in modules


def test_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iod", "--version"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == "iod 0.1.0 (internet-on-demand)\n"


# `main` with a command that reports whether the collector runs, at once and after the pause.
GC_PROBE = """
import gc, time
import iod.cli.main as cli
cli.GC_PAUSE_SECONDS = 0.2
def command():
    print(gc.isenabled(), flush=True)
    time.sleep(1.5)
    print(gc.isenabled(), flush=True)
cli.app = command
cli.main()
print(gc.isenabled())
"""


def test_the_garbage_collector_waits_while_a_command_starts_then_runs(tmp_path: Path) -> None:
    """`iod` starts with the cyclic collector off (a seventh of its start-up CPU) and turns
    it on again after GC_PAUSE_SECONDS, whatever the command, so a long one collects."""
    result = subprocess.run(
        [sys.executable, "-c", GC_PROBE],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]


def terminate(tmp_path: Path, *args: str, answer: str | None = None) -> tuple[int, str]:
    """`iod connections terminate con_1 ARGS…` against a port nobody listens on: exit 6
    ("cannot reach") shows the command went ahead. With `answer`, stdin is a terminal that
    types it."""
    env = clean_env(
        tmp_path, IOD_URL=f"http://127.0.0.1:{free_port()}", IOD_CLIENT_ID="c",
        IOD_CLIENT_SECRET="s",
    )  # fmt: skip
    command = [sys.executable, "-m", "iod", "connections", "terminate", "con_1", *args]
    if answer is None:
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        return result.returncode, result.stderr
    main, terminal = pty.openpty()
    try:
        os.write(main, answer.encode())
        result = subprocess.run(
            command, env=env, stdin=terminal, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    finally:
        os.close(main)
        os.close(terminal)
    return result.returncode, result.stderr


def test_terminate_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    code, stderr = terminate(tmp_path)
    assert code == 2
    assert stderr == (
        "error: terminating con_1 cannot be undone: confirm with --yes "
        "(there is no terminal to ask)\n"
    )
    code, stderr = terminate(tmp_path, "--yes")
    assert code == 6 and "cannot reach" in stderr


@pytest.mark.parametrize(("answer", "code"), [("n\n", 1), ("\n", 1), ("y\n", 6)])
def test_terminate_asks_at_a_terminal(tmp_path: Path, answer: str, code: int) -> None:
    got, stderr = terminate(tmp_path, answer=answer)
    assert "Terminate con_1? This cannot be undone [y/N]:" in stderr
    assert got == code, stderr
    if code == 1:
        assert stderr.endswith("error: con_1 not terminated\n")
