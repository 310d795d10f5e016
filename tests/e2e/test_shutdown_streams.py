"""Ctrl-C with an event stream and a long poll open: the server stops at once, both answers
end cleanly, and the log has no cancelled task. Before, uvicorn waited IOD_SHUTDOWN_TIMEOUT
(30 s) for the stream, which never ends by itself, then cancelled it with an ERROR."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Server, base_env, iod, token_for

EVENTS = "/internet-on-demand/events"


def test_ctrl_c_ends_open_streams_and_long_polls_at_once(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite", IOD_SHUTDOWN_TIMEOUT="30")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    server = Server(env, tmp_path / "server.log").start()
    assert server.process is not None
    token = token_for(server.url, demo["client_id"], demo["client_secret"])
    headers = {"Authorization": f"Bearer {token}"}
    polled: dict[str, Any] = {}

    def long_poll() -> None:
        try:
            _long_poll()
        except httpx.HTTPError as error:  # e.g. it had not reached the server in time
            polled["error"] = repr(error)

    def _long_poll() -> None:
        answer = httpx.get(
            server.url + EVENTS, params={"after": "now", "wait": "60"}, headers=headers,
            timeout=httpx.Timeout(10, read=90),
        )  # fmt: skip
        polled.update(status=answer.status_code, body=answer.json())

    try:
        with httpx.stream(
            "GET", server.url + EVENTS + "/stream", params={"after": "now"}, headers=headers,
            timeout=httpx.Timeout(10, read=90),
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            poller = threading.Thread(target=long_poll)
            poller.start()
            # The long poll is waiting (an idle server reads it at once; a loaded one may take
            # seconds, and the server shows no sign of it: no log line, no gauge).
            time.sleep(5)
            stopping = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            rest = list(lines)  # ends when the server ends the stream
            assert not [line for line in rest if line.startswith("data:")]
            server.process.wait(timeout=25)
            stopped = time.monotonic() - stopping
            poller.join(10)
    finally:
        server.kill()
    assert stopped < 15, f"the server took {stopped:.1f} s to stop"
    assert "error" not in polled, polled
    assert polled == {
        "status": 200,
        "body": {"events": [], "nextCursor": polled["body"]["nextCursor"]},
    }
    log = (tmp_path / "server.log").read_text()
    assert "ERROR" not in log and "CancelledError" not in log, log[-3000:]
