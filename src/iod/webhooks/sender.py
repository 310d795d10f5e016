"""One webhook attempt over HTTP, to an address that was checked (`safety.py`).

The request goes to the checked IP address itself, with the original `Host` header and,
for https, the original name as TLS SNI and certificate name (httpx's `sni_hostname`
extension), so what is connected to is exactly what was checked. Redirects are not followed,
proxies from the environment are not used, at most 1 KiB of the answer is kept, and all
the receiver's text kept (body, `Location`) is made storable here (`storable`: PostgreSQL
text cannot hold NUL). An attempt takes at most `timeout` in all: httpx's timeouts are per
read, so every socket operation of an attempt (connect, TLS, each write and read, the
status line and headers included) is given only what is left of the attempt's deadline
(`_Deadlines`), and a receiver that trickles its answer a byte at a time is cut at it. The
host's name is looked up under the same deadline (`safety.resolve`). Each
thread keeps a client per (scheme, host) for keep-alive: its pooled connections all go to
addresses checked for that host with that certificate name.
"""

from __future__ import annotations

import functools
import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from iod.webhooks import safety

MAX_BODY = 1024
_CLIENTS_PER_THREAD = 64
_local = threading.local()


def storable(text: str) -> str:
    """`text` as a database text column can hold it: NUL (which PostgreSQL refuses) becomes
    U+FFFD, as undecodable bytes do."""
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    body: str | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _left(timeout: float | None) -> float:
    """What is left of this thread's attempt's deadline, at most `timeout`; a read timeout
    when nothing is (mapped to httpx.ReadTimeout by httpx)."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return math.inf if timeout is None else timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the attempt took longer than the timeout in all")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation waits at most for what is left of the deadline of
    the attempt the thread is making (`_local.deadline`)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _left(timeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Deadlines(httpcore.NetworkBackend):
    """httpcore's own backend, its connections under the attempt's deadline."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _left(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _transport() -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(
        trust_env=False, limits=httpx.Limits(max_connections=16, max_keepalive_connections=4)
    )
    # httpx does not take a network backend; its pool is httpcore's, which does. Checked by
    # tests/unit/test_webhooks.py (a receiver trickling its headers is cut in time).
    pool = transport._pool
    if not isinstance(pool, httpcore.ConnectionPool):  # pragma: no cover - no proxy is used
        raise TypeError(f"unexpected httpx pool {type(pool).__name__}")
    pool._network_backend = _Deadlines(pool._network_backend)
    return transport


def _client(scheme: str, host: str, timeout: float) -> httpx.Client:
    clients: OrderedDict[tuple[str, str, float], httpx.Client] | None = getattr(
        _local, "clients", None
    )
    if clients is None:
        clients = _local.clients = OrderedDict()
    key = (scheme, host, timeout)
    client = clients.get(key)
    if client is None:
        client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            transport=_transport(),
        )
        clients[key] = client
        while len(clients) > _CLIENTS_PER_THREAD:
            _, old = clients.popitem(last=False)
            old.close()
    else:
        clients.move_to_end(key)
    return client


@functools.lru_cache(maxsize=1024)
def _pinned(url: str, address: str) -> tuple[httpx.URL, str]:
    """The URL with its host replaced by the checked address, and the original `Host`."""
    original = httpx.URL(url)
    return original.copy_with(host=address), original.netloc.decode("ascii")


@functools.lru_cache(maxsize=16)
def _timeouts(seconds: float) -> dict[str, float]:
    return {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allowed: list[safety.Network],
    allow_http: bool,
    timeout: float,
) -> Outcome:
    """POSTs `body` once; never raises for what the receiver or the network does."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    deadline = started + timeout
    try:
        target = safety.check_url(url, allow_http=allow_http)
        address = safety.resolve(target, allowed, timeout=deadline - time.monotonic())
    except safety.Refused as exc:
        return Outcome(None, None, f"refused: {exc}", took())
    except safety.ResolveTimeout as exc:
        return Outcome(None, None, f"timeout after {timeout:g} s: {exc}", took())
    pinned, host_header = _pinned(url, str(address))
    request_headers = {
        **headers,
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "iod-webhooks/1",
    }
    # Built here rather than by the client (no default headers, cookies or auth to merge):
    # the timeouts must then be given explicitly, per phase.
    extensions: dict[str, Any] = {"timeout": _timeouts(timeout)}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    client = _client(target.scheme, target.host, timeout)
    _local.deadline = deadline
    try:
        request = httpx.Request(
            "POST", pinned, content=body, headers=request_headers, extensions=extensions
        )
        response = client.send(request, stream=True)
        try:
            kept = b""
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) >= MAX_BODY:
                    break
                if time.monotonic() - started > timeout:
                    raise httpx.ReadTimeout("the answer took longer than the timeout in all")
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        return Outcome(None, None, f"timeout after {timeout:g} s: {type(exc).__name__}", took())
    except httpx.HTTPError as exc:
        return Outcome(None, None, storable(f"{type(exc).__name__}: {exc}"[:1000]), took())
    finally:
        _local.deadline = None
    text = storable(kept[:MAX_BODY].decode("utf-8", errors="replace"))
    status = response.status_code
    error = None
    if 300 <= status < 400:
        location = storable(response.headers.get("location", "")[:200])
        error = f"redirect not followed (Location: {location})"
    elif not 200 <= status < 300:
        error = f"HTTP {status}"
    retry_after = None
    if status in (429, 503):
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
    return Outcome(status, text, error, took(), retry_after)
