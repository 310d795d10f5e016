"""A short-lived cache of clients' state, so a disabled client's tokens, and the tokens of a
replaced secret after its grace period, die quickly without a database query per request.

An entry is as old as the read it comes from: the token endpoint, which has just read the
client's row to check its secret, leaves that state here (`remember`), so a client's first
request with its new token needs no read of its own (issue 14, the surge), and is refused
as soon as it would have been after a read of its own."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iod.customers import repository
from iod.infra.db import Database


@dataclass(frozen=True)
class ClientState:
    enabled: bool
    secret_generation: int
    previous_secret_until: datetime | None

    @classmethod
    def of(cls, row: Any | None) -> ClientState:
        """The state in a client's `credentials` row (None: an unknown client, refused)."""
        if row is None:
            return UNKNOWN
        return cls(row.enabled, row.secret_generation, row.previous_secret_until)

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
        """The client's state (an unknown client is a disabled one), cached for the TTL: one
        statement on the calling thread's kept connection (`customers.credentials`, the
        token endpoint's read), so it may run on the event loop."""
        known = self.cached(client_id)
        if known is not None:
            return known
        now = time.monotonic()
        state = ClientState.of(repository.credentials(self._db, client_id))
        self.remember(client_id, state, now)
        return state

    def remember(self, client_id: str, state: ClientState, read_at: float) -> None:
        """Caches `state`, read from the database at `read_at` (`time.monotonic()` taken
        before the read): it is stale `ttl` seconds after that read, wherever it was made.
        A state read earlier than the one cached is dropped (a token request that waited
        for an argon2 check must not bring back a state a later read replaced)."""
        with self._lock:
            known = self._entries.get(client_id)
            if known is not None and known[0] > read_at:
                return
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[client_id] = (read_at, state)

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)
