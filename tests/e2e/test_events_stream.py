"""The event stream of a served process: API process and a separate `iod worker` (its
commits reach the API's streams through NOTIFY on PostgreSQL, by rechecking on SQLite);
resuming with Last-Event-ID, heartbeats, the limit per client, and the SDK's and CLI's
waits that follow the stream."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from iod.client import Client
from tests.e2e.conftest import Server, base_env, iod, start_worker, token_for, wait_for

STREAM = "/internet-on-demand/events/stream"


def read_events(lines: Iterator[str], count: int, seen: list[str]) -> list[dict[str, Any]]:
    """The next `count` events of an open stream's lines; every line goes to `seen`. (One
    iterator per stream: a dropped `iter_lines()` closes the response.)"""
    got: list[dict[str, Any]] = []
    for line in lines:
        seen.append(line)
        if line.startswith("data: "):
            got.append(json.loads(line[6:]))
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {got}")


def test_stream_and_waits_across_processes(tmp_path: Path, backend: str) -> None:
    env = base_env(
        tmp_path,
        backend,
        IOD_EVENTS_HEARTBEAT_SECONDS="0.5",
        IOD_EVENTS_STREAMS_PER_CLIENT="2",
    )
    if backend == "postgres":
        iod(env, "db", "upgrade")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    server = Server(env, tmp_path / "api.log", "--no-worker").start()
    # Started and ready before the clock of the SDK's wait starts below (a start costs
    # seconds on a loaded machine).
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        token = token_for(server.url, demo["client_id"], demo["client_secret"])
        h = {"Authorization": f"Bearer {token}"}
        lines: list[str] = []
        timeout = httpx.Timeout(10, read=20)
        with httpx.stream(
            "GET", server.url + STREAM, params={"after": "now"}, headers=h, timeout=timeout
        ) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            live_lines = live.iter_lines()
            # The SDK's wait follows the stream: the worker's commit (another process) wakes it.
            with Client(server.url, demo["client_id"], demo["client_secret"]) as sdk:
                started = time.monotonic()
                connection = sdk.create_connection(demo["location_id"], "100 Mbps", wait=True)
                waited = time.monotonic() - started
            assert connection.status == "active"
            events = read_events(live_lines, 2, lines)
            assert [e["type"] for e in events] == ["connection.ordered", "connection.activated"]
            assert {e["connectionId"] for e in events} == {connection.id}
            assert any(line.startswith("id: ") for line in lines)
            # A third stream is over the limit of 2 per client.
            with httpx.stream("GET", server.url + STREAM, headers=h, timeout=timeout) as second:
                assert second.status_code == 200
                third = httpx.get(server.url + STREAM, headers=h, timeout=5)
                assert third.status_code == 429, third.text
                assert third.headers["content-type"].startswith("application/problem+json")
            # Heartbeats on an idle stream.
            beats: list[str] = []
            for line in live_lines:
                beats.append(line)
                if line.startswith(":"):
                    break
        # Resuming after the first event gives the second, then what follows.
        resume = {**h, "Last-Event-ID": events[0]["id"]}
        with httpx.stream("GET", server.url + STREAM, headers=resume, timeout=timeout) as again:
            assert [e["id"] for e in read_events(again.iter_lines(), 1, [])] == [events[1]["id"]]

        # `iod connections watch` and `iod events tail` see the suspension as it happens.
        cli_env = {
            **env,
            "IOD_URL": server.url,
            "IOD_CLIENT_ID": demo["client_id"],
            "IOD_CLIENT_SECRET": demo["client_secret"],
            "HOME": str(tmp_path),
        }
        tail = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "iod",
                "events",
                "tail",
                "--json",
                "--connection",
                connection.id,
                # After the activation: the suspension's events whenever tail connects (its
                # default "now" raced the suspension when the process started slowly).
                "--after",
                events[1]["id"],
            ],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "iod",
                "connections",
                "watch",
                connection.id,
                "--json",
                "--timeout",
                "30",
                "--interval",
                "30",
            ],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watched: list[dict[str, Any]] = []

        def follow() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                watched.append(json.loads(line))
                if watched[-1]["status"] == "suspended":
                    watch.terminate()
                    return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        # watch prints the first state once its stream is open: it follows from then on.
        wait_for(lambda: watched, timeout=30)
        with Client(server.url, demo["client_id"], demo["client_secret"]) as sdk:
            started = time.monotonic()
            sdk.suspend(connection.id)
            sdk.wait_until(connection.id, "suspended", timeout=20)
        reader.join(20)
        # --interval 30: only the stream can have woken it this soon.
        assert [c["status"] for c in watched][-1] == "suspended", watched
        assert time.monotonic() - started < 15
        tailed: list[dict[str, Any]] = []

        def read_tail() -> None:
            assert tail.stdout is not None
            for line in tail.stdout:
                tailed.append(json.loads(line))
                if len(tailed) == 2:
                    return

        tail_reader = threading.Thread(target=read_tail, daemon=True)
        tail_reader.start()
        tail_reader.join(30)  # not a hang of the whole run when tail prints nothing
        tail.terminate()
        assert [e["type"] for e in tailed] == [
            "connection.suspend_requested",
            "connection.suspended",
        ]
        assert waited < 10
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        server.stop()
