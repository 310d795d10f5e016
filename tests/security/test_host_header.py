"""Host header injection (issue 12, item 6): the trailing-slash redirect names a path of
ours, relative, and never the host the client claims."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

BASE = "/internet-on-demand/connections"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:443", "127.0.0.1:8080"])
def test_the_trailing_slash_redirect_is_relative_whatever_the_host(
    api: TestClient, headers: dict[str, str], host: str
) -> None:
    redirected = api.get(
        f"{BASE}/?limit=5", headers={**headers, "Host": host}, follow_redirects=False
    )
    assert redirected.status_code == 307
    assert redirected.headers["location"] == f"{BASE}?limit=5"
    assert "evil" not in redirected.text
    # Followed, it is the page itself.
    followed = api.get(f"{BASE}/", headers=headers)
    assert followed.status_code == 200 and followed.json()["connections"] == []


@pytest.mark.parametrize("path", ["/nowhere/", "//evil.example/", "//evil.example", "/"])
def test_paths_that_are_not_ours_with_or_without_a_slash_are_404(
    api: TestClient, path: str
) -> None:
    response = api.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code in (404, 200), path  # "/" may be served; never a redirect
    assert "location" not in response.headers
