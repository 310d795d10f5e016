"""A request the client sent in time is served even when a timer falls due before the event
loop reads it: a busy loop may run its due timers first, and closing then resets the
connection under the request. The keep-alive
and header timers of `iod.infra.server` look at the receive buffer first, once; a connection
with nothing there is still closed.

The protocol runs on a real event loop over a socket pair; the loop being "busy" is the
transport's reading paused while the timer's handler is called."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from iod.infra.config import get_settings
from iod.infra.server import GuardedHttpToolsProtocol


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok"})


REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _connected() -> tuple[GuardedHttpToolsProtocol, asyncio.Transport, socket.socket]:
    config = Config(_ok, lifespan="off", timeout_keep_alive=60, log_level="warning")
    config.load()
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    protocol = GuardedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    return protocol, transport, theirs  # type: ignore[return-value]


async def _answer(client: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = b""
    while not received.endswith(b"ok"):
        chunk = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
        if not chunk:
            break
        received += chunk
    return received


async def _closed(client: socket.socket) -> bool:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(client, 1), 5) == b""
    except ConnectionResetError:
        return True


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    get_settings.cache_clear()
    try:
        asyncio.run(scenario())
    finally:
        get_settings.cache_clear()


def test_a_request_waiting_when_the_keep_alive_falls_due_is_served() -> None:
    async def scenario() -> None:
        protocol, transport, client = await _connected()
        client.send(REQUEST)
        assert (await _answer(client)).startswith(b"HTTP/1.1 200")
        transport.pause_reading()  # the loop is busy elsewhere...
        client.send(REQUEST)  # ...when the next request arrives, in time
        await asyncio.sleep(0.05)
        protocol.timeout_keep_alive_handler()  # and the keep-alive falls due first
        assert not transport.is_closing()
        transport.resume_reading()
        assert (await _answer(client)).startswith(b"HTTP/1.1 200")
        transport.close()
        client.close()

    _run(scenario)


def test_an_idle_connection_is_still_closed_at_the_keep_alive() -> None:
    async def scenario() -> None:
        protocol, _transport, client = await _connected()
        client.send(REQUEST)
        assert (await _answer(client)).startswith(b"HTTP/1.1 200")
        protocol.timeout_keep_alive_handler()
        assert await _closed(client)
        client.close()

    _run(scenario)


@pytest.mark.parametrize("sent", [REQUEST, b"GET / HT"], ids=["whole", "partial"])
def test_a_first_request_waiting_when_the_header_timer_falls_due_is_read(sent: bytes) -> None:
    """A whole request is served; a partial one gets one more header timeout, then 408."""

    async def scenario() -> None:
        protocol, transport, client = await _connected()
        transport.pause_reading()
        client.send(sent)
        await asyncio.sleep(0.05)
        protocol._timed_out()  # the header timer falls due with the bytes unread
        assert not transport.is_closing()
        transport.resume_reading()
        if sent == REQUEST:
            assert (await _answer(client)).startswith(b"HTTP/1.1 200")
        else:
            await asyncio.sleep(0.05)
            protocol._timed_out()  # the second time nothing waits: 408 and closed
            answer = await _answer(client)
            assert answer.startswith(b"HTTP/1.1 408"), answer
        transport.close()
        client.close()

    _run(scenario)


def test_a_connection_that_sent_nothing_is_still_closed_at_the_header_timeout() -> None:
    async def scenario() -> None:
        protocol, _transport, client = await _connected()
        protocol._timed_out()
        assert await _closed(client)
        client.close()

    _run(scenario)
