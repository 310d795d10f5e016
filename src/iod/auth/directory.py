"""A short-lived cache of clients' enabled state, so a disabled client's tokens die quickly
without a database query on every request."""

from __future__ import annotations

import threading
import time

from iod.customers import repository
from iod.db import Database


class ClientDirectory:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, bool]] = {}

    def cached(self, client_id: str) -> bool | None:
        """The cached answer, or None when it is stale and the database must be asked."""
        entry = self._entries.get(client_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        return None

    def is_enabled(self, client_id: str) -> bool:
        known = self.cached(client_id)
        if known is not None:
            return known
        now = time.monotonic()
        with self._db.read() as session:
            state = repository.client_state(session, client_id)
        enabled = state is not None and state[0]
        with self._lock:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[client_id] = (now, enabled)
        return enabled

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)
