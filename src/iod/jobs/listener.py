"""LISTEN on PostgreSQL so an idle worker wakes as soon as any process enqueues a job due
now (`iod_jobs` is NOTIFYed just after the enqueuing transaction's commit,
`Database.write()` and `infra/db/notify.py`)."""

from __future__ import annotations

import threading

import psycopg
import structlog
from sqlalchemy.engine import URL

log = structlog.get_logger("iod.worker")


class Listener(threading.Thread):
    """Sets `wakeup` on each notification of `channel` until `stop` is set. It has its own
    connection (outside the pools); when the database goes away it reconnects, backing off
    up to 5 s. Missing a notification only costs a poll interval."""

    def __init__(
        self, url: URL, channel: str, wakeup: threading.Event, stop: threading.Event
    ) -> None:
        super().__init__(name=f"iod-listen-{channel}", daemon=True)
        if not channel.isidentifier():
            raise ValueError(f"channel {channel!r} is not an identifier")
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channel = channel
        self.wakeup = wakeup
        self.stop = stop
        self.listening = threading.Event()

    def run(self) -> None:
        pause = 0.5
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    pause = 0.5
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.wakeup.set()
                            if self.stop.is_set():
                                break
            except psycopg.Error as exc:
                self.listening.clear()
                if self.stop.is_set():
                    break  # stopping: the connection went with the database, as it may
                log.warning("worker.listen_failed", channel=self.channel, error=str(exc)[:200])
                self.stop.wait(pause)
                pause = min(pause * 2, 5.0)
