"""Data-plane scale benchmark: N connections on one host with the linux driver (root).

Measures, per connection: provisioning (namespace, veth pair, addresses, route, HTB on both
ends), a bandwidth change (an in-place class change on both ends), a reconciliation pass
over all N that finds nothing to do, and termination. Baseline, in the same run: the same
topology built by an operator's script with `ip` and `tc` commands, one process per
command, on a sample of the connections. Run: `make bench-dataplane` (N=1000 by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import secrets
import subprocess
import sys
import time
from ipaddress import IPv4Network

import structlog

from iod.domain.addressing import block_at, customer_address, gateway
from iod.network.base import ConfiguredConnection, ConnectionSpec
from iod.network.linux.driver import LinuxDriver

POOL = IPv4Network("10.0.0.0/16")
LOCATION = "PL-BENCH"


def specs(count: int, mbps: int) -> list[ConnectionSpec]:
    return [
        ConnectionSpec(f"con_bench{n:06d}", LOCATION, mbps, str(block_at(POOL, n * 4, 30)))
        for n in range(count)
    ]


def timed(label: str, items: list[ConnectionSpec], step) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for item in items:
        step(item)
    per = (time.perf_counter() - started) / len(items) * 1000
    print(f"  {label:<44} {per:8.2f} ms per connection ({len(items)})", flush=True)
    return per


def shell_baseline(prefix: str, items: list[ConnectionSpec]) -> tuple[float, float]:
    """The same topology with iproute2 commands, as a shell script would build it."""
    edge = f"{prefix}-edge"
    subprocess.run(["ip", "netns", "add", edge], check=True)

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    def build(spec: ConnectionSpec) -> None:
        block = IPv4Network(spec.ipv4_block or "")
        ns, dev = f"{prefix}-{spec.connection_id}", f"{prefix}{spec.connection_id[-9:]}"
        run("ip", "netns", "add", ns)
        run("ip", "-n", edge, "link", "add", "name", dev, "type", "veth", "peer", "name",
            "eth0", "netns", ns)  # fmt: skip
        for where, link in ((edge, dev), (ns, "eth0")):
            run("ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", link, "root",
                "handle", "1:", "htb", "default", "10")  # fmt: skip
            run("ip", "netns", "exec", where, "tc", "class", "add", "dev", link, "parent", "1:",
                "classid", "1:10", "htb", "rate", f"{spec.bandwidth_mbps}mbit")  # fmt: skip
        run("ip", "-n", edge, "addr", "add", f"{gateway(block)}/30", "dev", dev)
        run("ip", "-n", ns, "addr", "add", f"{customer_address(block)}/30", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", edge, "link", "set", dev, "up")
        run("ip", "-n", ns, "route", "add", "default", "via", str(gateway(block)))

    def change(spec: ConnectionSpec) -> None:
        ns, dev = f"{prefix}-{spec.connection_id}", f"{prefix}{spec.connection_id[-9:]}"
        for where, link in ((edge, dev), (ns, "eth0")):
            run("ip", "netns", "exec", where, "tc", "class", "change", "dev", link, "parent",
                "1:", "classid", "1:10", "htb", "rate", "200mbit")  # fmt: skip

    try:
        provision = timed("baseline: ip/tc commands, provision", items, build)
        changed = timed("baseline: ip/tc commands, bandwidth change", items, change)
    finally:
        for spec in items:
            subprocess.run(["ip", "netns", "del", f"{prefix}-{spec.connection_id}"], check=False)
        subprocess.run(["ip", "netns", "del", edge], check=False)
    return provision, changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--baseline-sample", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the data-plane benchmark needs root (network namespaces)", file=sys.stderr)
        return 2
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    prefix = f"b{secrets.token_hex(2)}"
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}, Python {platform.python_version()}")  # fmt: skip
    print(f"linux driver (pyroute2, netlink), {args.connections} connections at one location:")
    driver = LinuxDriver(prefix=prefix)
    items = specs(args.connections, 100)
    try:
        provision = timed("provision", items, lambda s: driver.provision(s, "bench"))
        faster = [ConnectionSpec(s.connection_id, s.location_id, 200, s.ipv4_block) for s in items]
        change = timed("bandwidth change", faster, lambda s: driver.set_bandwidth(s, "bench"))
        timed("suspend", faster, lambda s: driver.suspend(s, "bench"))
        timed("resume", faster, lambda s: driver.resume(s, "bench"))
        desired = [
            ConfiguredConnection(s.connection_id, s.location_id, 200, False, s.ipv4_block)
            for s in faster
        ]
        started = time.perf_counter()
        report = driver.reconcile(desired, frozenset())
        took = time.perf_counter() - started
        assert not report.changed, report
        print(f"  {'reconcile, nothing to do':<44} {took * 1000 / len(items):8.2f} ms per "
              f"connection ({took:.2f} s for {len(items)})")  # fmt: skip
        assert len(driver.inventory()) == len(items)
        timed("terminate", items, lambda s: driver.terminate(s.connection_id, "bench"))
    finally:
        for name in os.listdir("/var/run/netns"):
            if name.startswith(f"{prefix}-"):
                subprocess.run(["ip", "netns", "del", name], check=False)
        driver.close()
    sample = specs(min(args.baseline_sample, args.connections), 100)
    print(f"baseline, same run ({len(sample)} connections):")
    base_provision, base_change = shell_baseline(f"{prefix}s", sample)
    print(
        f"ratios (baseline time / driver time; above 1 is faster than the script): "
        f"provision {base_provision / provision:.1f}x, change {base_change / change:.1f}x"
    )
    print(f"goals: provision < 50 ms ({'met' if provision < 50 else 'NOT met'}), "
          f"change < 20 ms ({'met' if change < 20 else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
