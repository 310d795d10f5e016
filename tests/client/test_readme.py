"""The README's SDK and command-line examples, run as written against a served process."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Served, clean_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def block(section: str, language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    text = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", text, re.S)
    assert match, f"the README's {section} section has a {language} example"
    return match.group(1)


def test_the_sdk_example_runs(served: Served, tmp_path: Path) -> None:
    # Run as the README says: saved as example.py, with the project's Python (.venv/bin/python,
    # this interpreter's environment; a system python3 has no iod.client).
    readme = (ROOT / "README.md").read_text()
    assert "`.venv/bin/python example.py`" in readme.split("## Python SDK\n", 1)[1].split("```")[0]
    (tmp_path / "example.py").write_text(block("Python SDK", "python"))
    env = clean_env(tmp_path, **served.credentials, IOD_LOCATION_ID=served.location)
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"con_\w+ active 100 Mbps", lines[0])
    assert lines[1] == "1 Gbps applied"
    assert lines[2] == "1 Gbps 500 Mbps"
    assert re.fullmatch(r"400 /bandwidth \w+", lines[-1])
    created = lines[0].split()[0]
    assert f"{created} active 1 Gbps" in lines[3:-1]


def test_the_command_line_example_runs(served: Served, tmp_path: Path) -> None:
    script = block("Command line for customers", "sh")
    replaced = script.replace("iod demo --env)", f"iod demo --env --url {served.url})")
    assert replaced != script  # the only change: the server is not on port 8080
    env = clean_env(tmp_path, **{k: v for k, v in served.env.items() if k.startswith("IOD_")})
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", replaced],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    profile = tmp_path / "config" / "iod" / "profile.json"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    out = result.stdout
    assert f"logged in to {served.url} as demo-client" in out
    assert re.search(r"connection con_\w+ is active", out)
    assert re.search(r"1 Gbps in force on con_\w+ \(change chg_\w+ applied\)", out)
    assert re.search(r"change chg_\w+ accepted: 500 Mbps", out)
    assert result.stderr == ""
