"""Webhooks without a database: signatures both ways with the reference implementation,
the SSRF rules (IPv6, IPv4-mapped, DNS rebinding), the sender's limits, the retry schedule."""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from iod.client import webhooks as sdk
from iod.webhooks import delivery, keys, safety, sender, service, signing
from tests.webhook_receiver import serve

LOOPBACK = safety.parse_networks("127.0.0.0/8")
BODY = b'{"type":"connection.activated","timestamp":"2030-01-01T00:00:00Z","data":{}}'


def test_our_signatures_verify_with_the_reference_and_the_sdk() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(signing.secret_bytes(secret)) == 32
    now = int(time.time())
    headers = signing.headers([secret], "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers)["type"] == "connection.activated"
    assert sdk.verify(BODY, headers, secret)["type"] == "connection.activated"
    # Tampered body, another secret, an old timestamp: refused by both.
    with pytest.raises(sdk.WebhookVerificationError):
        sdk.verify(BODY.replace(b"activated", b"suspended"), headers, secret)
    with pytest.raises(sdk.WebhookVerificationError):
        sdk.verify(BODY, headers, signing.new_secret())
    old = signing.headers([secret], "msg_1", now - 3600, BODY)
    with pytest.raises(sdk.WebhookVerificationError):
        sdk.verify(BODY, old, secret)
    with pytest.raises(Exception, match=r"(?i)signature|timestamp"):
        Webhook(secret).verify(BODY, old)


def test_the_reference_signatures_verify_with_the_sdk() -> None:
    secret = sdk.new_secret()
    when = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_2", when, BODY.decode())
    headers = {
        "Webhook-Id": "msg_2",
        "Webhook-Timestamp": str(int(when.timestamp())),
        "Webhook-Signature": signature,
    }
    assert sdk.verify(BODY, headers, secret)["data"] == {}
    # The SDK's own signing is the reference's too.
    assert sdk.sign(secret, "msg_2", int(when.timestamp()), BODY) == signature


def test_a_rotation_signs_with_both_secrets() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    headers = signing.headers([new, old], "msg_3", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
        sdk.verify(BODY, headers, secret)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0",
        "169.254.169.254", "169.254.1.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::a00:1", "2002:7f00:1::1", "2001:db8::1",
    ],
)  # fmt: skip
def test_internal_addresses_are_refused(address: str) -> None:
    assert safety.why_forbidden(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert safety.why_forbidden(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_only_its_networks() -> None:
    assert safety.why_forbidden(ipaddress.ip_address("127.0.0.1"), LOOPBACK) is None
    assert safety.why_forbidden(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK) is None
    assert safety.why_forbidden(ipaddress.ip_address("10.0.0.1"), LOOPBACK) is not None
    assert safety.why_forbidden(ipaddress.ip_address("::1"), LOOPBACK) is not None


def test_urls_checked_at_creation() -> None:
    limits = service.Limits(False, [], timedelta(0), 5, None)
    for url in (
        "http://hooks.example.com/x",  # http not allowed here
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://localhost:8443/x",
        "https://u:p@hooks.example.com/x",
        "https://hooks.example.com/x#frag",
        "https://hooks.example.com/a b",
        "gopher://hooks.example.com/",
        "https:///nohost",
        # IPv4 short forms a resolver reads as 127.0.0.1 or 10.0.0.1: addresses, not names
        "https://2130706433/x",
        "https://127.1/x",
        "https://0x7f.0.0.1/x",
        "https://0177.0.0.1/x",
        "https://10.1/x",
        # A trailing dot names the same host (localhost. is localhost); port 0 is no port.
        "https://localhost./x",
        "https://LocalHost./x",
        "https://hooks.localhost./x",
        "https://127.0.0.1./x",
        "https://localhost../x",
        "https://hooks.example.com:0/x",
        # Names the delivery could not resolve: found at creation, not at the first event.
        "https://" + "a" * 64 + ".example.com/x",
        "https://" + ("a" * 60 + ".") * 5 + "com/x",
        "https://8.8.8.08/x",  # not an address the delivery's URL parser takes
        "https://[2606:4700::1]./x",
    ):
        with pytest.raises(Exception, match="/url") as info:
            service.check_url(url, limits)
        assert info.value.errors[0].pointer == "/url"  # type: ignore[attr-defined]
    assert service.check_url("https://hooks.example.com/x?a=1", limits)
    assert service.check_url("https://hooks.example.com./x", limits)
    assert service.check_url("https://" + "a" * 63 + ".example.com/x", limits)
    assert service.check_url("https://xn--bcher-kva.example/x", limits)  # bücher.example
    assert service.check_url("https://xn--n3h.net/x", limits)  # ☃.net: not IDNA 2008, but real
    assert service.check_url("https://xn--bcher-kva.my_svc.example.com/x", limits)
    assert service.check_url("https://[2606:4700::1]:8443/x", limits)


def test_the_sender_refuses_what_creation_refuses() -> None:
    """The delivery's check and the creation's are one: a trailing dot is the same name."""
    target = safety.check_url("https://Hooks.Example.com./x", allow_http=False)
    assert target.host == "hooks.example.com" and target.port == 443
    for url in ("https://localhost./x", "https://hooks.example.com:0/x"):
        outcome = sender.send(url, BODY, {}, allowed=[], allow_http=False, timeout=2)
        assert outcome.status_code is None and "refused" in (outcome.error or ""), url


def test_what_the_receiver_says_is_stored_without_nul() -> None:
    """PostgreSQL text cannot hold NUL: the answer's body and headers are made storable
    where they are read (NUL -> U+FFFD)."""
    with serve() as receiver:
        receiver.reply, receiver.default = b"bad\x00answer \xff", 500
        outcome = sender.send(receiver.url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=2)
        assert outcome.status_code == 500
        assert outcome.body == "bad\ufffdanswer \ufffd"
    assert sender.storable("a\x00b\x00") == "a\ufffdb\ufffd"


def _resolver(*answers: str) -> Any:
    """A getaddrinfo that answers each call with the next address (DNS rebinding)."""
    queue = list(answers)

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    return getaddrinfo


def test_dns_rebinding_is_checked_at_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("8.8.8.8", "127.0.0.1"))
    target = safety.check_url("https://hooks.example.com/x", allow_http=False)
    assert str(safety.resolve(target, [], timeout=5)) == "8.8.8.8"
    with pytest.raises(safety.Refused, match="loopback"):
        safety.resolve(target, [], timeout=5)


def test_the_sender_connects_to_the_checked_address_with_the_original_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        url = f"http://hooks.example.com:{port}/hook"
        monkeypatch.setattr(socket, "getaddrinfo", _resolver("127.0.0.1"))
        outcome = sender.send(
            url, BODY, {"webhook-id": "msg_4"}, allowed=LOOPBACK, allow_http=True, timeout=2
        )
        assert outcome.ok, outcome
        (got,) = receiver.wait_for(1)
        assert got.headers["host"] == f"hooks.example.com:{port}"
        assert got.body == BODY
        # The same name now resolving to a private address: refused, nothing is sent.
        monkeypatch.setattr(socket, "getaddrinfo", _resolver("10.0.0.7"))
        refused = sender.send(
            url, BODY, {"webhook-id": "msg_4"}, allowed=LOOPBACK, allow_http=True, timeout=2
        )
        assert refused.status_code is None and "refused" in (refused.error or "")
        assert len(receiver.received) == 1


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """A getaddrinfo that hangs (60 s at most) until the event is set, then answers
    127.0.0.1; the names it was asked for. Set and waited for at the end, so no lookup of
    this test is left in flight for the next one."""
    _lookup_threads_gone()
    release, asked = threading.Event(), []
    answer = _resolver("127.0.0.1")

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        release.wait(60)
        return answer(host, port)  # type: ignore[no-any-return]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release, asked
    release.set()
    assert _lookup_threads_gone() and not safety._in_flight


def _lookup_threads() -> int:
    return sum(thread.name == "iod-resolve" for thread in threading.enumerate())


def _lookup_threads_gone(within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while _lookup_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _lookup_threads()


def test_a_hanging_name_lookup_fails_the_attempt_at_its_timeout(
    hanging_dns: tuple[threading.Event, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup counts against the attempt's deadline: a name server that does not answer
    is a timeout of the attempt (retried like any), not a refused address, and nothing is
    connected to. The lookup left hanging does not spoil the next attempts."""
    release, _ = hanging_dns
    with serve() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        url = f"http://slow.example.com:{port}/hook"
        started = time.monotonic()
        outcome = sender.send(url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=0.5)
        took = time.monotonic() - started
        assert took < 20, took  # generous: the deadline is 0.5 s, the resolver hangs 60 s
        expected = "resolving slow.example.com took longer than the attempt's timeout"
        assert outcome.status_code is None, outcome
        assert outcome.error == f"timeout after 0.5 s: {expected}", outcome
        assert receiver.received == []
        release.set()
        # A lookup that answers: connected to; one that answers a private address: refused.
        # (A whole HTTP exchange: a timeout a loaded machine meets.)
        monkeypatch.setattr(socket, "getaddrinfo", _resolver("127.0.0.1"))
        outcome = sender.send(url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=5)
        assert outcome.ok, outcome
        monkeypatch.setattr(socket, "getaddrinfo", _resolver("10.0.0.7"))
        outcome = sender.send(url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=5)
        assert outcome.status_code is None and "refused" in (outcome.error or ""), outcome
        assert "10.0.0.7 is a private address" in (outcome.error or "")
        assert len(receiver.received) == 1


def test_name_lookups_in_flight_are_bounded(
    hanging_dns: tuple[threading.Event, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hanging resolver holds one thread per name, LOOKUPS in all: attempts to a name
    being looked up join its lookup, one to another name waits for a free slot within its
    own deadline."""
    release, asked = hanging_dns
    monkeypatch.setattr(safety, "LOOKUPS", 2)

    def target(name: str) -> safety.Target:
        return safety.check_url(f"https://{name}/hook", allow_http=False)

    for name in ("a.example.com", "a.example.com", "b.example.com"):
        with pytest.raises(safety.ResolveTimeout, match=f"resolving {name} took longer"):
            safety.resolve(target(name), LOOPBACK, timeout=0.2)
    with pytest.raises(safety.ResolveTimeout, match="2 lookups of other names in flight"):
        safety.resolve(target("c.example.com"), LOOPBACK, timeout=0.2)
    assert asked == ["a.example.com", "b.example.com"] and _lookup_threads() == 2
    # A slot freed within the attempt's deadline is taken.
    threading.Timer(0.2, release.set).start()
    assert str(safety.resolve(target("c.example.com"), LOOPBACK, timeout=3)) == "127.0.0.1"
    assert asked == ["a.example.com", "b.example.com", "c.example.com"]


def test_redirects_are_not_followed_and_answers_are_cut_to_1_kib() -> None:
    with serve() as receiver:
        receiver.answers = [302]
        receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data"}
        outcome = sender.send(receiver.url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=2)
        assert outcome.status_code == 302 and "redirect not followed" in (outcome.error or "")
        assert len(receiver.received) == 1
        receiver.reply, receiver.default = b"x" * 5000, 200
        outcome = sender.send(receiver.url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=2)
        assert outcome.ok and outcome.body is not None and len(outcome.body) == 1024
    # Without the allow list a loopback receiver is refused before any connection.
    refused = sender.send(receiver.url, BODY, {}, allowed=[], allow_http=True, timeout=2)
    assert "refused" in (refused.error or "")


@contextmanager
def trickling_receiver(pause: float) -> Iterator[tuple[str, threading.Event]]:
    """A receiver that reads the request and then sends its status line and headers one byte
    every `pause` seconds, for as long as the sender listens (a slow loris in reverse)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        listener.settimeout(5)
        try:
            peer, _ = listener.accept()
        except OSError:
            return
        with peer:
            peer.recv(65536)
            header = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
            for byte in header:
                if stop.wait(pause):
                    return
                try:
                    peer.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook", stop
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_an_attempt_is_cut_at_its_timeout_even_while_headers_trickle_in() -> None:
    """Each read is within the timeout, but the attempt as a whole is not: it is cut once
    the timeout has passed in all (it took 21.6 s for a 1 s timeout before)."""
    with trickling_receiver(pause=0.05) as (url, _):
        started = time.monotonic()
        outcome = sender.send(url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=1)
        took = time.monotonic() - started
    assert outcome.status_code is None and "timeout after 1 s" in (outcome.error or ""), outcome
    assert took < 4, took  # generous: the deadline is 1 s, a read's 0.05 s beyond it at most
    # The thread's next attempt has a deadline of its own (none is left over).
    with serve() as receiver:
        outcome = sender.send(receiver.url, BODY, {}, allowed=LOOPBACK, allow_http=True, timeout=2)
        assert outcome.ok, outcome


def test_retry_schedule_with_jitter_and_retry_after() -> None:
    delays = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    rng = random.Random(1)
    for made in range(1, len(delays)):
        for _ in range(20):
            delay = delivery.next_delay(made, delays, None, rng)
            assert delay is not None and 0.8 * delays[made] <= delay <= 1.2 * delays[made]
    assert delivery.next_delay(len(delays), delays, None, rng) is None
    assert delivery.next_delay(1, delays, 120.0, rng) == 120.0
    assert delivery.next_delay(1, delays, 10**9, rng) == 36000  # capped at the longest step
    assert sender.retry_after_seconds("120") == 120
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert sender.retry_after_seconds("Tue, 01 Jan 2030 00:01:00 GMT", now) == 60
    assert sender.retry_after_seconds("soon") is None


def test_event_type_filters() -> None:
    assert service.matches([], "connection.activated")
    assert service.matches(["connection."], "connection.activated")
    assert service.matches(["bandwidth_change.applied"], "bandwidth_change.applied")
    assert not service.matches(["bandwidth_change.applied"], "connection.activated")
    assert service.check_event_types(["connection.", "connection."]) == ["connection."]
    with pytest.raises(Exception, match="/eventTypes/1"):
        service.check_event_types(["connection.", "conection."])


def test_secrets_at_rest() -> None:
    secret = signing.new_secret()
    kek = b"k" * 32
    sealed = keys.seal(secret, kek, "whe_1")
    assert secret not in sealed and sealed.startswith(keys.ENCRYPTED)
    assert keys.open_secret(sealed, kek, "whe_1") == secret
    with pytest.raises(keys.SecretUnreadable):
        keys.open_secret(sealed, b"z" * 32, "whe_1")
    with pytest.raises(keys.SecretUnreadable):
        keys.open_secret(sealed, kek, "whe_2")  # bound to its endpoint
    with pytest.raises(keys.SecretUnreadable):
        keys.open_secret(sealed, None, "whe_1")
    assert keys.seal(secret, None, "whe_1") == secret


def test_the_body_is_the_feeds_event() -> None:
    from iod.events import WrittenEvent

    event = WrittenEvent(
        "cus_1", 7, "connection.activated", "con_1",
        {"connectionId": "con_1", "fromStatus": "provisioning"}, None,
        datetime(2030, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    body = json.loads(delivery.body_of(event))
    assert body["type"] == "connection.activated"
    assert body["timestamp"] == "2030-01-01T00:00:00Z"
    assert body["data"]["connectionId"] == "con_1" and body["data"]["id"].startswith("ev")
    assert body["data"]["data"]["fromStatus"] == "provisioning"
