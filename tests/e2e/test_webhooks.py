"""Webhooks against `iod serve` and a separate `iod worker`, with real local receivers:
every event arrives once per endpoint in a happy run, signed; a receiver down for a while
gets everything once it is back (short retry schedule); a worker SIGKILLed mid-delivery
leaves the delivery to the next worker, which sends it again with the same webhook-id."""

from __future__ import annotations

import json
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from iod.client import webhooks
from tests.conftest import postgres_url
from tests.e2e.conftest import (
    Server,
    base_env,
    free_port,
    iod,
    start_worker,
    token_for,
    wait_for,
)
from tests.webhook_receiver import Receiver, serve

HOOKS = "/internet-on-demand/webhook-endpoints"
BASE = "/internet-on-demand/connections"
FEED = "/internet-on-demand/events"


def event_ids(receiver: Receiver, secret: str) -> list[str]:
    """The feed ids of what the receiver got, each signature checked with the SDK."""
    ids = []
    for item in list(receiver.received):
        body = webhooks.verify(item.body, item.headers, secret)
        assert item.headers["webhook-id"].startswith("msg_")
        ids.append(body["data"]["id"])
    return ids


def test_webhooks_end_to_end(tmp_path: Path) -> None:
    # PostgreSQL only (the API tests run both backends): the production setup, workers in
    # their own processes woken by NOTIFY, and it keeps the suite's time down.
    postgres_url()
    env = base_env(
        tmp_path,
        "postgres",
        IOD_WEBHOOK_ALLOW_HTTP="true",
        IOD_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        IOD_WEBHOOK_RETRY_SCHEDULE="0,0.2,0.3,0.5" + ",0.5" * 20,
        IOD_WEBHOOK_TIMEOUT_SECONDS="2",
        IOD_JOB_LEASE_SECONDS="3",
        IOD_WORKER_POLL_SECONDS="0.1",
        IOD_SIMULATED_PROVISION_SECONDS="0.1",
    )
    demo = json.loads(iod(env, "demo", "--json").stdout)
    server = Server(env, tmp_path / "api.log", "--no-worker").start()
    worker = start_worker(env, tmp_path / "worker.log")
    stack = ExitStack()
    try:
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        http = stack.enter_context(
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
        )
        every = stack.enter_context(serve())
        second = ExitStack()
        # A port of this worker's range, not the kernel's: it is bound again after being
        # closed for a while (part 2), when an outgoing connection may have taken an
        # ephemeral one.
        only = second.enter_context(serve(port=free_port()))
        start = http.get(FEED, params={"after": "now"}).json()["nextCursor"]
        hook_all = http.post(HOOKS, json={"url": every.url}).json()
        hook_conn = http.post(HOOKS, json={"url": only.url, "eventTypes": ["connection."]}).json()

        def expected() -> tuple[list[str], list[str]]:
            feed = http.get(FEED, params={"after": start, "limit": 1000}).json()["events"]
            return [e["id"] for e in feed], [
                e["id"] for e in feed if e["type"].startswith("connection.")
            ]

        # 1. A happy run: each event once per endpoint.
        created = http.post(BASE, json={"bandwidth": "100 Mbps", "locationId": demo["location_id"]})
        connection = created.json()["id"]
        wait_for(lambda: http.get(f"{BASE}/{connection}").json()["status"] == "active")
        http.put(f"{BASE}/{connection}/bandwidth", json={"bandwidth": "1 Gbps"})
        wait_for(lambda: http.get(f"{BASE}/{connection}").json()["bandwidth"] == "1 Gbps")
        all_ids, conn_ids = expected()
        assert len(all_ids) == 4 and len(conn_ids) == 2  # ordered, activated; scheduled, applied
        wait_for(lambda: len(every.received) >= len(all_ids) and len(only.received) >= 2)
        assert sorted(event_ids(every, hook_all["secret"])) == sorted(all_ids)
        assert sorted(event_ids(only, hook_conn["secret"])) == sorted(conn_ids)
        assert len({r.headers["webhook-id"] for r in every.received}) == len(all_ids)

        # 2. The second receiver is down for a while, then back on the same port.
        port = int(only.url.rsplit(":", 1)[1].split("/")[0])
        second.close()
        http.post(f"{BASE}/{connection}/suspend")
        wait_for(lambda: http.get(f"{BASE}/{connection}").json()["status"] == "suspended")
        failing = f"{HOOKS}/{hook_conn['id']}/deliveries"
        wait_for(
            lambda: any(d["attemptCount"] >= 2 for d in http.get(failing).json()["deliveries"])
        )
        back = stack.enter_context(serve(port=port))
        all_ids, conn_ids = expected()
        wait_for(lambda: len(back.received) >= len(conn_ids) - 2)
        assert sorted(
            event_ids(only, hook_conn["secret"]) + event_ids(back, hook_conn["secret"])
        ) == sorted(conn_ids)
        wait_for(lambda: len(every.received) >= len(all_ids))

        # 3. The worker is SIGKILLed while a delivery is in flight: the next worker sends it
        # again, with the same webhook-id, once the job's lease has run out.
        every.hold = True
        before = len(every.received)
        http.post(f"{BASE}/{connection}/resume")
        wait_for(lambda: len(every.received) > before)
        held = every.received[before].headers["webhook-id"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        every.hold = False
        every.release.set()
        worker = start_worker(env, tmp_path / "worker.log")
        wait_for(
            lambda: [r.headers["webhook-id"] for r in every.received].count(held) >= 2,
            timeout=30,
        )
        wait_for(lambda: http.get(f"{BASE}/{connection}").json()["status"] == "active")
        all_ids, conn_ids = expected()
        wait_for(lambda: set(all_ids) <= set(event_ids(every, hook_all["secret"])))
        deliveries: list[dict[str, Any]] = http.get(
            f"{HOOKS}/{hook_all['id']}/deliveries", params={"limit": 100}
        ).json()["deliveries"]
        assert len(deliveries) == len(all_ids)
        wait_for(
            lambda: (
                {
                    d["status"]
                    for d in http.get(f"{HOOKS}/{hook_all['id']}/deliveries").json()["deliveries"]
                }
                == {"succeeded"}
            )
        )
        # Secrets are never logged (the logs are at INFO: every attempt is there).
        logs = (tmp_path / "api.log").read_text() + (tmp_path / "worker.log").read_text()
        assert "webhook.attempt" in logs
        for secret in (hook_all["secret"], hook_conn["secret"]):
            assert secret[len("whsec_") :] not in logs
    finally:
        stack.close()
        worker.kill()
        worker.wait()
        server.stop()
