"""OAuth 2.0 client credentials (RFC 6749 §4.4) as an `httpx.Auth`.

The token is fetched through the client's own transport, cached, fetched again shortly
before it expires, and fetched again once when the API answers 401 (revoked keys, a clock
that disagrees). Works with `httpx.Client` and `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from urllib.parse import quote_plus

import httpx
from pydantic import ValidationError

from iod.client.errors import UnexpectedResponse, error_from_response
from iod.client.models import Token
from iod.client.retry import parse_retry_after


class ClientCredentialsAuth(httpx.Auth):
    """Bearer tokens from `token_url` for `client_id`/`client_secret`.

    A token is renewed when less than `refresh_margin` seconds of its life are left (default:
    a fifth of its lifetime, at most 60 s). `token_requests` counts the tokens fetched.
    """

    requires_request_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_margin: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self.granted: Token | None = None
        self.token_requests = 0
        self._sync_lock = threading.RLock()
        self._async_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth({self.token_url!r}, client_id={self.client_id!r})"

    # -- the token ---------------------------------------------------------------------

    def token_request(self) -> httpx.Request:
        """The token request: client_secret_basic, form-encoded per RFC 6749 §2.3.1."""
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return httpx.Request(
            "POST",
            self.token_url,
            data=form,
            headers={
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
                "Accept": "application/json",
            },
        )

    def accept(self, response: httpx.Response) -> str:
        """Caches the token of a token response, or raises its error."""
        self.token_requests += 1
        if response.status_code != 200:
            raise error_from_response(
                response, parse_retry_after(response.headers.get("Retry-After"))
            )
        try:
            body = response.json()
            token = body["access_token"]
            granted = Token.model_validate(body)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise UnexpectedResponse(
                f"the token endpoint {self.token_url} did not answer a token"
            ) from exc
        if not isinstance(token, str) or not token:
            raise UnexpectedResponse(f"the token endpoint {self.token_url} did not answer a token")
        lifetime = float(granted.expires_in)
        margin = self.refresh_margin
        if margin is None:
            margin = min(60.0, lifetime / 5)
        self._token = token
        self._refresh_at = self._clock() + lifetime - margin
        self.granted = granted
        return token

    def cached(self) -> str | None:
        """The cached token while it is fresh enough."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    def invalidate(self, token: str | None = None) -> None:
        """Forgets the cached token (only if it is still `token`, when given)."""
        if token is None or self._token == token:
            self._token = None

    # -- the flows ---------------------------------------------------------------------

    @staticmethod
    def _authorize(request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        with self._sync_lock:
            token = self.cached()
            if token is None:
                answer = yield self.token_request()
                answer.read()
                token = self.accept(answer)
        response = yield self._authorize(request, token)
        if response.status_code != 401:
            return
        with self._sync_lock:
            self.invalidate(token)
            fresh = self.cached()
            if fresh is None:
                answer = yield self.token_request()
                answer.read()
                fresh = self.accept(answer)
        yield self._authorize(request, fresh)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        async with self._async_lock:
            token = self.cached()
            if token is None:
                answer = yield self.token_request()
                await answer.aread()
                token = self.accept(answer)
        response = yield self._authorize(request, token)
        if response.status_code != 401:
            return
        async with self._async_lock:
            self.invalidate(token)
            fresh = self.cached()
            if fresh is None:
                answer = yield self.token_request()
                await answer.aread()
                fresh = self.accept(answer)
        yield self._authorize(request, fresh)
