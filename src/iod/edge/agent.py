"""`iod edge-agent`: the agent of one location, on its edge host.

It follows the location's desired state from the controller's internal API (a snapshot,
then a long poll of the changes after its cursor), applies each change to the local
kernel with a network driver (the lab's namespaces, or the edge mode's one HTB tree), keeps
what it applied in a state file, and reports each operation's result by its id.

Partitions: when the controller cannot be reached the agent keeps enforcing the last state
it has (the state file survives restarts: at start it reconciles the kernel to it before it
asks anything), and retries with backoff; once back it resynchronises from a full snapshot
(anything missed, even a change it had applied but not yet reported, is applied again,
which changes nothing, and reported) and watches again from the snapshot's cursor.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from iod.edge.schemas import REPORT_MAX, SAMPLES_MAX
from iod.network.base import ConfiguredConnection, ConnectionSpec, DriverError, NetworkDriver

log = structlog.get_logger("iod.edge.agent")

Row = dict[str, Any]


class Counters(Protocol):
    """A driver that can read each connection's counters (bytes and packets, both ways)."""

    def counters(self) -> dict[str, tuple[int, int, int, int]]: ...


class Applier:
    """Applies desired rows with a network driver; every call is idempotent."""

    def __init__(self, driver: NetworkDriver, location_id: str) -> None:
        self.driver = driver
        self.location_id = location_id

    def _spec(self, row: Row) -> ConnectionSpec:
        return ConnectionSpec(
            row["connectionId"], self.location_id, int(row["bandwidthMbps"]), row.get("ipv4Block")
        )

    def apply(self, row: Row) -> None:
        op = row.get("opId") or f"seq-{row['seq']}"
        if row["state"] == "absent":
            remember = getattr(self.driver, "remember", None)
            if callable(remember):  # the edge mode knows blocks; the tombstone names it
                remember(row["connectionId"], row.get("ipv4Block"))
            self.driver.terminate(row["connectionId"], op)
        elif row["state"] == "suspended":
            spec = self._spec(row)
            # Two driver operations: ids of their own (a driver does one id once).
            self.driver.set_bandwidth(spec, f"{op}:rate")
            self.driver.suspend(spec, f"{op}:suspend")
        else:
            self.driver.provision(self._spec(row), op)

    def resync(self, rows: list[Row]) -> int:
        """Make the kernel hold exactly these rows (and nothing else of this location);
        returns how many connections it had to create, correct or remove."""
        desired = [
            ConfiguredConnection(
                r["connectionId"],
                self.location_id,
                int(r["bandwidthMbps"]),
                r["state"] == "suspended",
                r.get("ipv4Block"),
            )
            for r in rows
            if r["state"] != "absent"
        ]
        report = self.driver.reconcile(desired, frozenset())
        return len(report.created) + len(report.corrected) + len(report.removed)


@dataclass
class State:
    """What the agent last applied: survives restarts, so a partitioned edge keeps it."""

    location_id: str
    cursor: int = 0
    connections: dict[str, Row] = field(default_factory=dict)
    unreported: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "locationId": self.location_id,
            "cursor": self.cursor,
            "connections": self.connections,
            "unreported": self.unreported,
        }


def load_state(path: Path, location_id: str) -> State | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if data.get("locationId") != location_id:
        raise SystemExit(f"{path} is the state of location {data.get('locationId')!r}")
    return State(location_id, int(data["cursor"]), dict(data["connections"]),
                 list(data.get("unreported", [])))  # fmt: skip


