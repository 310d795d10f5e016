"""Where webhooks may go (SSRF protection).

A delivery never reaches the service's own network: the URL's host is resolved at every
attempt and an address is used only when it is public (`is_global`, not multicast, not a
cloud metadata address), or inside a network the operator allows
(IOD_WEBHOOK_ALLOW_NETWORKS). IPv6 addresses that carry an IPv4 one (IPv4-mapped
`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address
too. The sender then connects to the address that was checked (`sender.py`), so a name that
resolves differently a moment later (DNS rebinding) cannot redirect it.

The name is looked up within the attempt's deadline (`_lookup`): `getaddrinfo` cannot be
interrupted, so it runs on a thread of its own while the attempt waits at most what is left
of its timeout (`ResolveTimeout` then, a timeout like any other of the attempt). A lookup
that timed out keeps its thread until the system's resolver gives up (resolv.conf's
`timeout` times `attempts`, per name server), so the lookups in flight are bounded: one per
host name at a time (attempts to a name being looked up wait for that lookup) and LOOKUPS in
all; an attempt finding them all taken waits for one within its deadline. The threads are
daemons: a hanging lookup does not hold back a stopping process.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from iod.infra.errors import shown

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
MAX_URL_LENGTH = 2048
# IPv4 in the short forms the resolver's inet_aton takes (2130706433, 127.1, 0x7f.0.0.1,
# 0177.0.0.1): no DNS name looks like this, so such a host is an address, judged at creation.
_NUMERIC_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
# Host name lookups in flight in a process at most, each on a thread of its own (hanging ones
# included): half the sending threads (delivery.SENDING_THREADS); a lookup takes milliseconds.
LOOKUPS = 32
_lookups = threading.Condition()
_in_flight: dict[str, Future[list[Any]]] = {}  # host name -> its lookup


class Refused(Exception):
    """The URL or the address it resolves to may not be sent to."""


class ResolveTimeout(Exception):
    """The host's name was not resolved within the attempt's timeout: a failed attempt like
    any timeout (retried), not a refused address."""


def parse_networks(text: str) -> list[Network]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _6TO4:
        return address.sixtofour
    return None


def why_forbidden(address: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why `address` may not be sent to, or None when it may."""
    if any(address in network for network in allowed if network.version == address.version):
        return None
    inner = _embedded_ipv4(address)
    if inner is not None:
        reason = why_forbidden(inner, allowed)
        return None if reason is None else f"{address} carries {inner}, {reason}"
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    for name, flag in (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is a {name} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written (lower case), without brackets or a trailing dot
    port: int

    @property
    def literal(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            pass
        if _NUMERIC_IPV4.fullmatch(self.host):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(self.host))
            except OSError:
                return None
        return None


def check_url(url: str, *, allow_http: bool) -> Target:
    """The URL's scheme, host and port; Refused (with a reason for the customer) when it is
    not an absolute http(s) URL a webhook may have."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or not url.isascii():
        raise Refused("spaces, control and non-ASCII characters must be percent-encoded")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise Refused("an https:// URL")
    if scheme == "http" and not allow_http:
        raise Refused("must be https:// (plain http is not allowed by this service)")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials in the URL are not allowed: authenticate with the signature")
    if parts.fragment:
        raise Refused("a URL without a #fragment")
    host = (parts.hostname or "").lower()
    # A trailing dot names the same host (`localhost.` is `localhost`): judged without it.
    host = host[:-1] if host.endswith(".") else host
    if not host:
        raise Refused("a URL with a host")
    if host.startswith(".") or host.endswith(".") or ".." in host:
        raise Refused("not a valid host name: an empty label")
    if ":" not in host:  # a name (or an IPv4 address), which DNS limits
        if len(host) > 253:
            raise Refused("not a valid host name: longer than 253 characters")
        if any(len(label) > 63 for label in host.split(".")):
            raise Refused("not a valid host name: a label longer than 63 characters")
    try:
        httpx.URL(url)  # what the delivery builds its request from (sender._pinned)
    except (httpx.InvalidURL, ValueError) as exc:  # e.g. `8.8.8.08`, `[2606:4700::1].`
        raise Refused(f"not a valid URL: {shown(str(exc))}") from exc
    if port == 0:
        raise Refused("port 0 is not a port a webhook can be sent to")
    return Target(scheme, host, port or (443 if scheme == "https" else 80))


def check_literal(target: Target, allowed: Sequence[Network]) -> None:
    """At creation: a host that is an IP address (or `localhost`) must be allowed."""
    literal = target.literal
    if literal is None and (target.host == "localhost" or target.host.endswith(".localhost")):
        literal = ipaddress.ip_address("127.0.0.1")
    if literal is not None:
        reason = why_forbidden(literal, allowed)
        if reason is not None:
            raise Refused(f"{reason}: webhooks are only delivered to public addresses")


def _run_lookup(host: str, future: Future[list[Any]]) -> None:
    try:
        try:
            # The port plays no part in the addresses: one lookup serves every port.
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        finally:
            # Forgotten before it is answered: only the attempts that came while it was in
            # flight take its answer; a later one looks the name up again.
            with _lookups:
                del _in_flight[host]
                _lookups.notify_all()
    except Exception as exc:  # handed to whoever waits for it
        future.set_exception(exc)
    else:
        future.set_result(infos)


def _lookup(host: str, timeout: float) -> list[Any]:
    """`getaddrinfo(host)`, waiting at most `timeout` seconds (ResolveTimeout then): joins
    the host's lookup in flight, or starts one when fewer than LOOKUPS are."""
    deadline = time.monotonic() + timeout
    with _lookups:
        future = _in_flight.get(host)
        while future is None and len(_in_flight) >= LOOKUPS:
            if not _lookups.wait(deadline - time.monotonic()):
                raise ResolveTimeout(
                    f"resolving {host} took longer than the attempt's timeout"
                    f" ({LOOKUPS} lookups of other names in flight)"
                )
            future = _in_flight.get(host)
        if future is None:
            future = _in_flight[host] = Future()
            try:
                threading.Thread(
                    target=_run_lookup, args=(host, future), name="iod-resolve", daemon=True
                ).start()
            except BaseException:
                del _in_flight[host]  # no thread would ever finish it
                raise
    try:
        return future.result(max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise ResolveTimeout(f"resolving {host} took longer than the attempt's timeout") from None


def resolve(target: Target, allowed: Sequence[Network], *, timeout: float) -> IPAddress:
    """The address to connect to: the first of the host's addresses that is allowed;
    Refused when none is (or the name does not resolve); ResolveTimeout when the name is not
    resolved within `timeout` seconds."""
    literal = target.literal
    if literal is not None:
        candidates: list[IPAddress] = [literal]
    else:
        try:
            infos = _lookup(target.host, timeout)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"cannot resolve {target.host}: {exc}") from exc
        candidates = []
        for info in infos:
            text = str(info[4][0]).split("%", 1)[0]  # an IPv6 zone is never global anyway
            address = ipaddress.ip_address(text)
            if address not in candidates:
                candidates.append(address)
    reasons = []
    for address in candidates:
        reason = why_forbidden(address, allowed)
        if reason is None:
            return address
        reasons.append(reason)
    raise Refused(f"{target.host}: " + "; ".join(reasons or ["no address"]))
