"""The SDK as its own distribution: `pip install clients/python` in a fresh virtual environment
(no server, no FastAPI, no SQLAlchemy), then the SDK and the customer commands of that
environment against a served process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import Served, clean_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "python"
SERVER_ONLY = ("fastapi", "sqlalchemy", "alembic", "uvicorn", "pydantic_settings", "pyroute2")


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Runs a command outside the repository (whose working tree holds the server's metadata,
    internet_on_demand.egg-info, which `python -m` would find in its working directory)."""
    result = subprocess.run(
        [str(a) for a in args],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment holding iod-client alone, built from a copy of clients/python
    (pip builds in the source tree; the copy keeps the repository clean)."""
    tmp = tmp_path_factory.mktemp("sdk-alone")
    source = tmp / "iod-client"
    shutil.copytree(
        SDK, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp / "venv"
    env = clean_env(tmp)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    run(sys.executable, "-m", "venv", venv, env=env)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", source, env=env)
    yield venv


def test_the_sdk_installs_alone_without_the_server(sdk_venv: Path) -> None:
    python = sdk_venv / "bin" / "python"
    probe = textwrap.dedent(
        f"""
        import importlib.metadata, importlib.util, json
        import iod.client, iod.client.cli
        print(json.dumps({{
            "missing": [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is None],
            "server": importlib.util.find_spec("iod.infra") is not None,
            "sdk": iod.client.__file__,
            "distributions": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
        }}))
        """
    )
    found = json.loads(run(python, "-I", "-c", probe))
    assert found["missing"] == list(SERVER_ONLY)  # FastAPI, SQLAlchemy and the rest: absent
    assert found["server"] is False
    assert found["sdk"].startswith(str(sdk_venv))  # the installed copy, not the source tree
    assert "iod-client" in found["distributions"]
    assert "internet-on-demand" not in found["distributions"]


def test_the_sdk_alone_works_against_a_served_process(
    served: Served, sdk_venv: Path, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from iod.client import Client, InvalidRequest

        assert "fastapi" not in sys.modules and "sqlalchemy" not in sys.modules
        with Client() as api:
            made = api.create_connection(os.environ["IOD_LOCATION_ID"], "100 Mbps", wait=True)
            print(made.status, made.bandwidth)
            print(api.update_bandwidth(made.id, "1 Gbps", wait=True).bandwidth)
            print(made.id in [c.id for c in api.list_connections()])
            try:
                api.update_bandwidth(made.id, "fast")
            except InvalidRequest as exc:
                print(exc.status, exc.errors[0].pointer)
        for name in ("fastapi", "sqlalchemy"):
            try:
                __import__(name)
            except ImportError:
                print(name, "absent")
        """
    )
    env = clean_env(tmp_path, **served.credentials, IOD_LOCATION_ID=served.location)
    env.pop("PYTHONPATH", None)
    out = run(sdk_venv / "bin" / "python", "-I", "-c", script, env=env, timeout=120)
    assert out.splitlines() == [
        "active 100 Mbps",
        "1 Gbps",
        "True",
        "400 /bandwidth",
        "fastapi absent",
        "sqlalchemy absent",
    ]


def test_the_customer_commands_alone(served: Served, sdk_venv: Path, tmp_path: Path) -> None:
    iod = sdk_venv / "bin" / "iod"
    env = clean_env(tmp_path, **served.credentials)
    env.pop("PYTHONPATH", None)
    assert run(iod, "--version", env=env).strip() == "iod 0.1.0 (iod-client)"
    module = run(sdk_venv / "bin" / "python", "-m", "iod.client", "--version", env=env)
    assert module.strip() == "iod 0.1.0 (iod-client)"
    help_text = run(iod, "--help", env=env)
    assert "connections" in help_text and "bandwidth" in help_text and "login" in help_text
    assert "serve" not in help_text and "customers" not in help_text  # no server commands
    made = json.loads(
        run(iod, "connections", "create", "--location", served.location,
            "--bandwidth", "10 Mbps", "--json", env=env)
    )  # fmt: skip
    listed = json.loads(run(iod, "connections", "list", "--json", env=env))
    assert made["id"] in [c["id"] for c in listed["connections"]]
    ended = json.loads(run(iod, "connections", "terminate", made["id"], "--yes", "--json", env=env))
    assert ended["targetStatus"] == "terminated"
