"""Key rotation across served processes, client secret rotation and the audit log through
the admin CLI, as an operator runs them: `iod serve` subprocesses and `iod` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.e2e.conftest import Server, base_env, iod, token_for, wait_for

BASE = "/internet-on-demand/connections"
REFRESH = 0.5  # IOD_KEY_REFRESH_SECONDS for these servers: a rotation activates after 1 s


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jwks_kids(server: Server) -> list[str]:
    return [k["kid"] for k in httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"]]


def status(server: Server, token: str) -> int:
    h = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.url}{BASE}", headers=h, timeout=10).status_code


def test_a_rotation_by_the_cli_reaches_every_served_process(tmp_path: Path, backend: str) -> None:
    env = base_env(tmp_path, backend, IOD_KEY_REFRESH_SECONDS=str(REFRESH))
    demo = json.loads(iod(env, "demo", "--json").stdout)
    # Two API processes of their own, sharing the database: a token from one must work on the
    # other (a load balancer sends requests anywhere).
    first = Server(env, tmp_path / "first.log").start()
    second = Server(env, tmp_path / "second.log", "--no-worker").start()
    try:
        creds = (demo["client_id"], demo["client_secret"])
        old_token = token_for(first.url, *creds)
        old_kid = kid_of(old_token)
        assert jwks_kids(first) == jwks_kids(second) == [old_kid]

        rotated = json.loads(iod(env, "keys", "rotate", "--json").stdout)
        new_kid = rotated["kid"]
        assert rotated["replaces"] == old_kid and rotated["state"] == "next"
        # Published by both within the refresh interval, before it signs anything.
        for server in (first, second):
            wait_for(lambda s=server: jwks_kids(s) == [old_kid, new_kid], timeout=10)
        # Then it signs, on both processes.
        tokens = {}

        def new_token(server: Server) -> str | None:
            token = token_for(server.url, *creds)
            return token if kid_of(token) == new_kid else None

        for server in (first, second):
            tokens[server.url] = wait_for(lambda s=server: new_token(s), timeout=10)
        # Every token verifies everywhere: the new ones, and the old one until it expires.
        for server in (first, second):
            for token in [old_token, *tokens.values()]:
                assert status(server, token) == 200

        listed = json.loads(iod(env, "keys", "list", "--json").stdout)["keys"]
        assert [(k["kid"], k["state"]) for k in listed] == [
            (old_kid, "verifying"),
            (new_kid, "signing"),
        ]
        assert "iod keys" not in iod(env, "keys", "list").stdout  # a table, no error

        # A kid is a base64url thumbprint: one in 64 starts with '-', hence the '--'.
        refused = iod(env, "keys", "retire", "--", old_kid, check=False)
        assert refused.returncode == 1
        assert "may be valid until" in " ".join(refused.stderr.split())
        signing = iod(env, "keys", "retire", "--", new_kid, check=False)
        assert signing.returncode == 1 and "iod keys rotate" in " ".join(signing.stderr.split())
        for server in (first, second):
            assert status(server, old_token) == 200  # a refusal changes nothing

        iod(env, "keys", "retire", "--force", "--", old_kid)
        for server in (first, second):
            wait_for(lambda s=server: status(s, old_token) == 401, timeout=10)
            assert jwks_kids(server) == [new_kid]
            assert all(status(server, t) == 200 for t in tokens.values())

        actions = json.loads(iod(env, "audit", "list", "--json").stdout)["events"]
        keys_done = [
            (e["action"], e["target"]) for e in actions if e["targetType"] == "signing_key"
        ]
        assert keys_done == [("key.retire", old_kid), ("key.rotate", new_kid)]
    finally:
        first.stop()
        second.stop()


def test_admin_changes_are_audited_and_readable(tmp_path: Path, backend: str) -> None:
    env = base_env(tmp_path, backend)
    demo = json.loads(iod(env, "demo", "--json").stdout)
    customer = json.loads(iod(env, "customers", "create", "Globex", "--json").stdout)
    client = json.loads(
        iod(env, "clients", "create", "--customer", customer["id"], "--json").stdout
    )
    iod(env, "clients", "disable", client["client_id"])
    iod(env, "clients", "enable", client["client_id"])
    rotated = json.loads(
        iod(env, "clients", "rotate-secret", client["client_id"], "--grace", "2h", "--json").stdout
    )
    assert rotated["client_secret"] != client["client_secret"]
    assert rotated["previous_secret_valid_until"]
    bad = iod(env, "clients", "rotate-secret", client["client_id"], "--grace", "soon", check=False)
    assert bad.returncode == 2 and "--grace" in bad.stderr
    missing = iod(env, "clients", "rotate-secret", "cli_nope", check=False)
    assert missing.returncode == 1 and "no client" in " ".join(missing.stderr.split())

    server = Server(env, tmp_path / "server.log").start()
    try:
        token = token_for(server.url, client["client_id"], rotated["client_secret"])
        old = token_for(server.url, client["client_id"], client["client_secret"])  # in grace
        assert kid_of(token) == kid_of(old)
        # A forged X-Forwarded-For from the loopback: no trusted proxy, so not believed.
        h = {
            "Authorization": f"Bearer {token}",
            "X-Request-Id": "audit-e2e-1",
            "X-Forwarded-For": "203.0.113.7",
        }
        created = httpx.post(
            f"{server.url}{BASE}",
            json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]},
            headers=h,
        )
        assert created.status_code == 201, created.text
        conn_id = created.json()["id"]
    finally:
        server.stop()

    events = json.loads(iod(env, "audit", "list", "--json").stdout)["events"]
    mine = [e for e in events if e["customerId"] == customer["id"]]
    assert [e["action"] for e in mine] == [
        "connection.create",
        "client.rotate_secret",
        "client.enable",
        "client.disable",
        "client.create",
        "customer.create",
    ]
    api_event, *cli_events = mine
    assert api_event["actorType"] == "client" and api_event["actor"] == client["client_id"]
    assert api_event["source"] == "127.0.0.1"
    assert api_event["requestId"] == created.headers["x-request-id"] != "audit-e2e-1"
    assert api_event["target"] == conn_id
    for event in cli_events:
        assert event["actorType"] == "operator" and event["source"] == "cli"
        assert event["actor"]  # the OS user
    assert cli_events[0]["details"]["graceSeconds"] == 7200
    # Secrets are never part of the audit log.
    everything = json.dumps(events)
    for secret in (client["client_secret"], rotated["client_secret"], demo["client_secret"]):
        assert secret not in everything

    def listed(*args: str) -> list[dict[str, Any]]:
        return list(json.loads(iod(env, "audit", "list", "--json", *args).stdout)["events"])

    assert [e["action"] for e in listed("--target", conn_id)] == ["connection.create"]
    assert len(listed("--customer", customer["id"], "--limit", "2")) == 2
    assert listed("--since", "2h") == events
    assert listed("--since", "2999-01-01T00:00:00Z") == []
    table = iod({**env, "COLUMNS": "300"}, "audit", "list", "--customer", customer["id"]).stdout
    assert "connection.create" in table and "client.rotate_secret" in table
    wrong = iod(env, "audit", "list", "--since", "yesterday-ish", check=False)
    assert wrong.returncode == 2 and "--since" in wrong.stderr
