"""Following the customer's events: the Server-Sent Events stream, resumed where it ended,
and the long-polled feed where the stream is unavailable (an older server, a proxy that
refuses streams, the client's stream limit)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx

FEED_PATH = "/internet-on-demand/events"
STREAM_PATH = "/internet-on-demand/events/stream"
# Heartbeats come every 15 s by default: a read that waits longer means a dead stream.
READ_TIMEOUT = 40.0

Event = dict[str, Any]


class StreamUnavailable(Exception):
    """The server does not stream events to this client now (404, 501, 429…, no route)."""


def params(after: str | None, types: Sequence[str], connection_id: str | None) -> list[Any]:
    query: list[Any] = [("after", after)] if after else []
    query += [("type", t) for t in types]
    if connection_id:
        query.append(("connectionId", connection_id))
    return query


def _is_stream(response: httpx.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("text/event-stream")


class SseParser:
    """Lines of `text/event-stream` in, events (the feed's documents) out; None for a
    comment line (a heartbeat): proof of life."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[bool, Event | None]:
        """(something arrived, the event if one is complete)."""
        if line.startswith(":"):
            return True, None
        if not line:
            if not self.data:
                return False, None
            text, self.data = "\n".join(self.data), []
            try:
                event = json.loads(text)
            except ValueError:
                return False, None
            return (True, event) if isinstance(event, dict) else (False, None)
        name, _, value = line.partition(":")
        if name == "data":
            self.data.append(value[1:] if value.startswith(" ") else value)
        return False, None


class Follower:
    """The stream, synchronously. `next()` returns an event, or None after a heartbeat or
    when the stream ended or stalled (it is opened again, after the last event seen, at the
    next call); raises StreamUnavailable when it cannot be opened at all."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        after: str | None = "now",
        types: Sequence[str] = (),
        connection_id: str | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.http = http
        self.read_timeout = read_timeout
        self.after = after
        self.types = types
        self.connection_id = connection_id
        self._response: httpx.Response | None = None
        self._lines: Iterator[str] | None = None

    def _open(self) -> None:
        request = self.http.build_request(
            "GET",
            STREAM_PATH,
            params=params(self.after, self.types, self.connection_id),
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(10.0, read=self.read_timeout),
        )
        try:
            response = self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise StreamUnavailable(str(exc)) from exc
        if response.status_code != 200 or not _is_stream(response):
            response.close()
            raise StreamUnavailable(f"the event stream answered {response.status_code}")
        self._response, self._lines = response, response.iter_lines()

    def open(self) -> None:
        if self._lines is None:
            self._open()

    def next(self) -> Event | None:
        if self._lines is None:
            self._open()
        assert self._lines is not None
        parser = SseParser()
        try:
            for line in self._lines:
                alive, event = parser.feed(line)
                if event is not None:
                    self.after = str(event.get("id") or self.after)
                    return event
                if alive:
                    return None
        except httpx.TransportError:
            pass
        self.close()  # ended or stalled: opened again next time
        return None

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response = self._lines = None


class AsyncFollower:
    """`Follower` for `httpx.AsyncClient`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        after: str | None = "now",
        types: Sequence[str] = (),
        connection_id: str | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.http = http
        self.read_timeout = read_timeout
        self.after = after
        self.types = types
        self.connection_id = connection_id
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None

    async def _open(self) -> None:
        request = self.http.build_request(
            "GET",
            STREAM_PATH,
            params=params(self.after, self.types, self.connection_id),
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(10.0, read=self.read_timeout),
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise StreamUnavailable(str(exc)) from exc
        if response.status_code != 200 or not _is_stream(response):
            await response.aclose()
            raise StreamUnavailable(f"the event stream answered {response.status_code}")
        self._response, self._lines = response, response.aiter_lines()

    async def open(self) -> None:
        if self._lines is None:
            await self._open()

    async def next(self) -> Event | None:
        if self._lines is None:
            await self._open()
        assert self._lines is not None
        parser = SseParser()
        try:
            async for line in self._lines:
                alive, event = parser.feed(line)
                if event is not None:
                    self.after = str(event.get("id") or self.after)
                    return event
                if alive:
                    return None
        except httpx.TransportError:
            pass
        await self.close()
        return None

    async def close(self) -> None:
        if self._response is not None:
            await self._response.aclose()
        self._response = self._lines = None
