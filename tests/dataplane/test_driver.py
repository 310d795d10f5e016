"""The linux driver's kernel state: built, changed in place, suspended, removed, reconciled."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Network

import pytest

from iod.network.base import ConfiguredConnection, ConnectionSpec
from iod.network.linux import naming
from iod.network.linux.driver import LinuxDriver
from tests.dataplane.conftest import namespaces_of

SPEC = ConnectionSpec("con_01KDATAPLANE0000000000001", "PL0001247634", 100, "10.0.0.4/30")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def tc(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, check=True
    ).stdout


def test_provision_builds_the_topology(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    edge, customer = namespaces_of(netdriver, SPEC)
    assert {edge, customer} <= set(ip("netns", "list").split())
    port = netdriver.port(SPEC)
    assert port is not None and port.complete
    assert len(port.edge_ifname) <= naming.IFNAME_MAX
    edge_links = ip("-n", edge, "-d", "link", "show", port.edge_ifname)
    assert f"alias {SPEC.connection_id}@{SPEC.location_id}" in edge_links
    assert "10.0.0.5/30" in ip("-n", edge, "addr", "show", port.edge_ifname)
    assert "10.0.0.6/30" in ip("-n", customer, "addr", "show", "eth0")
    assert "default via 10.0.0.5" in ip("-n", customer, "route")
    for ns, dev in ((edge, port.edge_ifname), (customer, "eth0")):
        classes = tc(ns, "class", "show", "dev", dev)
        assert "htb 1:10" in classes and "rate 100Mbit ceil 100Mbit" in classes
    assert netdriver.inventory() == [
        ConfiguredConnection(SPEC.connection_id, SPEC.location_id, 100, False)
    ]


def test_operations_are_idempotent(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    before = netdriver.port(SPEC)
    netdriver.provision(SPEC, "job-1")  # a retried job
    after = netdriver.port(SPEC)
    assert before is not None and after is not None
    assert before.edge_ifname == after.edge_ifname and after.complete
    netdriver.terminate(SPEC.connection_id, "job-2")
    netdriver.terminate(SPEC.connection_id, "job-2")
    assert netdriver.inventory() == []


def test_bandwidth_change_is_an_in_place_class_change(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    edge, customer = namespaces_of(netdriver, SPEC)
    port = netdriver.port(SPEC)
    assert port is not None
    leaf_before = tc(edge, "qdisc", "show", "dev", port.edge_ifname)
    netdriver.set_bandwidth(ConnectionSpec(**{**SPEC.__dict__, "bandwidth_mbps": 250}), "job-2")
    for ns, dev in ((edge, port.edge_ifname), (customer, "eth0")):
        assert "rate 250Mbit ceil 250Mbit" in tc(ns, "class", "show", "dev", dev)
    # Same qdiscs (same handles): nothing was torn down, so flows and queues carry on.
    assert tc(edge, "qdisc", "show", "dev", port.edge_ifname) == leaf_before


def test_suspend_keeps_the_configuration(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    netdriver.suspend(SPEC, "job-2")
    (row,) = netdriver.inventory()
    assert row.suspended and row.bandwidth_mbps == 100
    edge, _ = namespaces_of(netdriver, SPEC)
    port = netdriver.port(SPEC)
    assert port is not None
    assert "parent 1:10 limit 0p" in tc(edge, "qdisc", "show", "dev", port.edge_ifname)
    netdriver.resume(SPEC, "job-3")
    (row,) = netdriver.inventory()
    assert not row.suspended and row.bandwidth_mbps == 100


def test_terminate_leaves_nothing_of_the_connection(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    other = ConnectionSpec("con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30")
    netdriver.provision(other, "job-2")
    edge, customer = namespaces_of(netdriver, SPEC)
    port = netdriver.port(SPEC)
    assert port is not None
    netdriver.terminate(SPEC.connection_id, "job-3")
    assert customer not in ip("netns", "list").split()
    links = ip("-n", edge, "-d", "link", "show")
    assert port.edge_ifname not in links and SPEC.connection_id not in links
    assert "10.0.0.5" not in ip("-n", edge, "addr")
    assert port.edge_ifname not in tc(edge, "qdisc", "show")
    # The neighbour is untouched.
    assert [r.connection_id for r in netdriver.inventory()] == [other.connection_id]


def test_names_never_collide(netdriver: LinuxDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ids whose first candidate name is the same get different names."""
    original = naming.edge_ifname

    def clashing(prefix: str, connection_id: str, attempt: int = 0) -> str:
        return original(prefix, "same" if attempt == 0 else connection_id, attempt)

    monkeypatch.setattr(naming, "edge_ifname", clashing)
    other = ConnectionSpec("con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30")
    netdriver.provision(SPEC, "job-1")
    netdriver.provision(other, "job-2")
    first, second = netdriver.port(SPEC), netdriver.port(other)
    assert first is not None and second is not None
    assert first.complete and second.complete and first.edge_ifname != second.edge_ifname
    netdriver.set_bandwidth(ConnectionSpec(**{**other.__dict__, "bandwidth_mbps": 20}), "job-3")
    rates = {r.connection_id: r.bandwidth_mbps for r in netdriver.inventory()}
    assert rates == {SPEC.connection_id: 100, other.connection_id: 20}


