"""The customer commands as a user runs them: `iod` in a subprocess, `--json` parsed."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import SMALL_SITE, Served, clean_env, run_iod
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e


def sh(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """`iod <command>`, the command split as a shell would."""
    return run_iod(env, *shlex.split(command))


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def test_login_then_the_customer_commands(served: Served, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    creds = served.credentials
    url, client_id, secret = creds["IOD_URL"], creds["IOD_CLIENT_ID"], creds["IOD_CLIENT_SECRET"]
    login = as_json(
        sh(env, f"login --url {url}/ --client-id {client_id} --client-secret {secret} --json")
    )
    profile = tmp_path / "config" / "iod" / "profile.json"
    assert login == {
        "url": url,
        "client_id": client_id,
        "scope": "read write",
        "profile": str(profile),
    }
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert stat.S_IMODE(profile.parent.stat().st_mode) == 0o700
    assert json.loads(profile.read_text())["client_secret"] == secret
    assert not (tmp_path / "home" / ".config").exists()

    create = f'connections create --location {served.location} --bandwidth "200 Mbps"'
    made = as_json(sh(env, f'{create} --description "CLI test" --wait --json'))
    assert made["status"] == "active" and made["bandwidth"] == "200 Mbps"
    conn = made["id"]

    elsewhere = {**env, "IOD_URL": f"http://127.0.0.1:{free_port()}"}
    runs = [(env, f"connections get {conn} --json"), (env, "connections list --json"),
            (env, "connections list"), (elsewhere, "connections list")]  # fmt: skip
    with ThreadPoolExecutor() as pool:
        got, listed, table, overridden = pool.map(lambda run: sh(*run), runs)
    assert as_json(got)["description"] == "CLI test"
    assert conn in [c["id"] for c in as_json(listed)["connections"]]
    assert conn in ok(table).stdout and "200 Mbps" in table.stdout
    # The variables override the profile.
    assert overridden.returncode == 6 and elsewhere["IOD_URL"] in overridden.stderr

    changed = as_json(sh(env, f"bandwidth set {conn} 500Mbps --wait --json"))
    assert changed["bandwidth"] == "500 Mbps" and changed["pendingBandwidthChanges"] == []
    assert changed["change"]["status"] == "applied"

    later = as_json(sh(env, f'bandwidth set {conn} "1 Gbps" --in 2h --json'))
    assert later["change"]["status"] == "scheduled" and later["bandwidth"] == "500 Mbps"
    when = datetime.fromisoformat(later["change"]["effectiveDate"])
    assert abs(when - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(seconds=30)

    watched = ok(sh(env, f"connections watch {conn} --timeout 0.5 --json"))
    states = [json.loads(line) for line in watched.stdout.splitlines()]
    assert states[0]["id"] == conn and states[0]["bandwidth"] == "500 Mbps"
    assert states[0]["pendingBandwidthChanges"][0]["bandwidth"] == "1 Gbps"


def test_bad_input_gets_a_message_and_an_exit_code(served: Served, tmp_path: Path) -> None:
    env = clean_env(tmp_path, **served.credentials)
    loc = served.location
    made = as_json(sh(env, f'connections create --location {loc} --bandwidth "10 Mbps" --json'))
    conn = made["id"]
    sh(env, f'connections create --location {SMALL_SITE} --bandwidth "100 Mbps"')  # it is full
    reader = {
        "IOD_CLIENT_ID": served.read_only["client_id"],
        "IOD_CLIENT_SECRET": served.read_only["client_secret"],
    }
    nowhere = {"IOD_URL": f"http://127.0.0.1:{free_port()}"}
    fresh = clean_env(tmp_path / "fresh")  # never logged in, no variables
    # (environment, command, exit code, part of the one-line message)
    cases: list[tuple[dict[str, str], str, int, str]] = [
        (env, f"connections create --location {loc} --bandwidth fast", 1,
         "/bandwidth: bandwidth must be a positive number followed by Mbps or Gbps"),
        (env, f'bandwidth set {conn} "7 Mbps"', 1, "not offered"),
        (env, f'bandwidth set {conn} "1 Gbps" --at 2099-01-01T00:00:00Z', 1, "/effectiveDate"),
        (env, "connections get con_nonexistent", 4, "no connection 'con_nonexistent'"),
        (env, 'bandwidth set con_nonexistent "1 Gbps"', 4, "no connection"),
        (env, f'connections create --location {SMALL_SITE} --bandwidth "100 Mbps"', 5,
         "capacity"),
        ({**env, "IOD_CLIENT_SECRET": "wrong"}, "connections list", 3,
         "the credentials were refused (invalid_client"),
        ({**env, **reader}, f'connections create --location {loc} --bandwidth "10 Mbps"', 3,
         "not allowed: "),
        ({**env, **nowhere}, "connections list", 6, "cannot reach http://127.0.0.1:"),
        ({**env, "IOD_URL": "ftp://example.com"}, "connections list", 2, "must look like"),
        (env, f"bandwidth set {conn} 1Gbps --in 2x", 2, "--in: '2x' is not a duration"),
        (env, f"bandwidth set {conn} 1Gbps --in 99999999999h", 2, "is too far ahead"),
        (env, f"bandwidth set {conn} 1Gbps --in 99999999d", 2, "is too far ahead"),
        (env, f"bandwidth set {conn} 1Gbps --at tomorrow", 2, "--at: 'tomorrow' is not"),
        (env, f"bandwidth set {conn} 1Gbps --at 2099-01-01 --in 1h", 2, "not both"),
        (fresh, "connections list", 2, "not logged in: run `iod login`"),
        (fresh, "login", 2, "login needs a URL, a client id and a secret"),
        ({**fresh, **nowhere}, "login --client-id x --client-secret y", 6, "cannot reach"),
        (fresh, f"login --url {served.url} --client-id demo-client --client-secret wrong", 3,
         "the credentials were refused"),
    ]  # fmt: skip

    def attempt(case: tuple[dict[str, str], str, int, str]) -> str | None:
        run_env, command, code, message = case
        result = sh(run_env, command)
        lines = result.stderr.splitlines()
        if (
            result.returncode == code
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and message in lines[0]
            and result.stdout == ""
        ):
            return None
        return f"iod {command}: exit {result.returncode}, stderr {result.stderr!r}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = [failure for failure in pool.map(attempt, cases) if failure]
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "fresh" / "config" / "iod" / "profile.json").exists()


def test_lifecycle_and_change_commands(served: Served, tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), **served.credentials}
    create = f'connections create --location {served.location} --bandwidth "100 Mbps"'
    conn = as_json(sh(env, f"{create} --wait --json"))["id"]
    start = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    end = (datetime.now(UTC) + timedelta(hours=3)).isoformat(timespec="seconds")
    boost = as_json(sh(env, f'bandwidth set {conn} "1 Gbps" --at {start} --until {end} --json'))
    assert boost["revertChange"]["bandwidth"] == "100 Mbps"
    listed = as_json(sh(env, f"bandwidth changes {conn} --json"))["bandwidthChanges"]
    assert [c["status"] for c in listed] == ["scheduled", "scheduled"]
    cancelled = as_json(sh(env, f"bandwidth cancel {conn} {boost['change']['id']} --json"))
    assert cancelled["status"] == "cancelled"
    listed = as_json(sh(env, f"bandwidth changes {conn} --json"))["bandwidthChanges"]
    assert [c["status"] for c in listed] == ["cancelled", "cancelled"]
    again = sh(env, f"bandwidth cancel {conn} {boost['change']['id']}")
    assert again.returncode == 5 and "scheduled" in again.stderr + again.stdout
    suspended = as_json(sh(env, f"connections suspend {conn} --json"))
    assert suspended["targetStatus"] == "suspended"
    terminated = as_json(sh(env, f"connections terminate {conn} --yes --json"))
    assert terminated["targetStatus"] == "terminated"
    refused = sh(env, f"connections resume {conn}")
    assert refused.returncode == 5
    for _ in range(100):
        if as_json(sh(env, f"connections get {conn} --json"))["status"] == "terminated":
            break
    listed = as_json(sh(env, "connections list --status terminated --json"))["connections"]
    assert conn in [c["id"] for c in listed]
    assert conn not in [c["id"] for c in as_json(sh(env, "connections list --json"))["connections"]]
    bad = sh(env, f'bandwidth set {conn} "1 Gbps" --until 2h')
    assert bad.returncode == 2 and "--until" in bad.stderr
