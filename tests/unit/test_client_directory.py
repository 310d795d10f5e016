"""The client-state cache keeps the newest read (`ClientDirectory.remember`)."""

import time
from typing import Any, cast

from iod.auth.directory import ClientDirectory, ClientState
from iod.infra.db import Database

ENABLED = ClientState(enabled=True, secret_generation=1, previous_secret_until=None)
DISABLED = ClientState(enabled=False, secret_generation=1, previous_secret_until=None)


def _directory() -> ClientDirectory:
    # No database: every state here comes from `remember`, as the token endpoint's reads do.
    return ClientDirectory(cast(Database, cast(Any, None)), ttl_seconds=60)


def test_an_earlier_read_does_not_replace_a_later_one() -> None:
    directory = _directory()
    now = time.monotonic()
    directory.remember("cli_1", DISABLED, now)  # the later read: disabled
    directory.remember("cli_1", ENABLED, now - 1)  # a token request's read, made before it
    assert directory.cached("cli_1") == DISABLED


def test_a_later_read_replaces_an_earlier_one() -> None:
    directory = _directory()
    now = time.monotonic()
    directory.remember("cli_1", ENABLED, now - 1)
    directory.remember("cli_1", DISABLED, now)
    assert directory.cached("cli_1") == DISABLED


def test_a_state_is_stale_a_ttl_after_its_read() -> None:
    directory = _directory()
    directory.remember("cli_1", ENABLED, time.monotonic() - 61)
    assert directory.cached("cli_1") is None
