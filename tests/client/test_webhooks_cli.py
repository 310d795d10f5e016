"""`iod webhooks …` as a user runs them, against a served process delivering to real local
receivers; `iod webhooks listen` forwarding the stream, signed, to a local URL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.client.conftest import clean_env, run_iod, serve
from tests.webhook_receiver import serve as receiver

pytestmark = pytest.mark.e2e


def test_webhooks_commands_and_listen(tmp_path: Path) -> None:
    served = serve(
        tmp_path,
        read_only=False,
        IOD_WEBHOOK_ALLOW_HTTP="true",
        IOD_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        IOD_SIMULATED_PROVISION_SECONDS="0.1",
    )
    env = clean_env(tmp_path, **served.credentials)

    def iod_json(*args: str) -> object:
        result = run_iod(env, *args, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    listen: subprocess.Popen[str] | None = None
    try:
        with receiver() as hooks, receiver() as local:
            made = iod_json("webhooks", "create", hooks.url, "--type", "connection.")
            assert isinstance(made, dict) and str(made["secret"]).startswith("whsec_")
            listed = iod_json("webhooks", "list")
            assert [e["id"] for e in listed] == [made["id"]]  # type: ignore[union-attr]
            assert "secret" not in listed[0]  # type: ignore[index]

            listen = subprocess.Popen(
                [sys.executable, "-m", "iod", "webhooks", "listen", "--forward-to", local.url],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert listen.stderr is not None
            secret = listen.stderr.readline().split()[-1]
            assert secret.startswith("whsec_")
            # "Forwarding events to …": printed once the stream is open (`after=now` taken).
            assert "Forwarding" in listen.stderr.readline()

            with served.client() as sdk:
                sdk.create_connection(served.location, "100 Mbps", wait=True)
            delivered = hooks.wait_for(2)
            for item in delivered:
                Webhook(str(made["secret"])).verify(item.body, item.headers)
            forwarded = local.wait_for(2)
            assert len(forwarded) >= 2
            for item in forwarded:
                event = Webhook(secret).verify(item.body, item.headers)
                assert item.headers["webhook-id"] == f"msg_{event['data']['id']}"

            deliveries = iod_json("webhooks", "deliveries", str(made["id"]))
            assert {d["status"] for d in deliveries} == {"succeeded"}  # type: ignore[union-attr]
            first = deliveries[0]  # type: ignore[index]
            retried = iod_json("webhooks", "retry", str(made["id"]), first["id"])
            assert retried["id"] == first["id"]  # type: ignore[index]
            rotated = iod_json("webhooks", "rotate-secret", str(made["id"]))
            assert rotated["secret"] != made["secret"]  # type: ignore[index]
            gone = run_iod(env, "webhooks", "delete", str(made["id"]))
            assert gone.returncode == 0, gone.stderr
            assert run_iod(env, "webhooks", "get", str(made["id"])).returncode == 4
    finally:
        if listen is not None:
            listen.send_signal(signal.SIGINT)
            try:
                listen.wait(10)
            except subprocess.TimeoutExpired:
                listen.kill()
                listen.wait()
        served.server.stop()
