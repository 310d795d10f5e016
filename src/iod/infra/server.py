"""uvicorn's httptools protocol with the two guards against slow or greedy clients it lacks.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but gives a client all the
time it likes to send a request's headers, and with httptools (which `iod serve` uses) it
buffers headers of any size. Here a request's request line and headers must arrive within
`IOD_HTTP_HEADER_TIMEOUT_SECONDS` of its first byte (or of the connection opening) and fit
in `IOD_HTTP_MAX_HEADER_BYTES`; otherwise the connection gets 408 or 431 (problem+json) and
is closed. Bodies are timed by the middleware (`IOD_HTTP_BODY_TIMEOUT_SECONDS`). A request
the HTTP parser refuses is answered 400 problem+json, type bad-request (uvicorn's own
answer is plain text).

Idle sockets must not crowd out real requests (issue 12: 1,050 sockets that sent nothing
made every request fail with uvicorn's plain-text 503). So, per process:
- a connection that has not sent a complete request head within the header timeout is
  closed, including one that never sends a byte;
- each client address holds at most `IOD_HTTP_MAX_CONNECTIONS_PER_ADDRESS` connections (a
  trusted proxy, IOD_TRUSTED_PROXIES, is exempt), and the process at most
  `IOD_HTTP_MAX_CONNECTIONS`: one more is answered 429 (the address) or 503 (the process),
  problem+json with `Retry-After`, and closed;
- only requests in progress count towards `IOD_HTTP_MAX_CONCURRENCY` (uvicorn's own limit
  counts idle connections too): beyond it a request is answered 503 problem+json with
  `Retry-After` by uvicorn's request cycle (so its body is read and the connection kept).

`iod serve` names this class to uvicorn by its import path, so `--workers N` children
load it too; it reads the settings from the environment like the rest of the process.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import json
import socket
import termios
from collections import Counter
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any, ClassVar

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from iod.infra import draining
from iod.infra.config import get_settings

IMPORT_PATH = "iod.infra.server:GuardedHttpToolsProtocol"


# Seconds a client is told to wait after a refusal for lack of room.
RETRY_AFTER = 1


def _problem_body(status: int, title: str, type_name: str, detail: str) -> bytes:
    return json.dumps(
        {"type": f"/problems/{type_name}", "title": title, "status": status, "detail": detail}
    ).encode()


def _problem(
    status: int, reason: str, type_name: str, detail: str, retry_after: int | None = None
) -> bytes:
    body = _problem_body(status, reason, type_name, detail)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_OVERLOADED = _problem_body(
    503, "Service unavailable", "service-unavailable",
    "the server has too many requests in progress; retry after the Retry-After seconds",
)  # fmt: skip


async def _overloaded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """uvicorn's answer beyond the concurrency limit, as problem+json with Retry-After."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(_OVERLOADED)).encode()),
                (b"retry-after", str(RETRY_AFTER).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _OVERLOADED})


def _networks(addresses: list[str]) -> list[IPv4Network | IPv6Network]:
    return [ip_network(address, strict=False) for address in addresses]


