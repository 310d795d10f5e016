"""Where the client finds the API and its credentials: arguments first, then `IOD_*`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from iod.client.errors import ConfigurationError

ENV_URL = "IOD_URL"
ENV_CLIENT_ID = "IOD_CLIENT_ID"
ENV_CLIENT_SECRET = "IOD_CLIENT_SECRET"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True)
class Config:
    url: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"Config(url={self.url!r}, client_id={self.client_id!r}, client_secret='***')"


def check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"the API URL must look like https://host[:port], not {url!r}")
    return url


def resolve(url: str | None, client_id: str | None, client_secret: str | None) -> Config:
    url = url or os.environ.get(ENV_URL)
    client_id = client_id or os.environ.get(ENV_CLIENT_ID)
    client_secret = client_secret or os.environ.get(ENV_CLIENT_SECRET)
    missing = [
        name
        for name, value in (
            (ENV_URL, url),
            (ENV_CLIENT_ID, client_id),
            (ENV_CLIENT_SECRET, client_secret),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"missing {', '.join(missing)}: pass url, client_id and client_secret, "
            "or set IOD_URL, IOD_CLIENT_ID and IOD_CLIENT_SECRET"
        )
    assert url and client_id and client_secret
    return Config(check_url(url), client_id, client_secret)
