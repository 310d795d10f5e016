"""The controller's network driver: operations at a location with an agent are handed to
it (and the job waits, re-scheduled, for its acknowledgement); every other location keeps
the in-process driver (simulated or linux).

It is a driver like the others for the worker, but it reads the edge tables, so it lives
here and not in `network/` (which never reads the database)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from iod.edge import repository, service
from iod.infra.clock import Clock
from iod.infra.config import Settings
from iod.infra.db import Database
from iod.jobs.registry import Deferred
from iod.network.base import (
    ConfiguredConnection,
    ConnectionSpec,
    DriverError,
    NetworkDriver,
    ReconcileReport,
)


class EdgeRouter:
    def __init__(
        self, db: Database, clock: Clock, local: NetworkDriver, settings: Settings
    ) -> None:
        self.db = db
        self.clock = clock
        self.local = local
        self.name = local.name
        self._recheck = settings.edge_ack_recheck_seconds
        self._timeout = timedelta(seconds=settings.edge_ack_timeout_seconds)
        self._cache_seconds = settings.edge_locations_cache_seconds
        self._cached: tuple[float, frozenset[str]] | None = None
        self._lock = threading.Lock()

    def edge_locations(self) -> frozenset[str]:
        """The locations with an agent, cached briefly (one read per batch, not per job)."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        with self.db.read() as session:
            locations = frozenset(repository.locations_with_agent(session))
        self._cached = (time.monotonic(), locations)
        return locations

    def _hand(
        self,
        kind: str,
        op_id: str,
        connection_id: str,
        location_id: str | None,
        mbps: int | None = None,
        block: str | None = None,
    ) -> bool:
        """True when the operation is the agent's and it is done; raises Deferred while it
        waits, DriverError when it failed; False when the location has no agent."""
        with self.db.write() as session:
            outcome = service.hand_over(
                session, self.clock.now(), location_id=location_id,
                connection_id=connection_id, kind=kind, op_id=op_id, mbps=mbps, block=block,
                timeout=self._timeout,
            )  # fmt: skip
        if outcome.status == "done":
            return True
        if outcome.status == "local":
            return False
        if outcome.status == "failed":
            raise DriverError(f"the edge agent failed {kind} ({op_id}): {outcome.error}")
        if outcome.status == "timeout":
            raise DriverError(
                f"the edge agent has not acknowledged {kind} ({op_id}) within "
                f"{self._timeout.total_seconds():g} s"
            )
        raise Deferred(self._recheck, f"waiting for the edge agent to acknowledge {op_id}")

    def _spec_op(self, kind: str, spec: ConnectionSpec, op_id: str) -> bool:
        if spec.location_id not in self.edge_locations():
            return False
        return self._hand(
            kind, op_id, spec.connection_id, spec.location_id, spec.bandwidth_mbps,
            spec.ipv4_block,
        )  # fmt: skip

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        if not self._spec_op("provision", spec, op_id):
            self.local.provision(spec, op_id)

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None:
        if not self._spec_op("bandwidth", spec, op_id):
            self.local.set_bandwidth(spec, op_id)

    def suspend(self, spec: ConnectionSpec, op_id: str) -> None:
        if not self._spec_op("suspend", spec, op_id):
            self.local.suspend(spec, op_id)

    def resume(self, spec: ConnectionSpec, op_id: str) -> None:
        if not self._spec_op("resume", spec, op_id):
            self.local.resume(spec, op_id)

    def terminate(self, connection_id: str, op_id: str) -> None:
        if not self.edge_locations() or not self._hand("terminate", op_id, connection_id, None):
            self.local.terminate(connection_id, op_id)

    def inventory(self) -> list[ConfiguredConnection]:
        return self.local.inventory()

    def counters(self) -> dict[str, tuple[int, int, int, int]]:
        """The in-process driver's counters (edge agents send their own). Not those of the
        connections an agent holds: the in-process driver still has the ones in force when
        their location was handed to its agent (until a restart reconciles it), and two
        samplers' readings of one connection, interleaved, each look like a reset."""
        read = getattr(self.local, "counters", None)
        counters = dict(read()) if callable(read) else {}
        edges = self.edge_locations()
        if counters and edges:
            with self.db.read() as session:
                held = repository.connections_at(session, edges)
            counters = {c: v for c, v in counters.items() if c not in held}
        return counters

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        """The in-process driver reconciles the locations without an agent; a location with
        one gets its desired rows corrected, which its agent then applies."""
        edges = self.edge_locations()
        local = [c for c in desired if c.location_id not in edges]
        report = self.local.reconcile(local, skip, dry_run=dry_run)
        by_location: dict[str, dict[str, tuple[int, bool, str | None]]] = {e: {} for e in edges}
        for c in desired:
            if c.location_id in edges:
                by_location[c.location_id][c.connection_id] = (
                    c.bandwidth_mbps,
                    c.suspended,
                    c.ipv4_block,
                )
        for location_id, wanted in sorted(by_location.items()):
            with self.db.write() as session:
                created, removed, corrected, unchanged = service.reconcile_location(
                    session, self.clock.now(), location_id, wanted, skip, dry_run=dry_run
                )
            report.created += created
            report.removed += removed
            report.corrected += corrected
            report.unchanged += unchanged
        return report

    def close(self) -> None:
        close = getattr(self.local, "close", None)
        if callable(close):
            close()