def save_state(path: Path, state: State) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as out:
        json.dump(state.to_json(), out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class Unreachable(Exception):
    """The controller did not answer (or answered 5xx): keep the last state, retry."""


class Agent:
    def __init__(
        self,
        *,
        location_id: str,
        controller: str,
        client_id: str,
        client_secret: str,
        applier: Applier,
        state_path: Path,
        version: str,
        wait_seconds: float = 25,
        sample_seconds: float | None = None,
        retry_max_seconds: float = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry_max = retry_max_seconds
        self.drift: int | None = None
        self.location_id = location_id
        self.applier = applier
        self.state_path = state_path
        self.version = version
        self.wait = wait_seconds
        self.sample_seconds = sample_seconds
        self._credentials = (client_id, client_secret)
        self._http = httpx.Client(
            base_url=controller.rstrip("/"), timeout=wait_seconds + 15, transport=transport
        )
        self._token: tuple[str, float] | None = None
        self.state = State(location_id)
        self.base = f"/internal/edge/v1/locations/{location_id}"

    # --- HTTP ------------------------------------------------------------------------------

    def _bearer(self) -> str:
        if self._token is not None and time.monotonic() < self._token[1]:
            return self._token[0]
        try:
            answer = self._http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials", "scope": "edge"},
                auth=self._credentials,
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"token: {exc}") from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            raise Unreachable(f"token: HTTP {answer.status_code}")
        if answer.status_code != 200:
            raise SystemExit(f"the controller refused this agent's credentials: {answer.text}")
        body = answer.json()
        self._token = (body["access_token"], time.monotonic() + max(body["expires_in"] - 30, 5))
        return self._token[0]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        try:
            answer = self._http.request(method, self.base + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"{path}: {exc}") from exc
        if answer.status_code == 401:
            self._token = None
            raise Unreachable(f"{path}: token refused, getting another")
        if answer.status_code >= 500 or answer.status_code == 429:
            raise Unreachable(f"{path}: HTTP {answer.status_code}")
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    # --- state -----------------------------------------------------------------------------

    def start(self) -> None:
        """Enforce the last state this edge had, before (and whether or not) the controller
        answers: a restarted agent in a partition keeps the customers' service as it was."""
        known = load_state(self.state_path, self.location_id)
        if known is not None:
            self.state = known
            try:
                self.applier.resync(list(known.connections.values()))
                log.info("edge.enforced_last_state", connections=len(known.connections),
                         cursor=known.cursor)  # fmt: skip
            except DriverError:
                log.exception("edge.enforce_failed")

    def _apply(self, row: Row) -> Row | None:
        """Applies one row; the result to report when it carries an operation."""
        error = None
        try:
            self.applier.apply(row)
        except DriverError as exc:
            error = str(exc)
            log.warning("edge.apply_failed", connection_id=row["connectionId"], error=error)
        if row["state"] == "absent":
            self.state.connections.pop(row["connectionId"], None)
        elif error is None:
            self.state.connections[row["connectionId"]] = row
        if row.get("opId") and not row.get("acked"):
            return {"opId": row["opId"], "ok": error is None, "error": error}
        return None

    def resync(self) -> None:
        """A full snapshot: the kernel is made to hold exactly it, then its unacknowledged
        operations are reported."""
        snap = self._call("GET", "/desired")
        rows = snap["connections"]
        error = None
        try:
            self.drift = self.applier.resync(rows)
        except DriverError as exc:
            error = str(exc)
            log.warning("edge.resync_failed", error=error)
        self.state.connections = {r["connectionId"]: r for r in rows if r["state"] != "absent"}
        self.state.cursor = int(snap["cursor"])
        self.state.unreported += [
            {"opId": r["opId"], "ok": error is None, "error": error}
            for r in rows
            if r.get("opId") and not r.get("acked")
        ]
        save_state(self.state_path, self.state)
        log.info("edge.resynced", connections=len(self.state.connections), cursor=snap["cursor"])
        self.report()

    def watch_once(self, wait: float | None = None) -> int:
        """One long poll; applies and reports what it brings. Returns the changes applied."""
        answer = self._call(
            "GET", "/changes",
            params={"after": self.state.cursor, "wait": self.wait if wait is None else wait},
        )  # fmt: skip
        changes = answer["changes"]
        for row in changes:
            result = self._apply(row)
            if result is not None:
                self.state.unreported.append(result)
        self.state.cursor = int(answer["cursor"])
        if changes:
            save_state(self.state_path, self.state)  # before the report: never acked unsaved
            self.report()
        return len(changes)

    def report(self) -> None:
        """Sends the unreported results (in reports of REPORT_MAX: a request body is at most
        64 KiB), then forgets them."""
        results = self.state.unreported
        for start in range(0, max(len(results), 1), REPORT_MAX):
            self._call(
                "POST", "/reports",
                json={"cursor": self.state.cursor, "version": self.version,
                      "hostname": socket.gethostname(),
                      "actualCount": len(self.state.connections), "drift": self.drift,
                      "results": [{**r, "error": (r.get("error") or "")[:300] or None}
                                  for r in results[start : start + REPORT_MAX]]},
            )  # fmt: skip
        if results:
            self.state.unreported = []
            save_state(self.state_path, self.state)

    def sample(self) -> int:
        """Reads the driver's counters and sends them; returns the readings sent (0 when
        the driver has none or the controller is away: the next delta covers the gap)."""
        read = getattr(self.applier.driver, "counters", None)
        if not callable(read):
            return 0
        at = datetime.now(UTC)
        readings = [
            {"connectionId": cid, "bytesIn": b_in, "bytesOut": b_out,
             "packetsIn": p_in, "packetsOut": p_out}
            for cid, (b_in, b_out, p_in, p_out) in read().items()
        ]  # fmt: skip
        for start in range(0, len(readings), SAMPLES_MAX):  # 64 KiB bodies
            chunk = readings[start : start + SAMPLES_MAX]
            self._call("POST", "/samples", json={"at": at.isoformat(), "samples": chunk})
        return len(readings)

    def _sampling(self, stop: threading.Event) -> None:
        assert self.sample_seconds is not None
        while not stop.wait(self.sample_seconds):
            try:
                self.sample()
            except (Unreachable, DriverError) as exc:
                log.warning("edge.sample_failed", error=str(exc))
            except Exception:
                log.exception("edge.sample_failed")

    def run(self, stop: threading.Event) -> None:
        self.start()
        if self.sample_seconds:
            threading.Thread(target=self._sampling, args=(stop,), name="iod-edge-sample",
                             daemon=True).start()  # fmt: skip
        synced = False
        pause = min(0.5, self.retry_max)
        while not stop.is_set():
            try:
                if not synced:
                    self.resync()
                    synced = True
                    pause = min(0.5, self.retry_max)
                self.watch_once()
            except Unreachable as exc:
                if synced:
                    log.warning("edge.controller_unreachable", error=str(exc))
                synced = False
                stop.wait(pause)
                pause = min(pause * 2, self.retry_max)

    def close(self) -> None:
        self._http.close()
        with contextlib.suppress(Exception):
            close = getattr(self.applier.driver, "close", None)
            if callable(close):
                close()
