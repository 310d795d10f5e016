"""The README's curl walkthrough, run as written against a served process."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.conftest import Server, base_env, iod

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Five minutes with curl", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README has a walkthrough"
    return match.group(1)


def test_readme_walkthrough_works(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite", IOD_SIMULATED_PROVISION_SECONDS="1")
    iod(env, "demo", "--json")
    server = Server(env, tmp_path / "server.log").start()
    try:
        script = walkthrough()
        # The only change: the server listens on a free port, not 8080.
        replaced = script.replace("iod demo --env)", f"iod demo --env --url {server.url})")
        assert replaced != script
        script = replaced
        script = script.replace("/tmp/iod-conn.json", str(tmp_path / "conn.json"))
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    created, fetched, changed, scheduled, listed, bad = documents
    assert created["status"] == "provisioning"
    assert fetched["status"] == "active" and fetched["bandwidth"] == "100 Mbps"
    assert changed["pendingBandwidthChanges"][0]["bandwidth"] == "1 Gbps"
    assert scheduled["pendingBandwidthChanges"][-1]["bandwidth"] == "500 Mbps"
    assert [c["id"] for c in listed["connections"]] == [created["id"]]
    assert bad["status"] == 400 and bad["errors"][0]["pointer"] == "/bandwidth"
