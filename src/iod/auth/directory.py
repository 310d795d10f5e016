"""A short-lived cache of clients' state, so a disabled client's tokens, and the tokens of a
replaced secret after its grace period, die quickly without a database query per request."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from iod.customers import repository
from iod.infra.db import Database


@dataclass(frozen=True)
class ClientState:
    enabled: bool
    secret_generation: int
    previous_secret_until: datetime | None

    def accepts_generation(self, generation: int, now: datetime) -> bool:
        """Tokens of the current secret, or of the previous one during its grace period.

        Tokens without the claim (issued before rotation existed) count as generation 0."""
        if generation == self.secret_generation:
            return True
        return (
            generation == self.secret_generation - 1
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        )


UNKNOWN = ClientState(enabled=False, secret_generation=0, previous_secret_until=None)


class ClientDirectory:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ClientState]] = {}

    def cached(self, client_id: str) -> ClientState | None:
        """The cached state, or None when it is stale and the database must be asked."""
        entry = self._entries.get(client_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        return None

    def state(self, client_id: str) -> ClientState:
        """The client's state (an unknown client is a disabled one), cached for the TTL."""
        known = self.cached(client_id)
        if known is not None:
            return known
        now = time.monotonic()
        with self._db.read() as session:
            client = repository.get_client(session, client_id)
            state = (
                UNKNOWN
                if client is None
                else ClientState(
                    client.enabled, client.secret_generation, client.previous_secret_until
                )
            )
        with self._lock:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[client_id] = (now, state)
        return state

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)
