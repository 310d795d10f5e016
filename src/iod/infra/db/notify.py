"""The wake-ups of other processes after a commit (PostgreSQL): NOTIFY, coalesced, sent on a
connection of its own just after the commit instead of inside the transaction.

A commit that woke a topic (`uow.wake`) tells the listeners of other processes (the worker's
LISTEN on `iod_jobs`, the feed's on `iod_events`) with NOTIFY `iod_<topic>`. Until issue
14's eleventh step (docs/performance.md) the NOTIFY was the transaction's last statement:
one more round trip in every write, and PostgreSQL queues a transaction's notifications at
its commit under one lock for the whole cluster, so every notifying commit (almost every
write) waited its turn there. A notification carries nothing but its channel here, and a
listener that misses one only waits a poll interval (`jobs/listener.py`; the feed rechecks
every `IOD_EVENTS_RECHECK_SECONDS`), so the commit does not need to carry it:

- `Database.write()` hands the channels of a commit to the database's `Notifier` after the
  commit succeeded (a rolled-back transaction wakes nobody, as before) and returns at once.
- The notifier's thread sends them in one `SELECT pg_notify(…)` on its own autocommit
  connection. Channels handed over while one is in flight are sent together in the next:
  an idle service sends one per commit, a busy one a few hundred a second at most, however
  many commits, and each listener wakes as often.
- A notification now follows its commit (a listener that wakes sees the rows) by about a
  round trip, no longer atomically: if the process dies in between, the listeners find the
  work at their next poll. When the database is disposed, and at the process's exit, what is
  pending is sent before the thread ends (a CLI command's enqueued job wakes the worker).
- When the connection fails, it is replaced at once (a server restart ends it while it is
  idle); when that fails too, the channels are kept and sent again after a pause (0.5 s,
  doubling up to 5 s, whatever commits come meanwhile); one warning a failure run, and one
  line when sending works again. A forked child starts a thread and a connection of its
  own at its first wake.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy.engine import URL

log = structlog.get_logger("iod.db")


class _State:
    """What the notifier's thread uses: kept apart from the `Notifier`, so the exit hook
    (`weakref.finalize`) holds no reference to it."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.changed = threading.Condition()
        self.pending: set[str] = set()
        self.sending = False  # the thread holds channels taken from `pending`
        self.closed = False
        self.thread: threading.Thread | None = None
        self.connection: Any = None  # the thread's own: only it uses and closes it
        self.sent = 0  # statements sent (tests count them)
        self.failing = False
        _states.add(self)

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is pending, then ends the thread (which closes its connection)."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork(self) -> None:
        """In a child process: the parent's thread is not there and its connection is the
        parent's (left untouched: closing it would end the parent's session)."""
        if self.connection is not None:
            _inherited.append(self.connection)
        self.connection = None
        self.changed = threading.Condition()
        self.thread = None
        self.sending = False

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._disconnect()

    def _run(self) -> None:
        pause = 0.5
        while True:
            with self.changed:
                while not self.pending and not self.closed:
                    self.changed.wait()
                if not self.pending:
                    return  # closed, nothing left
                channels = sorted(self.pending)
                self.pending.clear()
                self.sending = True
            try:
                self._send_retrying(channels)
            except Exception as exc:  # the database is away: keep them, try again
                if not self.failing:
                    log.warning("db.notify_failed", error=str(exc).strip()[:200])
                self.failing = True
                with self.changed:
                    self.pending.update(channels)
                    self.sending = False
                    self.changed.notify_all()
                    # The pause is not cut short by more commits (each would try again).
                    deadline = time.monotonic() + pause
                    while not self.closed and (left := deadline - time.monotonic()) > 0:
                        self.changed.wait(left)
                    if self.closed:
                        return  # shutting down: the listeners will poll
                pause = min(pause * 2, 5.0)
                continue
            if self.failing:
                log.info("db.notify_back")
                self.failing = False
            pause = 0.5
            with self.changed:
                self.sending = False
                self.changed.notify_all()

    def _send_retrying(self, channels: list[str]) -> None:
        """Sends them; a connection kept from before that fails (the server restarted or
        ended it) is replaced at once, once, before it counts as a failure."""
        kept = self.connection is not None
        try:
            self._send(channels)
        except Exception:
            self._disconnect()
            if not kept:
                raise
            self._send(channels)

    def _send(self, channels: list[str]) -> None:
        if self.connection is None:
            import psycopg

            self.connection = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        calls = ", ".join("pg_notify(%s, '')" for _ in channels)
        try:
            self.connection.execute(f"SELECT {calls}", channels)
        except Exception:
            self._disconnect()
            raise
        self.sent += 1

    def _disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken one: nothing to do
                connection.close()


# Every live notifier's state, for `os.register_at_fork`; the connections a forked child
# inherited, kept referenced so that collecting them does not close the parent's sessions.
_states: weakref.WeakSet[_State] = weakref.WeakSet()
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    for state in list(_states):
        state.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Notifier:
    """NOTIFYs channels for the commits of one `Database` (PostgreSQL), see the module."""

    def __init__(self, url: URL) -> None:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._state = _State(conninfo)
        # At the process's exit (or when collected), what is pending is sent.
        self._finalizer = weakref.finalize(self, self._state.close)

    def wake(self, channels: Iterable[str]) -> None:
        """Sends NOTIFY on each channel soon, together with any others pending."""
        state = self._state
        with state.changed:
            if state.closed:
                return
            state.pending.update(channels)
            if state.thread is None or not state.thread.is_alive():  # none yet, or it died
                state.thread = threading.Thread(target=state.run, name="iod-notify", daemon=True)
                state.thread.start()
            state.changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until nothing is pending or being sent (tests); False on the timeout."""
        state = self._state
        with state.changed:
            return state.changed.wait_for(lambda: not state.pending and not state.sending, timeout)

    @property
    def sent(self) -> int:
        """SELECT pg_notify statements sent so far."""
        return self._state.sent

    def close(self) -> None:
        """Sends what is pending and stops (`Database.dispose`)."""
        self._finalizer()
