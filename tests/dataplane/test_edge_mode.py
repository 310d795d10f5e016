"""Edge mode for real (root): one uplink, one HTB tree each way (upload through an IFB),
hashed u32 filters on the customers' blocks. Namespaces, links and IFB devices are named
"ie" + a random part, and removed whatever happens."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from iod.domain.addressing import customer_address, gateway
from iod.network.base import ConfiguredConnection, ConnectionSpec
from iod.network.linux.edge import EdgeShaper, minor_of
from tests.dataplane.conftest import (
    remove_namespaces,
    require_dataplane,
    require_iperf3,
    wait_listening,
)

pytestmark = pytest.mark.dataplane
LOC = "PL-EDGE-TEST"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class EdgeLab:
    """An edge namespace whose uplink (a veth) leads to a customers namespace."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.edge, self.customers = f"{tag}e", f"{tag}c"
        self.uplink, self.ifb = f"{tag}u", f"{tag}i"

    def build(self) -> EdgeLab:
        sh("ip", "netns", "add", self.edge)
        sh("ip", "netns", "add", self.customers)
        sh("ip", "-n", self.edge, "link", "add", self.uplink, "type", "veth", "peer", "name",
           "cust0", "netns", self.customers)  # fmt: skip
        for ns, dev in ((self.edge, self.uplink), (self.customers, "cust0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def attach(self, block: str) -> tuple[str, str]:
        """The block's gateway on the uplink, its customer address on the far side."""
        net = IPv4Network(block)
        gw, cust = str(gateway(net)), str(customer_address(net))
        sh("ip", "-n", self.edge, "addr", "add", f"{gw}/{net.prefixlen}", "dev", self.uplink)
        sh("ip", "-n", self.customers, "addr", "add", f"{cust}/{net.prefixlen}", "dev", "cust0")
        return gw, cust

    def goodput(self, server: str, client: str, seconds: float, download: bool) -> float:
        srv = subprocess.Popen(
            ["ip", "netns", "exec", self.edge, "iperf3", "-s", "-1", "-B", server, "-p", "5298"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_listening(self.edge, 5298, srv)
            args = ["ip", "netns", "exec", self.customers, "iperf3", "-c", server, "-B", client,
                    "-p", "5298", "-t", str(seconds), "-O", "0.5", "-J",
                    "--connect-timeout", "1500"]  # fmt: skip
            try:
                done = subprocess.run(args + (["-R"] if download else []), capture_output=True,
                                      text=True, timeout=seconds + 10, check=False)  # fmt: skip
            except subprocess.TimeoutExpired:
                return 0.0
            if done.returncode != 0:
                return 0.0
            received = json.loads(done.stdout).get("end", {}).get("sum_received", {})
            return float(received.get("bits_per_second", 0)) / 1e6
        finally:
            srv.kill()
            srv.wait()


@pytest.fixture
def lab() -> Iterator[EdgeLab]:
    require_dataplane()
    tag = f"ie{secrets.token_hex(2)}"
    try:
        yield EdgeLab(tag).build()
    finally:
        remove_namespaces(tag)


def u32_filters(lab: EdgeLab, dev: str) -> int:
    """The connections' filters: those of the /24 qdiscs (10.9.0.0/24 and 10.9.7.0/24)."""
    count = 0
    for parent in ("2:", "9:"):
        out = subprocess.run(
            ["ip", "netns", "exec", lab.edge, "tc", "filter", "show", "dev", dev, "parent", parent],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        count += out.count("flowid ")
    return count


def test_edge_mode_shapes_both_ways_by_block_and_converges(lab: EdgeLab) -> None:
    require_iperf3()
    shaper = EdgeShaper(uplink=lab.uplink, ifb=lab.ifb, location_id=LOC, namespace=lab.edge)
    try:
        specs = [
            ConnectionSpec("con_a", LOC, 20, "10.9.0.0/30"),
            ConnectionSpec("con_b", LOC, 50, "10.9.0.8/29"),  # two /30 buckets
            ConnectionSpec("con_c", LOC, 100, "10.9.7.0/28"),  # another third octet
        ]
        for spec in specs:
            shaper.provision(spec, "t")
            shaper.provision(spec, "t")  # idempotent
        classes = shaper.classes()
        assert {m: (d.rate_mbps, u.rate_mbps) for m, (d, u) in classes.items()} == {
            minor_of(IPv4Network(s.ipv4_block or "")): (s.bandwidth_mbps, s.bandwidth_mbps)
            for s in specs
        }
        # 1 + 2 + 4 leaf filters each way (a /29 covers two /30 buckets, a /28 four)
        assert u32_filters(lab, lab.uplink) == 7 and u32_filters(lab, lab.ifb) == 7

        gw, cust = lab.attach("10.9.0.8/29")
        down = lab.goodput(gw, cust, 2, download=True)
        up = lab.goodput(gw, cust, 2, download=False)
        assert 0.85 * 50 < down <= 50.5 and 0.85 * 50 < up <= 50.5, (down, up)

        shaper.set_bandwidth(ConnectionSpec("con_b", LOC, 20, "10.9.0.8/29"), "t")
        assert shaper.classes()[minor_of(IPv4Network("10.9.0.8/29"))][0].rate_mbps == 20
        down = lab.goodput(gw, cust, 2, download=True)
        assert 0.85 * 20 < down <= 20.5, down

        shaper.suspend(specs[1], "t")  # every packet dropped: iperf3 cannot even connect
        assert lab.goodput(gw, cust, 1, download=True) == 0
        shaper.resume(specs[1], "t")
        time.sleep(0.5)
        assert lab.goodput(gw, cust, 1, download=True) > 0.85 * 20
        assert shaper.classes()[minor_of(IPv4Network("10.9.0.8/29"))][0].rate_mbps == 50

        # Reconcile against a desired state without con_a and with con_c's rate changed:
        # the orphan's classes and filters go, con_c is corrected, a second pass is quiet.
        desired = [
            ConfiguredConnection("con_b", LOC, 50, False, "10.9.0.8/29"),
            ConfiguredConnection("con_c", LOC, 200, True, "10.9.7.0/28"),
        ]
        fresh = EdgeShaper(uplink=lab.uplink, ifb=lab.ifb, location_id=LOC, namespace=lab.edge)
        try:
            report = fresh.reconcile(desired, frozenset())
            assert (len(report.removed), report.corrected, report.unchanged) == (1, ["con_c"], 1)
            assert not fresh.reconcile(desired, frozenset()).changed
            assert u32_filters(lab, lab.uplink) == 6 and u32_filters(lab, lab.ifb) == 6
            fresh.terminate("con_c", "t")
            assert u32_filters(lab, lab.uplink) == 2
            assert sorted(c.connection_id for c in fresh.inventory()) == ["con_b"]
        finally:
            fresh.close()
    finally:
        shaper.close()
