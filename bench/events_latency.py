"""Events: how soon a committed event is on the stream and in a long-polled feed.

A served API process (`iod serve --no-worker`) and this process, which commits events the way
a separate worker does (`Database.write()` + `events.record`): on PostgreSQL the API hears
them through NOTIFY; on SQLite only by rereading every IOD_EVENTS_RECHECK_SECONDS. The time is
from the commit's return to the event's arrival. Run:
`.venv/bin/python bench/events_latency.py [--database-url postgresql+psycopg://…] [-n 200]`
(a PostgreSQL database given here is wiped).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from iod import events, features
from iod.infra.clock import SystemClock
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.infra.migrate import upgrade

STREAM = "/internet-on-demand/events/stream"
FEED = "/internet-on-demand/events"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(database_url: str | None, n: int) -> dict[str, list[float]]:
    """Commits `n` events one at a time; the milliseconds from each commit to its arrival on
    the stream (`stream`) and in a long-polled feed (`feed`)."""
    tmp = Path(tempfile.mkdtemp(prefix="iod-bench-events-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOD_")}
    env.update(IOD_DATA_DIR=str(tmp), IOD_LOG_LEVEL="WARNING", IOD_PERIODIC_TASKS="false")
    if database_url:
        env["IOD_DATABASE_URL"] = database_url
        engine = make_engine(database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        upgrade(engine)
        engine.dispose()
    iod = [sys.executable, "-m", "iod"]
    demo = json.loads(subprocess.run([*iod, "demo", "--json"], env=env, check=True,
                                     capture_output=True, text=True).stdout)  # fmt: skip
    url = database_url or Settings(data_dir=tmp).effective_database_url
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*iod, "serve", "--no-worker", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        credentials = (demo["client_id"], demo["client_secret"])
        form = {"grant_type": "client_credentials"}
        token = httpx.post(base + "/oauth2/token", data=form, auth=credentials).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        features.load()
        db = Database(make_engine(url))
        clock = SystemClock()
        committed: dict[int, float] = {}
        arrived: dict[int, float] = {}
        polled: dict[int, float] = {}
        ready = threading.Event()

        def commit(n: int) -> None:
            with db.write() as session:
                events.record(session, "connection.activated", customer_id=demo["customer_id"],
                              subject_id=f"con_bench{n}", at=clock.now(),
                              connectionId=f"con_bench{n}", fromStatus="provisioning",
                              reason=str(n))  # fmt: skip
            committed[n] = time.perf_counter()

        def follow() -> None:
            with httpx.stream("GET", base + STREAM, params={"after": "now"}, headers=headers,
                              timeout=httpx.Timeout(10, read=60)) as response:  # fmt: skip
                ready.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        seen = int(json.loads(line[6:])["data"]["reason"])
                        arrived[seen] = time.perf_counter()
                        if len(arrived) == n:
                            return

        def long_poll() -> None:
            cursor = "now"
            with httpx.Client(base_url=base, headers=headers, timeout=70) as client:
                while len(polled) < n:
                    page = client.get(FEED, params={"after": cursor, "wait": 30}).json()
                    now = time.perf_counter()
                    for event in page["events"]:
                        polled[int(event["data"]["reason"])] = now
                    cursor = page["nextCursor"]

        threads = [threading.Thread(target=follow), threading.Thread(target=long_poll)]
        for thread in threads:
            thread.start()
        ready.wait(10)
        time.sleep(0.5)
        for k in range(n):
            commit(k)
            time.sleep(0.02)  # one at a time: the latency of each, not of a burst
        for thread in threads:
            thread.join(60)
        db.dispose()
        return {
            name: [(seen[k] - committed[k]) * 1000 for k in committed if k in seen]
            for name, seen in (("stream", arrived), ("feed", polled))
        }
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    backend = "PostgreSQL" if args.database_url else "SQLite"
    for name, lags in run(args.database_url, args.n).items():
        label = "stream" if name == "stream" else "feed (wait=30)"
        print(f"{backend} {label}: {len(lags)}/{args.n} events, commit to arrival "
              f"p50 {statistics.median(lags):.1f} ms, p99 {percentile(lags, 0.99):.1f} ms, "
              f"max {max(lags):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
