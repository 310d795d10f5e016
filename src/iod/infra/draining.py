"""The served process is shutting down: what waits for news (event streams, long polls)
ends now instead of holding the shutdown for `IOD_SHUTDOWN_TIMEOUT`.

uvicorn, stopping (Ctrl-C, SIGTERM), stops accepting, tells every open connection to
finish (`iod.infra.server` hears it there and calls `begin`), then waits up to the timeout
for the responses in progress. A stream that waits for events would never finish by itself:
a `Ctrl-C` with one open held the server for 30 s and ended in a cancelled task's ERROR.
Now each registered waiter's `drain()` wakes it and it ends its answer (an EventSource
reconnects with `Last-Event-ID`, to this server once it is back or to another process).
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol


class Drains(Protocol):
    def drain(self) -> None: ...


_begun = threading.Event()
_lock = threading.Lock()
_waiters: weakref.WeakSet[Drains] = weakref.WeakSet()


def register(waiter: Drains) -> None:
    """`waiter.drain()` is called when the process begins to shut down (at once if it has)."""
    with _lock:
        _waiters.add(waiter)
        begun = _begun.is_set()
    if begun:
        waiter.drain()


def begin() -> None:
    """The process is shutting down: every registered waiter drains (once)."""
    with _lock:
        if _begun.is_set():
            return
        _begun.set()
        waiters = list(_waiters)
    for waiter in waiters:
        waiter.drain()


def begun() -> bool:
    return _begun.is_set()
