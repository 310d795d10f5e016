"""The trailing-slash redirect, relative: `/connections/` → `Location: /connections`.

Starlette builds its redirect from the request's `Host` header, so anyone could make the API
answer a redirect to a host of their choosing (cache poisoning, phishing links with our
name on them). Here the redirect names the path only and is built from nothing the client
sent but the path, which must be one of our routes.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send


def relative_slash_redirects(router: Router) -> None:
    """Replaces the router's own slash redirect (off) by a relative one, tried only when no
    route matched (the hot path never gets here)."""
    router.redirect_slashes = False
    not_found = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path not in ("", "/"):
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            # "//host/…" would be a network-path reference: never one of ours anyway.
            if other and not other.startswith("//"):
                probe = {**scope, "path": other}
                if any(route.matches(probe)[0] != Match.NONE for route in router.routes):
                    query = scope.get("query_string", b"").decode("latin-1")
                    location = other + (f"?{query}" if query else "")
                    await RedirectResponse(location, status_code=307)(scope, receive, send)
                    return
        await not_found(scope, receive, send)

    router.default = default