def _in(host: str, networks: list[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _no_delay(transport: asyncio.Transport) -> None:
    """TCP_NODELAY, so a response's head and body written one after the other leave at once.

    asyncio's loop sets it only on sockets whose protocol number says TCP; the listening
    socket `uvicorn --workers N` shares with its children is made with protocol 0, so their
    connections went without it, and every answer waited for the client's delayed ACK
    (40 ms per request on Linux; found by the benchmark's 2-process rows)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _unread(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait in the connection's receive buffer that the loop has not read.

    A busy event loop may run a due timer before it reads what arrived meanwhile (uvloop
    runs the timers first in each turn): a keep-alive or header timer would then close a
    connection whose next request is already there, sent in time, and the kernel would
    answer the client with a reset. FIONREAD asks the kernel without reading. (A request
    sent after the keep-alive has closed the connection still meets the reset: that is the
    client's to retry, docs/performance.md "Resets under load".)"""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    waiting = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting, True)
    except OSError:
        return False
    return waiting[0] > 0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Open connections per client address, in this process (one event loop: no lock).
    per_address: ClassVar[Counter[str]] = Counter()
    _exempt: ClassVar[list[IPv4Network | IPv6Network] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._header_timeout = settings.http_header_timeout_seconds
        self._max_header_bytes = settings.http_max_header_bytes
        self._max_connections = settings.http_max_connections
        self._max_per_address = settings.http_max_connections_per_address
        self._max_requests = settings.http_max_concurrency
        if GuardedHttpToolsProtocol._exempt is None:
            GuardedHttpToolsProtocol._exempt = _networks(settings.trusted_proxy_list)
        self._counted: str | None = None  # the address this connection is counted under
        self._header_timer: asyncio.TimerHandle | None = None
        self._pending_bytes = 0  # bytes received while the current headers are incomplete
        self._header_bytes = 0  # size of the current request line and headers
        self._request_started = False
        self._refused = False
        self._spared = False  # a timer let unread bytes be read once (per request, per idle)

    # -- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _no_delay(transport)
        if self._max_connections and len(self.connections) > self._max_connections:
            self._refuse(
                _problem(
                    503, "Service Unavailable", "service-unavailable",
                    "the server has too many open connections", RETRY_AFTER,
                )
            )  # fmt: skip
            return
        host = self.client[0] if self.client else ""
        if self._max_per_address and not _in(host, self._exempt or []):
            if self.per_address[host] >= self._max_per_address:
                self._refuse(
                    _problem(
                        429, "Too Many Requests", "rate-limited",
                        f"this address has {self._max_per_address} connections open already",
                        RETRY_AFTER,
                    )
                )  # fmt: skip
                return
            self.per_address[host] += 1
            self._counted = host
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            left = self.per_address[self._counted] - 1
            if left > 0:
                self.per_address[self._counted] = left
            else:
                del self.per_address[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn is stopping and tells each connection to finish: streams and long polls
        that wait for news end now (`infra.draining`), not after IOD_SHUTDOWN_TIMEOUT."""
        draining.begin()
        super().shutdown()

    def on_response_complete(self) -> None:
        self._spared = False  # the keep-alive wait that follows may be spared once
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn's keep-alive timeout, but a request already in the buffer is read and
        served (it cancels the timer set again here) instead of reset."""
        if not self._spared and not self.transport.is_closing() and _unread(self.transport):
            self._spared = True
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # httptools keeps a header that is not complete yet in its own buffer: bound it by
        # what arrived while the headers were incomplete.
        if self._header_timer is not None and not self._refused:
            self._pending_bytes += len(data)
            if self._pending_bytes > self._max_header_bytes:
                self._too_large()

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a later request on a keep-alive connection
            self._arm()
        self._request_started = True
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._refused:
            return
        if self._header_bytes > self._max_header_bytes:
            self._too_large()
            return
        if self._max_requests and len(self.tasks) >= self._max_requests:
            # uvicorn's request cycle answers with this app instead (body read and dropped,
            # keep-alive kept); its own limit_concurrency is off (see uvicorn_options).
            app, self.app = self.app, _overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    # -- the guards ---------------------------------------------------------------------

    def _arm(self) -> None:
        self._spared = False
        self._pending_bytes = 0
        self._request_started = False
        self._header_timer = self.loop.call_later(self._header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_large(self) -> None:
        self._refuse(
            _problem(
                431, "Request Header Fields Too Large", "headers-too-large",
                f"the request line and headers exceed {self._max_header_bytes} bytes",
            )
        )  # fmt: skip

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._spared and _unread(self.transport):
            # What arrived may complete the headers: read it before judging (once).
            self._spared = True
            self._header_timer = self.loop.call_later(self._header_timeout, self._timed_out)
            return
        if not self._request_started:
            self.transport.close()  # nothing sent at all: nobody to answer
            return
        self._refuse(
            _problem(
                408, "Request Timeout", "request-timeout",
                f"the request headers did not arrive within {self._header_timeout:g} s",
            )
        )  # fmt: skip

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (a control character in a header, a broken
        request line): uvicorn answers it in plain text; here it is problem+json too."""
        self._refuse(
            _problem(400, "Bad request", "bad-request",
                     "the request is not valid HTTP/1.1 (its request line or a header)")
        )  # fmt: skip

    def _refuse(self, response: bytes) -> None:
        """Answers and closes; whatever else the client sends is ignored."""
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
