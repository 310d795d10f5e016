"""The default driver: a pretend network kept in its own SQLite store.

It takes configurable time, can fail on purpose, and keeps a journal of every operation it
carried out. Each call carries an operation id (the job's), and an id already in the journal
is not carried out again: that is what makes retries after a crash exactly-once here. With a
file store, several worker processes share one pretend network, as they would a real one.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iod.network.base import (
    ConfiguredConnection,
    ConnectionSpec,
    DriverError,
    ReconcileReport,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS network (
    connection_id TEXT PRIMARY KEY, location_id TEXT NOT NULL,
    bandwidth_mbps INTEGER NOT NULL, suspended INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    connection_id TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Operation:
    op_id: str
    name: str
    connection_id: str
    detail: str = ""


class SimulatedDriver:
    name = "simulated"

    def __init__(
        self,
        *,
        provision_seconds: float = 0.0,
        change_seconds: float = 0.0,
        failure_rate: float = 0.0,
        state_path: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provision_seconds = provision_seconds
        self.change_seconds = change_seconds
        self.failure_rate = failure_rate
        self.fail_next: list[str] = []  # operation names to fail once each, for tests
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - failure injection, not security
        self._lock = threading.Lock()
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(state_path) if state_path else ":memory:",
            check_same_thread=False,
            isolation_level=None,
            timeout=30,
        )
        if state_path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Survives a process crash (what the tests inflict); an OS crash is not simulated.
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _carry_out(
        self,
        name: str,
        op_id: str,
        connection_id: str,
        seconds: float,
        change: Callable[[sqlite3.Connection], None],
        detail: str = "",
    ) -> None:
        if seconds:
            self._sleep(seconds)
        with self._lock:
            if name in self.fail_next:
                self.fail_next.remove(name)
                raise DriverError(f"simulated failure of {name}")
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise DriverError(f"simulated random failure of {name}")
        with self._transaction() as db:
            done = db.execute("SELECT 1 FROM journal WHERE op_id = ?", (op_id,)).fetchone()
            if done:
                return  # carried out before a crash or a lost lease: nothing more to do
            change(db)
            db.execute(
                "INSERT INTO journal (op_id, name, connection_id, detail, at) VALUES (?,?,?,?,?)",
                (op_id, name, connection_id, detail, time.time()),
            )

    def _put(
        self, spec: ConnectionSpec, suspended: bool | None
    ) -> Callable[[sqlite3.Connection], None]:
        def change(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT suspended FROM network WHERE connection_id = ?", (spec.connection_id,)
            ).fetchone()
            keep = bool(row[0]) if row else False
            db.execute(
                "INSERT OR REPLACE INTO network VALUES (?, ?, ?, ?)",
                (
                    spec.connection_id,
                    spec.location_id,
                    spec.bandwidth_mbps,
                    int(keep if suspended is None else suspended),
                ),
            )

        return change

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        self._carry_out(
            "provision", op_id, spec.connection_id, self.provision_seconds, self._put(spec, False)
        )

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None:
        self._carry_out(
            "set_bandwidth",
            op_id,
            spec.connection_id,
            self.change_seconds,
            self._put(spec, None),
            str(spec.bandwidth_mbps),
        )

    def suspend(self, spec: ConnectionSpec, op_id: str) -> None:
        self._carry_out(
            "suspend", op_id, spec.connection_id, self.change_seconds, self._put(spec, True)
        )

    def resume(self, spec: ConnectionSpec, op_id: str) -> None:
        self._carry_out(
            "resume", op_id, spec.connection_id, self.change_seconds, self._put(spec, False)
        )

    def terminate(self, connection_id: str, op_id: str) -> None:
        def change(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM network WHERE connection_id = ?", (connection_id,))

        self._carry_out("terminate", op_id, connection_id, self.change_seconds, change)

    def counters(self) -> dict[str, tuple[int, int, int, int]]:
        """Synthetic cumulative counters (bytes in, out, packets in, out), so `make run`
        shows traffic: downloads follow a daily curve between about 20 and 80 % of the
        rate with some noise, uploads a third of that, nothing while suspended. Counted
        from this process's first call (a restart is a counter reset)."""
        now = time.time()
        state: dict[str, tuple[float, int, int, int, int]] = self.__dict__.setdefault(
            "_traffic", {}
        )
        out: dict[str, tuple[int, int, int, int]] = {}
        for c in self.inventory():
            last, b_in, b_out, p_in, p_out = state.get(c.connection_id, (now, 0, 0, 0, 0))
            seconds = now - last
            if seconds > 0 and not c.suspended:
                phase = (hash(c.connection_id) % 1000) / 1000 * 2 * math.pi
                day = math.sin(2 * math.pi * (now % 86400) / 86400 + phase)
                share = min(1.0, max(0.0, 0.5 + 0.3 * day + self._rng.uniform(-0.1, 0.1)))
                moved = int(c.bandwidth_mbps * 125_000 * share * seconds)  # bytes
                b_in, b_out = b_in + moved, b_out + moved // 3
                p_in, p_out = p_in + moved // 1400, p_out + moved // 3 // 600
            state[c.connection_id] = (now, b_in, b_out, p_in, p_out)
            out[c.connection_id] = (b_in, b_out, p_in, p_out)
        return out

    def inventory(self) -> list[ConfiguredConnection]:
        with self._lock:
            rows = self._db.execute(
                "SELECT connection_id, location_id, bandwidth_mbps, suspended FROM network "
                "ORDER BY connection_id"
            ).fetchall()
        return [ConfiguredConnection(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        """The same contract as the linux driver's, on the pretend network's table. Not
        journaled: the journal records operations that jobs carried out."""
        report = ReconcileReport()
        wanted = {d.connection_id: d for d in desired}
        with self._transaction() as db:
            rows = db.execute(
                "SELECT connection_id, location_id, bandwidth_mbps, suspended FROM network"
            ).fetchall()
            have = {r[0]: ConfiguredConnection(r[0], r[1], r[2], bool(r[3])) for r in rows}
            for connection_id in sorted(have.keys() - wanted.keys()):
                if connection_id in skip:
                    report.skipped.append(connection_id)
                    continue
                report.removed.append(f"{connection_id}: not in the database")
                if not dry_run:
                    db.execute("DELETE FROM network WHERE connection_id = ?", (connection_id,))
            for connection_id, want in sorted(wanted.items()):
                if connection_id in skip:
                    report.skipped.append(connection_id)
                    continue
                now = have.get(connection_id)
                if now is None:
                    report.created.append(f"{connection_id}: missing")
                elif (now.location_id, now.bandwidth_mbps, now.suspended) != (
                    want.location_id,
                    want.bandwidth_mbps,
                    want.suspended,
                ):
                    report.corrected.append(
                        f"{connection_id}: {now.bandwidth_mbps} Mbps"
                        f"{' suspended' if now.suspended else ''} -> {want.bandwidth_mbps} Mbps"
                        f"{' suspended' if want.suspended else ''}"
                    )
                else:
                    report.unchanged += 1
                    continue
                if not dry_run:
                    db.execute(
                        "INSERT OR REPLACE INTO network VALUES (?, ?, ?, ?)",
                        (connection_id, want.location_id, want.bandwidth_mbps, int(want.suspended)),
                    )
        return report

    @property
    def operations(self) -> list[Operation]:
        """The journal: what this pretend network carried out, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT op_id, name, connection_id, detail FROM journal ORDER BY seq"
            ).fetchall()
        return [Operation(*row) for row in rows]
