"""Fault tests: served processes (`iod serve`, `iod worker`) and a database that fail for real.

`make test` runs a short version of each; `make test-faults` runs the long ones
(IOD_FAULTS_LONG=1) and prints each test's figures as a `FAULTS {...}` JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from tests.e2e.conftest import Server, backend  # noqa: F401 - the fixture, for these tests

LONG = os.environ.get("IOD_FAULTS_LONG") == "1"
BASE = "/internet-on-demand/connections"

pytestmark = pytest.mark.faults


def size(short: int, long: int) -> int:
    return long if LONG else short


def report(name: str, **figures: Any) -> None:
    """The figures docs/reliability.md quotes (shown with `make test-faults`, which runs -s)."""
    print("FAULTS " + json.dumps({"test": name, "long": LONG, **figures}, sort_keys=True))


def database_engine(env: dict[str, str]) -> Engine:
    """The served processes' database, for the test's own checks."""
    url = env.get("IOD_DATABASE_URL") or f"sqlite:///{Path(env['IOD_DATA_DIR']) / 'iod.sqlite3'}"
    return create_engine(url)


def journal(env: dict[str, str]) -> list[tuple[str, str]]:
    """The simulated network's operations (op id, name), in order."""
    path = Path(env["IOD_DATA_DIR"]) / "simulated-network.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT op_id, name FROM journal ORDER BY seq")]
    finally:
        db.close()


def terminate(server: Server, timeout: float = 60) -> int:
    """SIGTERM, then the exit status (a graceful stop is 0)."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=timeout)
    server.process = None
    return code


@pytest.fixture
def engine_for() -> Iterator[Any]:
    engines: list[Engine] = []

    def make(env: dict[str, str]) -> Engine:
        engines.append(database_engine(env))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()
