"""The events feed: cursors, pages of a customer's events, and the waiting for new ones.

A cursor names a place in the customer's stream (a position) and is opaque to clients. A
page is read under one rule that makes "after my cursor" never skip an event: the
customer's last position is read first, then the events up to it; every event up to that
position had committed when it became visible (they move in one transaction).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iod.events import repository
from iod.infra import draining
from iod.infra.clock import rfc3339
from iod.infra.db import Database
from iod.infra.errors import FieldError, ProblemError, ValidationFailed
from iod.models import Event

NOW = "now"  # the `after` that means: only what commits from now on
_PREFIX = "ev"


class CursorExpired(ProblemError):
    status = 410
    type_name = "cursor-expired"
    title = "Cursor expired"


def encode_cursor(position: int) -> str:
    """`ev` and the position as 8 bytes of URL-safe base64 (opaque: clients keep it)."""
    return _PREFIX + base64.urlsafe_b64encode(position.to_bytes(8, "big")).decode().rstrip("=")


def decode_cursor(value: str) -> int:
    """The position a cursor names; ValueError when it is none of ours."""
    raw = value[len(_PREFIX) :] if value.startswith(_PREFIX) else ""
    try:
        data = base64.urlsafe_b64decode(raw + "=") if len(raw) == 11 else b""
    except (binascii.Error, ValueError):
        data = b""
    position = int.from_bytes(data, "big") if len(data) == 8 else -1
    if position < 0 or position >= 2**62 or encode_cursor(position) != value:
        raise ValueError(
            f"{value[:64]!r} is not an event cursor: pass an event's `id` or `nextCursor`"
        )
    return position


# Exactly the strings `encode_cursor` makes: the first character keeps the position under
# 2**62, the last has the two padding bits clear (so every match decodes, canonically).
CURSOR_PATTERN = r"^(now|ev[A-P][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048])$"


def check_cursor(value: str | None) -> str | None:
    """AfterValidator of the `after` parameters (a bad cursor is a 400 naming it)."""
    if value is not None and value != NOW:
        decode_cursor(value)
    return value


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_position: int
    full: bool  # as many as asked: more may follow at once

    @property
    def next_cursor(self) -> str:
        return encode_cursor(self.next_position)


def document(event: Event) -> dict[str, Any]:
    """An event as the feed and the stream show it."""
    body: dict[str, Any] = {
        "id": encode_cursor(event.position),
        "type": event.name,
        "occurredAt": rfc3339(event.at),
    }
    connection_id = event.payload.get("connectionId")
    if isinstance(connection_id, str):
        body["connectionId"] = connection_id
    body["data"] = event.payload
    return body


def start_position(db: Database, customer_id: str, after: str | None) -> int:
    """The position a feed starts after: the cursor's, the last one for `now`, 0 for none."""
    if after is None:
        return 0
    if after == NOW:
        with db.read() as session:
            return repository.last_position(session, customer_id)
    return decode_cursor(after)


def beyond_the_last(after: int, pointer: str) -> ValidationFailed:
    """A cursor past the customer's last position: none of ours handed out (positions only
    grow), and following it would skip every event up to it once they exist."""
    where, _, name = pointer.strip("/").partition("/")
    detail = (
        f"{encode_cursor(after)!r} is beyond the last event: pass an event's `id` or a "
        "`nextCursor` you were given, `now`, or no cursor"
    )
    return ValidationFailed(
        f"{where} parameter {name}: {detail}", errors=[FieldError(pointer, detail)]
    )


def read_page(
    db: Database,
    customer_id: str,
    *,
    after: int,
    explicit: bool,
    types: Sequence[str] = (),
    connection_id: str | None = None,
    limit: int = 100,
    pointer: str = "/query/after",
) -> Page:
    """The customer's events after `after` (in commit order). `explicit`: `after` came from
    the client, so a place whose following events were pruned is 410, not a silent gap, and
    a place beyond the last event is a 400 at `pointer` (the parameter it came in)."""
    with db.read() as session:
        upto = repository.last_position(session, customer_id)
        if explicit and after > upto:
            raise beyond_the_last(after, pointer)
        if explicit and after < upto:
            oldest = repository.oldest_kept(session, customer_id)
            if oldest is None or oldest > after + 1:
                raise CursorExpired(
                    "Events after this cursor have been pruned (they are kept "
                    "IOD_EVENTS_RETENTION_DAYS days): read the feed again without `after`"
                )
        rows = repository.page(
            session,
            customer_id,
            after=after,
            upto=upto,
            types=types,
            subject_id=connection_id,
            limit=limit,
        )
        events = [document(row) for row in rows]
    full = len(rows) == limit
    # Not full: everything up to `upto` was looked at, matching or not.
    next_position = rows[-1].position if full else max(after, upto)
    return Page(events, next_position, full)


class Hub:
    """Wakes the feed's waiters (long polls, streams) of one process when events commit:
    this process's commits call `notify` (`Database.listen("events")`), and on PostgreSQL
    a LISTEN thread on `iod_events` hears the other processes'. Waiting holds no database
    connection and no thread: an asyncio.Event per waiter, set from whichever thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.streams: dict[str, int] = {}  # open streams per client id
        self.draining = False  # the process is shutting down: streams end (infra.draining)

    def drain(self) -> None:
        """Wakes every waiter for good: a stream sees `draining` and ends its answer."""
        self.draining = True
        self.notify()

    def notify(self) -> None:
        with self._lock:
            self.generation += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self, seen: int, timeout: float) -> bool:
        """Until an event commits after generation `seen` (True) or `timeout` (False); at
        once when the process is shutting down (`draining`)."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            if self.generation != seen or self.draining:
                return True
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0))
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(entry)

    def open_stream(self, client_id: str, most: int) -> bool:
        with self._lock:
            if self.streams.get(client_id, 0) >= most:
                return False
            self.streams[client_id] = self.streams.get(client_id, 0) + 1
            return True

    def close_stream(self, client_id: str) -> None:
        with self._lock:
            left = self.streams.get(client_id, 0) - 1
            if left > 0:
                self.streams[client_id] = left
            else:
                self.streams.pop(client_id, None)


class _Notifying(threading.Event):
    """The wakeup a LISTEN thread sets: each notification wakes the hub's waiters."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub

    def set(self) -> None:
        self._hub.notify()


_hubs: weakref.WeakKeyDictionary[Database, Hub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_of(db: Database) -> Hub:
    """The database's hub, made (and on PostgreSQL its LISTEN thread started) at first use:
    a process that never waits on the feed holds no listening connection."""
    with _hubs_lock:
        hub = _hubs.get(db)
        if hub is None:
            hub = _hubs[db] = Hub()
            draining.register(hub)
            db.listen("events", hub.notify)
            if not db.is_sqlite:
                from iod.jobs.listener import Listener

                stop = threading.Event()
                Listener(db.engine.url, "iod_events", _Notifying(hub), stop).start()
                # The thread ends with its database: disposed, or collected without that.
                db.on_dispose(stop.set)
                weakref.finalize(db, stop.set)
        return hub
