"""Secrets and tokens never reach the logs: a full flow against a served process with JSON
logs at DEBUG, then every line of its stdout and stderr is searched for them."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import httpx

from tests.e2e.conftest import Server, base_env, iod, token_for

BASE = "/internet-on-demand/connections"


def basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_no_secret_or_token_appears_in_the_logs(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite", IOD_LOG_LEVEL="DEBUG", IOD_LOG_JSON="true")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    client_id, first_secret = demo["client_id"], demo["client_secret"]
    wrong_secret = secrets.token_urlsafe(32)
    log = tmp_path / "server.log"
    server = Server(env, log).start()
    sensitive: list[str] = [first_secret, wrong_secret]
    try:
        url = server.url
        # Tokens with Basic and with form credentials.
        basic_token = token_for(url, client_id, first_secret)
        form = httpx.post(
            f"{url}/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": first_secret},
        )  # fmt: skip
        assert form.status_code == 200
        form_token = form.json()["access_token"]
        sensitive += [basic_token, form_token]

        # Bearer requests: create, read, change, list; and ones that are refused.
        h = {"Authorization": f"Bearer {basic_token}"}
        created = httpx.post(
            f"{url}{BASE}", json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]},
            headers=h,
        )  # fmt: skip
        assert created.status_code == 201
        conn = f"{url}{BASE}/{created.json()['id']}"
        assert httpx.get(conn, headers={"Authorization": f"Bearer {form_token}"}).is_success
        assert httpx.put(f"{conn}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=h).is_success
        assert (
            httpx.put(f"{conn}/bandwidth", json={"bandwidth": "fast"}, headers=h).status_code == 400
        )
        assert httpx.get(f"{url}{BASE}?access_token={basic_token}", headers=h).is_success
        tampered = basic_token[:-4] + ("AAAA" if not basic_token.endswith("AAAA") else "BBBB")
        sensitive.append(tampered)
        bad_headers = [
            f"Bearer {tampered}",
            f"Bearer {wrong_secret}",
            f"Basic {basic(client_id, first_secret)}",
            f"bearer  {form_token}x",
        ]
        for header in bad_headers:
            assert httpx.get(f"{url}{BASE}", headers={"Authorization": header}).status_code == 401

        # Bad client credentials, every way.
        refusals = [
            {"auth": (client_id, wrong_secret)},
            {"auth": ("cli_unknown", first_secret)},
            {"data_extra": {"client_id": client_id, "client_secret": wrong_secret}},
            {"headers": {"Authorization": f"Basic {basic(client_id, wrong_secret)}x"}},
            {"headers": {"Authorization": f"Basic {wrong_secret}"}},
        ]
        for refusal in refusals:
            data = {"grant_type": "client_credentials", **refusal.get("data_extra", {})}
            response = httpx.post(
                f"{url}/oauth2/token", data=data, auth=refusal.get("auth"),
                headers=refusal.get("headers"),
            )  # fmt: skip
            assert response.status_code == 401, (refusal, response.text)
        both = httpx.post(
            f"{url}/oauth2/token", auth=(client_id, first_secret),
            data={"grant_type": "client_credentials", "client_secret": wrong_secret},
        )  # fmt: skip
        assert both.status_code == 400
        as_json = httpx.post(
            f"{url}/oauth2/token",
            json={"grant_type": "client_credentials", "client_secret": wrong_secret},
        )
        assert as_json.status_code == 400

        # Secret rotation while serving: the new secret, the old one in its grace period,
        # then a rotation without grace and the refusals that follow.
        rotated = json.loads(iod(env, "clients", "rotate-secret", client_id, "--json").stdout)
        second_secret = rotated["client_secret"]
        sensitive.append(second_secret)
        second_token = token_for(url, client_id, second_secret)
        grace_token = token_for(url, client_id, first_secret)
        sensitive += [second_token, grace_token]
        final = json.loads(
            iod(env, "clients", "rotate-secret", client_id, "--grace", "0", "--json").stdout
        )
        sensitive.append(final["client_secret"])
        sensitive.append(token_for(url, client_id, final["client_secret"]))
        for old in (first_secret, second_secret):
            refused = httpx.post(
                f"{url}/oauth2/token", data={"grant_type": "client_credentials"},
                auth=(client_id, old),
            )  # fmt: skip
            assert refused.status_code == 401
    finally:
        server.stop()

    text = log.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    # The log is there and saw the whole flow (so an empty log cannot pass).
    assert sum(1 for e in events if e.get("event") == "request") >= 20
    assert {e.get("status") for e in events if e.get("event") == "request"} >= {200, 201, 400, 401}
    fragments = set()
    for value in sensitive:
        fragments.add(value)
        if value.count(".") == 2:  # a JWT: no part of its payload or signature either
            fragments.update(part for part in value.split(".")[1:] if part)
    fragments.add(basic(client_id, first_secret))
    leaked = [f for f in fragments if f in text]
    assert not leaked, f"{len(leaked)} secret or token fragments found in the server's logs"