def test_a_block_given_again_evicts_its_stale_holder(netdriver: LinuxDriver) -> None:
    """A failed provisioning's remnant holds a block the database has since given anew."""
    netdriver.provision(SPEC, "job-1")  # never recorded: the connection was abandoned
    heir = ConnectionSpec("con_01KDATAPLANE0000000000009", SPEC.location_id, 50, SPEC.ipv4_block)
    netdriver.provision(heir, "job-2")
    assert [r.connection_id for r in netdriver.inventory()] == [heir.connection_id]


def test_dry_run_prints_operations_and_changes_nothing(prefix: str) -> None:
    printed: list[str] = []
    driver = LinuxDriver(prefix=prefix, dry_run=True, emit=printed.append)
    driver.provision(SPEC, "job-1")
    driver.set_bandwidth(SPEC, "job-2")
    assert not [n for n in ip("netns", "list").split() if n.startswith(prefix)]
    text = "\n".join(printed)
    assert f"dry-run: ip netns add {prefix}-edge-pl0001247634" in text
    assert "type veth peer name eth0" in text
    assert "htb rate 100mbit ceil 100mbit" in text
    assert "route add default via 10.0.0.5" in text


def test_reconcile_creates_removes_and_corrects(netdriver: LinuxDriver) -> None:
    keep = SPEC
    wrong_rate = ConnectionSpec(
        "con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30"
    )
    orphan = ConnectionSpec("con_01KDATAPLANE0000000000003", SPEC.location_id, 10, "10.0.0.12/30")
    missing = ConnectionSpec("con_01KDATAPLANE0000000000004", "PL0000381920", 20, "10.1.0.0/29")
    busy = ConnectionSpec("con_01KDATAPLANE0000000000005", SPEC.location_id, 30, "10.0.0.16/30")
    for spec in (keep, wrong_rate, orphan, busy):
        netdriver.provision(spec, "job")
    netdriver.suspend(keep, "job")
    desired = [
        ConfiguredConnection(keep.connection_id, keep.location_id, 100, True, keep.ipv4_block),
        ConfiguredConnection(
            wrong_rate.connection_id, wrong_rate.location_id, 200, False, wrong_rate.ipv4_block
        ),
        ConfiguredConnection(
            missing.connection_id, missing.location_id, 20, False, missing.ipv4_block
        ),
    ]
    skip = frozenset({busy.connection_id})

    report = netdriver.reconcile(desired, skip, dry_run=True)
    assert report.changed  # a dry run reports...
    assert len(netdriver.inventory()) == 4  # ...and changes nothing

    report = netdriver.reconcile(desired, skip)
    assert [c.split(":")[0] for c in report.created] == [missing.connection_id]
    assert [c.split(":")[0] for c in report.removed] == [orphan.connection_id]
    assert [c.split(":")[0] for c in report.corrected] == [wrong_rate.connection_id]
    assert report.skipped == [busy.connection_id] and report.unchanged == 1
    state = {(r.connection_id, r.bandwidth_mbps, r.suspended) for r in netdriver.inventory()}
    assert state == {
        (keep.connection_id, 100, True),
        (wrong_rate.connection_id, 200, False),
        (missing.connection_id, 20, False),
        (busy.connection_id, 30, False),
    }
    port = netdriver.port(missing)
    assert port is not None and port.complete
    assert IPv4Network(missing.ipv4_block or "").prefixlen == 29

    again = netdriver.reconcile(desired, skip)
    assert not again.changed and again.unchanged == 3  # idempotent


