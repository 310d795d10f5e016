"""Forwarding headers (issue 12, item 2): `X-Forwarded-For` is believed only from
IOD_TRUSTED_PROXIES, so a caller cannot escape the per-address token throttle or write a
made-up source address into the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from iod.infra.config import Settings
from iod.models import AuditEvent
from tests.security.conftest import BASE, GRANT, LOC, TOKEN, Limited, add_client, mint

FAILURE_BURST = Settings.model_fields["token_failures_burst"].default


def guess(api: Any, client_id: str, forwarded_for: str | None = None) -> int:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    response = api.post(TOKEN, data=GRANT, auth=(client_id, "wrong"), headers=headers)
    return int(response.status_code)


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_address_throttle(
    limited: Any,
) -> None:
    app: Limited = limited()  # no trusted proxy: the default
    caller = app.client_from("198.51.100.1")
    statuses = [
        guess(caller, f"cli_unknown{n}", forwarded_for=f"203.0.113.{n}")
        for n in range(FAILURE_BURST + 1)
    ]
    assert statuses == [401] * FAILURE_BURST + [429]


def test_a_trusted_proxy_forwards_the_clients_address_and_only_its_own_hop_counts(
    limited: Any,
) -> None:
    app: Limited = limited(trusted_proxies="10.0.0.0/8, 192.0.2.1")
    proxy = app.client_from("10.1.2.3")
    # Many clients behind the proxy: each has its own address bucket.
    for n in range(FAILURE_BURST + 2):
        assert guess(proxy, f"cli_unknown{n}", forwarded_for=f"203.0.113.{n}") == 401
    # One client behind it forging the left part of the chain: the proxy appended the
    # address it saw, the first untrusted hop from the right, and that one is throttled.
    statuses = [
        guess(proxy, f"cli_other{n}", forwarded_for=f"198.51.100.{n}, 203.0.113.200")
        for n in range(FAILURE_BURST + 1)
    ]
    assert statuses == [401] * FAILURE_BURST + [429]
    # The header from a peer that is not a trusted proxy is still ignored.
    untrusted = app.client_from("198.51.100.77")
    for n in range(FAILURE_BURST):
        assert guess(untrusted, f"cli_x{n}", forwarded_for=f"203.0.113.{100 + n}") == 401
    assert guess(untrusted, "cli_last", forwarded_for="203.0.113.250") == 429


def _sources(app: Limited) -> list[str]:
    with app.services.db.read() as session:
        return list(session.scalars(select(AuditEvent.source).order_by(AuditEvent.at)))


@pytest.mark.parametrize(
    ("trusted", "peer", "expected"),
    [("", "198.51.100.1", "198.51.100.1"), ("198.51.100.0/24", "198.51.100.1", "203.0.113.9")],
    ids=["untrusted-peer", "trusted-proxy"],
)
def test_the_audit_source_is_the_peer_unless_a_trusted_proxy_forwarded_it(
    limited: Any, trusted: str, peer: str, expected: str
) -> None:
    app: Limited = limited(trusted_proxies=trusted)
    tenant = add_client(app.services)
    created = app.client_from(peer).post(
        BASE,
        json={"bandwidth": "100 Mbps", "locationId": LOC},
        headers={**mint(app.services, tenant), "X-Forwarded-For": "203.0.113.9"},
    )
    assert created.status_code == 201, created.text
    assert _sources(app) == [expected]


@pytest.mark.parametrize("value", ["not-an-address", "10.0.0.0/33", "10.0.0.1, bogus"])
def test_trusted_proxies_must_be_addresses_or_networks(value: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=value)


def test_a_network_written_with_host_bits_is_trusted_as_the_network_everywhere() -> None:
    """`10.1.0.5/16` is accepted as 10.1.0.0/16 by the settings; uvicorn's proxy middleware
    (strict parsing) must then trust that same network, as the connection bounds do."""
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    settings = Settings(trusted_proxies="10.1.0.5/16, 127.0.0.1")
    assert settings.trusted_proxy_list == ["10.1.0.0/16", "127.0.0.1/32"]
    trusted = _TrustedHosts(settings.trusted_proxy_list)
    assert "10.1.200.7" in trusted
    assert "10.2.0.1" not in trusted
