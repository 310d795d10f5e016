"""Edge-mode benchmark: N connections shaped on one uplink (one HTB tree each way, hashed
u32 filters, upload through an IFB), root only.

Topology: an edge namespace whose uplink is one end of a veth pair; the other end is in a
"customers" namespace that holds the measured connection's customer address. Measures:
provisioning all N (goal under 60 s), the bandwidth change's p50/p99 on a sample (goal p99
under 5 ms), and iperf3 goodput through one class with 10 classes installed and again
with N (goal: within 5 %). Run: `make bench-dataplane` (which runs this after the
namespace mode) or `python bench/dataplane_edge.py --connections 10000`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Network

from iod.domain.addressing import block_at, customer_address, gateway
from iod.network.base import ConfiguredConnection, ConnectionSpec
from iod.network.linux.edge import EdgeShaper

POOL = IPv4Network("10.0.0.0/16")
LOCATION = "PL-EDGE-BENCH"


def specs(count: int, mbps: int) -> list[ConnectionSpec]:
    return [
        ConnectionSpec(f"con_edge{n:06d}", LOCATION, mbps, str(block_at(POOL, n * 4, 30)))
        for n in range(count)
    ]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Lab:
    """The edge and customers namespaces with the veth between them (names start "ie")."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.edge, self.customers = f"ie{tag}e", f"ie{tag}c"
        self.uplink, self.ifb = f"ie{tag}u", f"ie{tag}i"

    def __enter__(self) -> Lab:
        sh("ip", "netns", "add", self.edge)
        sh("ip", "netns", "add", self.customers)
        sh("ip", "-n", self.edge, "link", "add", self.uplink, "type", "veth", "peer", "name",
           "cust0", "netns", self.customers)  # fmt: skip
        sh("ip", "-n", self.edge, "addr", "add", "10.0.0.1/16", "dev", self.uplink)
        sh("ip", "-n", self.edge, "link", "set", self.uplink, "up")
        sh("ip", "-n", self.customers, "link", "set", "cust0", "up")
        sh("ip", "-n", self.edge, "link", "set", "lo", "up")
        sh("ip", "-n", self.customers, "link", "set", "lo", "up")
        return self

    def customer(self, block: str) -> str:
        """Gives the customers' side the customer address of `block`."""
        net = IPv4Network(block)
        address = str(customer_address(net))
        sh("ip", "-n", self.customers, "addr", "add", f"{address}/16", "dev", "cust0")
        return address

    def __exit__(self, *exc: object) -> None:
        for ns in (self.edge, self.customers):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False)


def goodput(lab: Lab, server: str, client: str, seconds: float, download: bool) -> float:
    """Mbps received by one TCP stream (iperf3), server in the edge, client a customer."""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", lab.edge, "iperf3", "-s", "-1", "-B", server, "-p", "5299"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    try:
        args = ["ip", "netns", "exec", lab.customers, "iperf3", "-c", server, "-B", client,
                "-p", "5299", "-t", str(seconds), "-O", "1", "-J"]  # fmt: skip
        done = subprocess.run(args + (["-R"] if download else []), capture_output=True,
                              text=True, timeout=seconds + 30)  # fmt: skip
        report = json.loads(done.stdout)
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--mbps", type=int, default=100)
    parser.add_argument("--change-sample", type=int, default=2000)
    parser.add_argument("--iperf-seconds", type=float, default=4)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the edge benchmark needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}, Python {platform.python_version()}")  # fmt: skip
    print(f"edge mode (one uplink, HTB + IFB, hashed u32), {args.connections} connections:")
    items = specs(args.connections, args.mbps)
    with Lab() as lab:
        shaper = EdgeShaper(uplink=lab.uplink, ifb=lab.ifb, location_id=LOCATION,
                            namespace=lab.edge)  # fmt: skip
        try:
            measured = items[0]
            client = lab.customer(measured.ipv4_block or "")
            server = str(gateway(POOL))
            for spec in items[:10]:
                shaper.provision(spec, "bench")
            few_down = goodput(lab, server, client, args.iperf_seconds, True)
            few_up = goodput(lab, server, client, args.iperf_seconds, False)
            print(f"  iperf3 through one class, 10 installed: download {few_down:.1f} Mbps, "
                  f"upload {few_up:.1f} Mbps (class at {args.mbps} Mbps)")  # fmt: skip
            started = time.perf_counter()
            for spec in items[10:]:
                shaper.provision(spec, "bench")
            took = time.perf_counter() - started
            total = took * len(items) / max(len(items) - 10, 1)
            print(f"  provision all {len(items)}: {total:.1f} s "
                  f"({total * 1000 / len(items):.2f} ms per connection)")  # fmt: skip
            many_down = goodput(lab, server, client, args.iperf_seconds, True)
            many_up = goodput(lab, server, client, args.iperf_seconds, False)
            print(f"  iperf3 through one class, {len(items)} installed: download "
                  f"{many_down:.1f} Mbps, upload {many_up:.1f} Mbps")  # fmt: skip
            sample = items[:: max(1, len(items) // args.change_sample)]
            gc.collect()
            gc.freeze()  # as `iod serve` does: no full collection walks the 10,000 blocks
            times, cpu = [], []
            for n, spec in enumerate(sample):
                mbps = args.mbps * 2 if n % 2 == 0 else args.mbps
                changed = ConnectionSpec(spec.connection_id, LOCATION, mbps, spec.ipv4_block)
                t0, c0 = time.perf_counter(), time.thread_time()
                shaper.set_bandwidth(changed, "bench")
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)
            times.sort()
            cpu.sort()
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            cpu99 = cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))]
            print(f"  bandwidth change ({len(times)}): p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  f"(this thread's CPU: p99 {cpu99:.2f} ms; load average "
                  f"{os.getloadavg()[0]:.1f})")  # fmt: skip
            desired = [
                ConfiguredConnection(
                    s.connection_id, LOCATION, s.bandwidth_mbps, False, s.ipv4_block
                )
                for s in items
            ]
            for n, spec in enumerate(sample):  # put the sample back to the desired rate
                if n % 2 == 0:
                    shaper.set_bandwidth(spec, "bench")
            t0 = time.perf_counter()
            report = shaper.reconcile(desired, frozenset())
            print(f"  reconcile, nothing to do: {time.perf_counter() - t0:.2f} s "
                  f"(changed: {report.changed})")  # fmt: skip
            down_ratio = many_down / few_down
            up_ratio = many_up / few_up
            print(f"goals: provision all < 60 s ({'met' if total < 60 else 'NOT met'}), "
                  f"change p99 < 5 ms ({'met' if p99 < 5 else 'NOT met'}), goodput with "
                  f"{len(items)} within 5 % of 10 (download {down_ratio:.3f}, upload "
                  f"{up_ratio:.3f}: "
                  f"{'met' if min(down_ratio, up_ratio) > 0.95 else 'NOT met'})")  # fmt: skip
        finally:
            shaper.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
