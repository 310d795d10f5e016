"""The Lumen-compatible API against `iod serve`: a stdlib-urllib client written from the
issue's shapes (tests/e2e/lumen_client.py), the admin CLI's customer numbers, and
schemathesis against /lumen/openapi.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for
from tests.e2e.test_conformance import BUDGET, ST, TIMEOUT, _report

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("lumen_client.py")
CONFIG = Path(__file__).with_name("schemathesis-lumen.toml")
NUMBER = "1-LUMEN19"
# Rates every hour up to now + argv[1] hours on the database of the environment's settings.
RATE = """
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from iod.billing import metering
from iod.infra.config import Settings
from iod.infra.runtime import open_database
db = open_database(Settings(), auto_migrate=False)
now = datetime.now(UTC) + timedelta(hours=float(sys.argv[1]))
with db.write() as session:
    print(metering.rate_due(session, now, fraction=Decimal(1), settle_seconds=60, batch=500,
                            budget=100_000))
"""


@pytest.fixture(scope="module")
def lumen_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("lumen")
    env = base_env(
        # A change takes 1.5 s on the network: long enough to see `Change pending`.
        tmp,
        "sqlite",
        IOD_SIMULATED_PROVISION_SECONDS="0",
        IOD_SIMULATED_CHANGE_SECONDS="1.5",
    )
    demo = json.loads(iod(env, "demo", "--json").stdout)
    assert demo["customer_number"].startswith("1-")  # one of its own from the start
    changed = json.loads(
        iod(env, "customers", "set-number", demo["customer_id"], NUMBER, "--json").stdout
    )
    assert changed == {"id": demo["customer_id"], "customer_number": NUMBER}
    assert json.loads(iod(env, "demo", "--json").stdout)["customer_number"] == NUMBER
    taken = iod(env, "customers", "create", "Other", "--customer-number", NUMBER, check=False)
    assert taken.returncode == 1 and "belongs to another customer" in taken.stderr
    server = Server(env, tmp / "server.log").start()
    try:
        yield server, demo
    finally:
        server.stop()


def test_a_lumen_client_runs_the_flow(lumen_server: tuple[Server, dict[str, Any]]) -> None:
    server, demo = lumen_server
    # Ordered through our API; the Lumen client finds it, and disconnects it, through its own.
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    ours = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{server.url}/internet-on-demand/connections",
        json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]},
        headers=ours,
    ).json()
    url = f"{server.url}/internet-on-demand/connections/{created['id']}"
    wait_for(lambda: httpx.get(url, headers=ours).json()["status"] == "active")
    lumen = {**ours, "x-customer-number": NUMBER}
    items = httpx.get(f"{server.url}/ProductInventory/v1/inventory", headers=lumen).json()
    (item,) = [i for i in items["serviceInventory"] if i["UNI Service ID"] == created["id"]]
    args = [server.url, demo["client_id"], demo["client_secret"], NUMBER, item["serviceId"]]
    run = subprocess.run(
        [sys.executable, str(CLIENT), "flow", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    added, ok = run.stdout.split()[-2:]
    assert ok == "ok"
    # One state: our API shows what the Lumen orders did.
    connection = httpx.get(url, headers=ours).json()
    assert (connection["status"], connection["bandwidth"]) == ("active", "1 Gbps")
    (new,) = httpx.get(
        f"{server.url}/ProductInventory/v1/inventory", params={"serviceId": added}, headers=lumen
    ).json()["serviceInventory"]
    theirs = httpx.get(f"{url[: -len(created['id'])]}{new['UNI Service ID']}", headers=ours)
    assert theirs.json()["status"] == "terminated"
    # Metering, four hours ahead (a direct rating call on the server's database: the
    # served clock is real), then the client reads the hours at each speed in its bills.
    rated = subprocess.run(
        [sys.executable, "-c", RATE, "4"], env=server.env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert rated.returncode == 0 and int(rated.stdout) > 0, rated.stdout + rated.stderr
    run = subprocess.run(
        [sys.executable, str(CLIENT), "bills", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


def test_schemathesis_against_the_lumen_openapi(
    lumen_server: tuple[Server, dict[str, Any]], tmp_path: Path
) -> None:
    server, demo = lumen_server
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    result = subprocess.run(
        [str(ST), "--config-file", str(CONFIG), "run", f"{server.url}/lumen/openapi.json",
         "-H", f"Authorization: Bearer {token}", "-H", f"x-customer-number: {NUMBER}",
         "--checks", "all", *BUDGET],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, _report(result)
    # Nothing of the Lumen API in ours, and the other way round.
    ours = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/ProductInventory/v1/inventory" not in ours
    lumen = httpx.get(f"{server.url}/lumen/openapi.json").json()["paths"]
    assert "/internet-on-demand/connections" not in lumen


def test_readme_example(lumen_server: tuple[Server, dict[str, Any]]) -> None:
    server, _ = lumen_server
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Lumen-compatible API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README's Lumen section has an example"
    # The only change: the server listens on a free port, not 8080.
    script = match.group(1).replace("iod demo --env)", f"iod demo --env --url {server.url})")
    assert script != match.group(1)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    inventory = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(len(i["serviceId"]) == 11 for i in inventory["serviceInventory"])
