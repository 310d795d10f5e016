"""`AsyncClient`: the SDK for asyncio, the same operations as `Client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from iod.client import _common as c
from iod.client import money as m
from iod.client._config import resolve
from iod.client.auth import ClientCredentialsAuth
from iod.client.errors import ApiError
from iod.client.events import READ_TIMEOUT, AsyncFollower, StreamUnavailable
from iod.client.models import (
    ACTIVE,
    BandwidthChange,
    BandwidthUpdateResult,
    Connection,
    Token,
    Traffic,
)
from iod.client.retry import RetryPolicy
from iod.client.schedules import AsyncScheduleMethods

OnPoll = Callable[[Connection], None]


class AsyncClient(AsyncScheduleMethods):
    """The Internet On-Demand API for asyncio; see `Client`. Use `async with`, or
    `await aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        scope: str | None = None,
        timeout: float = c.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        config = resolve(url, client_id, client_secret)
        self.url = config.url
        self.client_id = config.client_id
        self.retry = retry or RetryPolicy()
        self.auth = ClientCredentialsAuth(
            self.url + c.TOKEN_PATH, config.client_id, config.client_secret, scope=scope
        )
        self._http = httpx.AsyncClient(
            base_url=self.url,
            auth=self.auth,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "iod-python", **(headers or {})},
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r}, client_id={self.client_id!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ----------------------------------------------------------------------

    async def _retrying(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                return c.check(await send())
            except (httpx.TransportError, ApiError) as exc:
                delay = c.retry_delay(self.retry, attempt, exc)
                if delay is None:
                    if isinstance(exc, httpx.TransportError):
                        raise c.transport_error(self.url, exc, attempt) from exc
                    raise
            await self._sleep(delay)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Any API call, with tokens, retries and errors handled; the decoded JSON."""
        headers = c.request_headers(method)  # one Idempotency-Key for every attempt
        response = await self._retrying(
            lambda: self._http.request(method, path, json=json, params=params, headers=headers)
        )
        if response.status_code == 204:  # No Content (a DELETE)
            return None
        return c.json_body(response)

    # -- operations --------------------------------------------------------------------

    async def authenticate(self) -> Token:
        """Fetches a fresh token now (checks the URL and the credentials)."""
        response = await self._retrying(
            lambda: self._http.send(self.auth.token_request(), auth=None)
        )
        self.auth.accept(response)
        assert self.auth.granted is not None
        return self.auth.granted

    async def list_connections(
        self,
        *,
        page_size: int | None = None,
        status: list[str] | None = None,
        location: str | None = None,
    ) -> AsyncIterator[Connection]:
        """Every connection of the customer, following `nextCursor` page after page."""
        params: dict[str, Any] = {} if page_size is None else {"limit": page_size}
        if status:
            params["status"] = list(status)
        if location is not None:
            params["location"] = location
        seen: set[str] = set()
        while True:
            items, cursor = c.page(await self.request("GET", c.CONNECTIONS, params=params))
            for item in items:
                yield c.parse(Connection, item)
            if cursor is None:
                return
            params["cursor"] = c.follow(cursor, seen)

    async def get_connection(self, connection_id: str) -> Connection:
        return c.parse(Connection, await self.request("GET", c.connection_path(connection_id)))

    async def create_connection(
        self,
        location_id: str,
        bandwidth: str,
        description: str | None = None,
        *,
        quote_id: str | None = None,
        wait: bool = False,
        timeout: float = c.DEFAULT_WAIT,
        on_poll: OnPoll | None = None,
    ) -> Connection:
        """Orders a connection; with `wait`, returns once it is active."""
        body = c.create_body(location_id, bandwidth, description)
        if quote_id is not None:  # the quoted rate (docs/money.md)
            body["quoteId"] = quote_id
        connection = c.parse(Connection, await self.request("POST", c.CONNECTIONS, json=body))
        if wait:
            return await self.wait_until(connection.id, ACTIVE, timeout=timeout, on_poll=on_poll)
        return connection

    async def update_bandwidth(
        self,
        connection_id: str,
        bandwidth: str,
        effective_date: datetime | str | None = None,
        *,
        revert_at: datetime | str | None = None,
        quote_id: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        on_poll: OnPoll | None = None,
    ) -> BandwidthUpdateResult:
        """Changes the bandwidth now, or at `effective_date`; see `Client.update_bandwidth`."""
        body = c.update_body(bandwidth, effective_date, revert_at)
        if quote_id is not None:  # the quoted rate (docs/money.md)
            body["quoteId"] = quote_id
        path = c.connection_path(connection_id) + "/bandwidth"
        result = c.parse(BandwidthUpdateResult, await self.request("PUT", path, json=body))
        change = result.change
        if not wait or change is None:  # no change: it has that bandwidth then anyway
            return result
        connection = await self.wait_for_change(
            result.id,
            change.id,
            change.bandwidth,
            effective_date=change.effective_date,
            timeout=timeout,
            on_poll=on_poll,
        )
        return c.applied(connection, change)

    async def traffic(
        self,
        connection_id: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        step: int | None = None,
    ) -> Traffic:
        """Measured traffic between `start` and `end` (timezone-aware; default the last
        hour) in bins of `step` seconds: bits per second in and out, peak, 95th
        percentile and utilisation of the tier in force."""
        params = c.traffic_params(start, end, step)
        path = c.connection_path(connection_id) + "/traffic"
        return c.parse(Traffic, await self.request("GET", path, params=params))

    async def list_bandwidth_changes(self, connection_id: str) -> list[BandwidthChange]:
        """Every change of the connection, past and pending, in effective order (following
        `nextCursor` page after page)."""
        changes: list[BandwidthChange] = []
        params: dict[str, Any] = {}
        seen: set[str] = set()
        while True:
            path = c.changes_path(connection_id)
            items, cursor = c.parse_changes(await self.request("GET", path, params=params))
            changes.extend(items)
            if cursor is None:
                return changes
            params["cursor"] = c.follow(cursor, seen)

    async def cancel_bandwidth_change(self, connection_id: str, change_id: str) -> BandwidthChange:
        """Cancels a change that is still scheduled (a boost's revert goes with it)."""
        path = c.changes_path(connection_id, change_id) + "/cancel"
        return c.parse(BandwidthChange, await self.request("POST", path))

    async def suspend(self, connection_id: str) -> Connection:
        """Asks for the connection to be suspended; `target_status` shows it is on its way."""
        return c.parse(
            Connection, await self.request("POST", c.action_path(connection_id, "suspend"))
        )

    async def resume(self, connection_id: str) -> Connection:
        return c.parse(
            Connection, await self.request("POST", c.action_path(connection_id, "resume"))
        )

    async def terminate(self, connection_id: str) -> Connection:
        return c.parse(
            Connection, await self.request("POST", c.action_path(connection_id, "terminate"))
        )

    async def wait_until(
        self,
        connection_id: str,
        status: str = ACTIVE,
        *,
        timeout: float = c.DEFAULT_WAIT,
        on_poll: OnPoll | None = None,
    ) -> Connection:
        """Until the connection has `status`: woken by its events on the stream, or polling
        (0.2 s, growing to 2 s) where the stream is unavailable."""
        waiter = c.Waiter(
            c.describe_wait(connection_id, status),
            c.status_reached(status),
            timeout,
            clock=self._clock,
        )
        return await self._wait(connection_id, waiter, on_poll)

    async def wait_for_change(
        self,
        connection_id: str,
        change_id: str,
        bandwidth: str,
        *,
        effective_date: datetime | str | None = None,
        timeout: float | None = None,
        on_poll: OnPoll | None = None,
    ) -> Connection:
        """Polls until change `change_id` is in force; see `Client.wait_for_change`."""
        start_in = c.seconds_until(effective_date)
        waiter = c.Waiter(
            c.describe_change(connection_id, change_id, bandwidth),
            c.change_applied(change_id, bandwidth),
            timeout if timeout is not None else c.DEFAULT_WAIT + start_in,
            start_in=start_in,
            clock=self._clock,
        )
        return await self._wait(connection_id, waiter, on_poll)

    async def _wait(
        self, connection_id: str, waiter: c.Waiter, on_poll: OnPoll | None
    ) -> Connection:
        """As `Client._wait`: woken by the connection's events on the stream, or polling."""
        stream: AsyncFollower | None = AsyncFollower(
            self._http,
            connection_id=connection_id,
            read_timeout=max(1.0, min(READ_TIMEOUT, waiter.timeout)),
        )
        try:
            assert stream is not None
            await stream.open()  # before the first read: no event is missed in between
        except StreamUnavailable:
            stream = None
        try:
            while True:
                connection = await self.get_connection(connection_id)
                if on_poll is not None:
                    on_poll(connection)
                delay = waiter.after(connection)
                if delay is None:
                    return connection
                if stream is None:
                    await self._sleep(delay)
                    continue
                try:
                    await stream.next()
                except StreamUnavailable:
                    stream = None
        finally:
            if stream is not None:
                await stream.close()

    # -- money (docs/money.md) ---------------------------------------------------------

    async def list_locations(self) -> list[m.CatalogLocation]:
        """The locations you may order at: tiers, whether each fits now, prices now."""
        data = await self.request("GET", m.LOCATIONS)
        return [c.parse(m.CatalogLocation, item) for item in data["locations"]]

    async def get_location(self, location_id: str) -> m.CatalogLocation:
        return c.parse(m.CatalogLocation, await self.request("GET", f"{m.LOCATIONS}/{location_id}"))

    async def quote(
        self,
        bandwidth: str,
        *,
        location_id: str | None = None,
        connection_id: str | None = None,
        effective_date: datetime | str | None = None,
        revert_at: datetime | str | None = None,
    ) -> m.Quote:
        """A price for a new connection (`location_id`) or a change (`connection_id`), valid
        15 minutes: pass its id as `quote_id` to `create_connection`/`update_bandwidth`."""
        body = m.quote_body(bandwidth, location_id, connection_id, effective_date, revert_at)
        return c.parse(m.Quote, await self.request("POST", m.QUOTES, json=body))

    async def usage(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        month: str | None = None,
        connection_id: str | None = None,
        granularity: str = "hour",
    ) -> m.Usage:
        """Rated usage: of `month` ("2026-11", UTC), or `start`..`end` (default: this month
        so far), per hour, day or month."""
        query = m.usage_params(start, end, connection_id, granularity, month)
        return c.parse(m.Usage, await self.request("GET", m.USAGE, params=query))

    async def statements(self) -> list[m.StatementSummary]:
        """Your monthly statements, newest first."""
        data = await self.request("GET", m.STATEMENTS)
        return [c.parse(m.StatementSummary, item) for item in data["statements"]]

    async def statement(self, statement_id: str) -> m.Statement:
        return c.parse(m.Statement, await self.request("GET", f"{m.STATEMENTS}/{statement_id}"))

    async def statement_csv(self, statement_id: str) -> str:
        """The statement as CSV (lines, cap adjustments, totals)."""
        path = f"{m.STATEMENTS}/{statement_id}"
        headers = c.request_headers("GET") | {"Accept": "text/csv"}
        response = await self._retrying(lambda: self._http.request("GET", path, headers=headers))
        return response.text
