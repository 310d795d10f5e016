"""A served process for the SDK and CLI tests (SQLite, demo data), shared by the session."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iod.client import Client, RetryPolicy
from tests.e2e.conftest import Server, base_env, iod

SMALL_SITE = "PL0000774102"  # the demo location whose capacity is one 100 Mbps connection
QUICK_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@dataclass
class Served:
    server: Server
    env: dict[str, str]
    demo: dict[str, Any]
    read_only: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def location(self) -> str:
        return str(self.demo["location_id"])

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "IOD_URL": self.url,
            "IOD_CLIENT_ID": str(self.demo["client_id"]),
            "IOD_CLIENT_SECRET": str(self.demo["client_secret"]),
        }

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("retry", QUICK_RETRY)
        return Client(self.url, self.demo["client_id"], self.demo["client_secret"], **kwargs)


def serve(tmp: Path, *, read_only: bool = True, **extra: str) -> Served:
    env = base_env(tmp, "sqlite", **extra)
    demo = json.loads(iod(env, "demo", "--json").stdout)
    reader: dict[str, str] = {}
    if read_only:
        made = iod(
            env,
            "clients",
            "create",
            "--customer",
            demo["customer_id"],
            "--scopes",
            "read",
            "--json",
        )
        reader = json.loads(made.stdout)
    server = Server(env, tmp / "server.log").start()
    return Served(server, env, demo, reader)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`iod serve` with the demo data and a read-only client of the demo customer."""
    running = serve(tmp_path_factory.mktemp("served"))
    try:
        yield running
    finally:
        running.server.stop()


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a customer's shell: no IOD_* variables, a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "config"), COLUMNS="200")
    env.update(extra)
    return env


def run_iod(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return iod(env, *args, check=False)