def test_reconcile_rebuilds_a_half_built_connection(netdriver: LinuxDriver) -> None:
    netdriver.provision(SPEC, "job-1")
    _, customer = namespaces_of(netdriver, SPEC)
    ip("-n", customer, "route", "del", "default")  # as if a crash came before the route
    desired = [
        ConfiguredConnection(SPEC.connection_id, SPEC.location_id, 100, False, SPEC.ipv4_block)
    ]
    report = netdriver.reconcile(desired, frozenset())
    assert report.created == [f"{SPEC.connection_id}: incomplete, rebuilt"]
    port = netdriver.port(SPEC)
    assert port is not None and port.complete


def test_provision_over_the_remnant_of_an_interrupted_build(netdriver: LinuxDriver) -> None:
    """A crash between creating the veth pair and naming it (its alias) left a pair nobody
    owns and a customer namespace; provisioning again cleans up and builds once."""
    netdriver.provision(
        ConnectionSpec("con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30"), "j"
    )  # the edge namespace exists, with a neighbour
    edge, customer = namespaces_of(netdriver, SPEC)
    first_name = naming.edge_ifname(netdriver.prefix, SPEC.connection_id)
    ip("netns", "add", customer)
    ip("-n", edge, "link", "add", "name", first_name, "type", "veth", "peer", "name", "eth0",
       "netns", customer)  # fmt: skip
    netdriver.provision(SPEC, "job-1")
    port = netdriver.port(SPEC)
    assert port is not None and port.complete
    names = [line.split(":")[1].strip().split("@")[0] for line in
             ip("-n", edge, "-o", "link", "show").splitlines()]  # fmt: skip
    assert sorted(names) == sorted(
        [
            "lo",
            port.edge_ifname,
            netdriver.port(
                ConnectionSpec("con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30")
            ).edge_ifname,
        ]
    )  # type: ignore[union-attr]  # the neighbour's and this one's: no remnant
    # A pair cut off without an owner (its customer namespace gone) is removed on reconcile.
    stray = f"{netdriver.prefix}zzzzzzzzzz"[:15]
    ip("-n", edge, "link", "add", "name", stray, "type", "veth", "peer", "name", "x0")
    report = netdriver.reconcile(
        [
            ConfiguredConnection(r.connection_id, r.location_id, r.bandwidth_mbps, False, b)
            for r, b in zip(netdriver.inventory(), ["10.0.0.8/30", "10.0.0.4/30"], strict=True)
        ],
        frozenset(),
    )
    assert report.removed == [f"{edge}/{stray}: no owner"]
    assert stray not in ip("-n", edge, "link", "show")


def test_an_edge_namespace_deleted_behind_the_drivers_back_is_made_again(
    netdriver: LinuxDriver,
) -> None:
    netdriver.provision(SPEC, "job-1")
    edge, _ = namespaces_of(netdriver, SPEC)
    netdriver.terminate(SPEC.connection_id, "job-2")
    ip("netns", "del", edge)  # an operator retiring the location by hand
    other = ConnectionSpec("con_01KDATAPLANE0000000000002", SPEC.location_id, 50, "10.0.0.8/30")
    netdriver.provision(other, "job-3")  # the cached socket of the old namespace is dropped
    assert edge in ip("netns", "list").split()
    port = netdriver.port(other)
    assert port is not None and port.complete
    assert port.edge_ifname in ip("-n", edge, "link", "show")
