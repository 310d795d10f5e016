"""The linux driver: each connection is real kernel state, shaped with HTB.

Topology (docs/network.md): one provider-edge namespace per location, `<prefix>-edge-<loc>`;
one namespace per connection, `<prefix>-<connection id>`, joined to its edge by a veth pair.
The edge end (a hashed name, the connection id and location in its alias) holds the block's
first address, the gateway; the customer end (`eth0` by default) the second, with a default
route via the gateway. Download is shaped on the edge end's egress, upload on the customer
end's egress, each by an HTB class at the ordered rate with the best leaf qdisc the kernel
has. Suspend swaps both leaves for a FIFO that holds nothing (zero bytes pass, the classes
stay); resume swaps them back; a bandwidth change is an in-place class change.

Operations are declarative: each reads what the kernel has and makes it what the spec says,
rebuilding a connection whose objects are incomplete (a crash mid-provisioning). Running one
twice changes nothing more, which is what makes a retried job safe here; the op id is only
logged. All kernel calls go through pyroute2 (netlink); nothing shells out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iod.domain.addressing import customer_address, gateway
from iod.network.base import ConfiguredConnection, ConnectionSpec, DriverError, ReconcileReport
from iod.network.linux import naming
from iod.network.linux.kernel import Emit, Kernel, Shaping, Snapshot

log = structlog.get_logger("iod.network.linux")
UNNAMED = "?"  # key prefix of edge links without an owner, in `ports()`


@dataclass(frozen=True)
class Port:
    """One connection's kernel objects as found."""

    connection_id: str
    location_id: str
    edge_namespace: str
    edge_ifname: str
    complete: bool
    down: Shaping | None = None  # edge end's egress: towards the customer
    up: Shaping | None = None  # customer end's egress: towards the edge

    @property
    def rate_mbps(self) -> int | None:
        if self.down is None or self.up is None or self.down.rate_mbps != self.up.rate_mbps:
            return None
        return self.down.rate_mbps

    @property
    def suspended(self) -> bool | None:
        if self.down is None or self.up is None or self.down.leaf is None or not self.up.leaf:
            return None
        if self.down.leaf.suspended != self.up.leaf.suspended:
            return None
        return self.down.leaf.suspended


def _alias(connection_id: str, location_id: str) -> str:
    return f"{connection_id}@{location_id}"


def _parse_alias(alias: str | None) -> tuple[str, str] | None:
    if not alias or "@" not in alias:
        return None
    connection_id, location_id = alias.split("@", 1)
    return connection_id, location_id


class LinuxDriver:
    name = "linux"

    def __init__(
        self,
        *,
        prefix: str = "iod",
        customer_ifname: str = "eth0",
        dry_run: bool = False,
        emit: Emit | None = None,
    ) -> None:
        self.prefix = prefix
        self.customer_ifname = customer_ifname
        self.kernel = Kernel(dry_run=dry_run, emit=emit)
        self._lock = threading.RLock()  # worker threads share one driver

    # --- names --------------------------------------------------------------------------

    def edge_namespace(self, location_id: str) -> str:
        return naming.edge_namespace(self.prefix, location_id)

    def customer_namespace(self, connection_id: str) -> str:
        return naming.customer_namespace(self.prefix, connection_id)

    def _edge_link(self, ipr: IPRoute | None, connection_id: str) -> tuple[str, Any | None]:
        """The edge end's name and link: the first candidate name that is this connection's
        (alias) or free. Names of other connections are passed over, so none collide."""
        for attempt in range(naming.MAX_ATTEMPTS):
            name = naming.edge_ifname(self.prefix, connection_id, attempt)
            link = self.kernel.link(ipr, name) if ipr is not None else None
            if link is None:
                return name, None
            owner = _parse_alias(link.get_attr("IFLA_IFALIAS"))
            if owner is not None and owner[0] == connection_id:
                return name, link
        raise DriverError(f"no free interface name for {connection_id}")

    # --- the protocol -------------------------------------------------------------------

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        with self._lock:
            self._converge(spec, suspended=False, op_id=op_id)

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None:
        with self._lock:
            mbps = spec.bandwidth_mbps
            if not self._on_both_ends(
                spec, lambda ipr, dev, i: self.kernel.set_rate(ipr, dev, i, mbps)
            ):
                self._converge(spec, suspended=None, op_id=op_id)

    def suspend(self, spec: ConnectionSpec, op_id: str) -> None:
        with self._lock:
            if not self._on_both_ends(
                spec, lambda ipr, dev, i: self.kernel.set_leaf(ipr, dev, i, True)
            ):
                self._converge(spec, suspended=True, op_id=op_id)

    def resume(self, spec: ConnectionSpec, op_id: str) -> None:
        with self._lock:
            if not self._on_both_ends(
                spec, lambda ipr, dev, i: self.kernel.set_leaf(ipr, dev, i, False)
            ):
                self._converge(spec, suspended=False, op_id=op_id)

    def _on_both_ends(
        self, spec: ConnectionSpec, change: Callable[[IPRoute, str, int], None]
    ) -> bool:
        """The fast path of a change to a connection that exists: find both ends by name and
        change them, a few netlink messages whatever the number of connections. False when
        an end or its HTB tree is missing: the caller then converges the whole connection.
        (Other damage, such as a lost address, is for reconciliation to find.)"""
        edge_ns = self.edge_namespace(spec.location_id)
        cust_ns = self.customer_namespace(spec.connection_id)
        if not (self.kernel.exists(edge_ns) and self.kernel.exists(cust_ns)):
            return False
        with self.kernel.ns(edge_ns, keep=True) as edge, self.kernel.ns(cust_ns) as cust:
            assert edge is not None and cust is not None
            ifname, link = self._edge_link(edge, spec.connection_id)
            peer = cust.link_lookup(ifname=self.customer_ifname)
            if link is None or not peer:
                return False
            try:
                change(edge, ifname, int(link["index"]))
                change(cust, self.customer_ifname, int(peer[0]))
            except DriverError as exc:
                log.warning("linux.fast_path_failed", connection_id=spec.connection_id,
                            error=str(exc))  # fmt: skip
                return False
        return True

    def terminate(self, connection_id: str, op_id: str) -> None:
        with self._lock:
            log.info("linux.terminate", connection_id=connection_id, op_id=op_id)
            self._remove(connection_id)

    def inventory(self) -> list[ConfiguredConnection]:
        with self._lock:
            return [
                ConfiguredConnection(
                    port.connection_id,
                    port.location_id,
                    port.rate_mbps or 0,
                    bool(port.suspended),
                )
                for port in sorted(self.ports().values(), key=lambda p: p.connection_id)
                if port.complete
            ]

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        with self._lock:
            was, self.kernel.dry_run = self.kernel.dry_run, self.kernel.dry_run or dry_run
            try:
                return self._reconcile(desired, skip)
            finally:
                self.kernel.dry_run = was

    def close(self) -> None:
        with self._lock:
            self.kernel.close()

    def counters(self) -> dict[str, tuple[int, int, int, int]]:
        """Each complete connection's class byte counters: (download, upload, 0, 0); this
        lab topology reads no packet counters."""
        with self._lock:
            return {
                cid: (port.down.sent_bytes, port.up.sent_bytes, 0, 0)
                for cid, port in self.ports().items()
                if port.complete and port.down is not None and port.up is not None
            }

    # --- reading ------------------------------------------------------------------------

    def ports(self, blocks: dict[str, IPv4Network] | None = None) -> dict[str, Port]:
        """Every connection the kernel has a trace of, keyed by connection id: edge links
        named by our prefix, and customer namespaces (which may have lost their link).
        With `blocks`, a connection is complete only with exactly its block's addresses."""
        found: dict[str, Port] = {}
        namespaces = self.kernel.namespaces()
        for edge in sorted(n for n in namespaces if n.startswith(f"{self.prefix}-edge-")):
            with self.kernel.ns(edge, keep=True) as ipr:
                assert ipr is not None
                snapshot = self.kernel.snapshot(ipr)
                for link in self.kernel.links(ipr):
                    owner = _parse_alias(link.get_attr("IFLA_IFALIAS"))
                    ifname = str(link.get_attr("IFLA_IFNAME"))
                    if not ifname.startswith(self.prefix) or ifname == "lo":
                        continue
                    if owner is None:  # a pair cut off before it was named: nobody's
                        found[f"{UNNAMED}{edge}/{ifname}"] = Port("", "", edge, ifname, False)
                        continue
                    block = (blocks or {}).get(owner[0])
                    found[owner[0]] = self._read_port(
                        ipr, edge, ifname, link, *owner, block, snapshot=snapshot
                    )
        for name in namespaces:
            connection_id = naming.connection_of_namespace(self.prefix, name)
            if connection_id is not None and connection_id not in found:
                found[connection_id] = Port(connection_id, "", "", "", complete=False)
        return found

    def _read_port(
        self,
        ipr: IPRoute,
        edge: str,
        ifname: str,
        link: Any,
        connection_id: str,
        location_id: str,
        block: IPv4Network | None = None,
        *,
        snapshot: Snapshot | None = None,
    ) -> Port:
        index = link["index"]
        snapshot = snapshot or self.kernel.snapshot(ipr)
        down = self.kernel.shaping(ipr, index, snapshot)
        up: Shaping | None = None
        complete = down.rate_mbps is not None and down.leaf is not None
        edge_addresses = snapshot.addresses.get(index, set())
        if block is not None:
            complete = complete and f"{gateway(block)}/{block.prefixlen}" in edge_addresses
        else:
            complete = complete and bool(edge_addresses)
        cust_ns = self.customer_namespace(connection_id)
        if self.kernel.exists(cust_ns):
            with self.kernel.ns(cust_ns) as cust:
                assert cust is not None
                cust_link = self.kernel.link(cust, self.customer_ifname)
                if cust_link is None:
                    complete = False
                else:
                    inside = self.kernel.snapshot(cust)  # two interfaces: a cheap dump
                    up = self.kernel.shaping(cust, cust_link["index"], inside)
                    addresses = inside.addresses.get(cust_link["index"], set())
                    route = self.kernel.default_gateway(cust)
                    if block is not None:
                        wanted = f"{customer_address(block)}/{block.prefixlen}"
                        complete = complete and wanted in addresses
                        complete = complete and route == str(gateway(block))
                    else:
                        complete = complete and bool(addresses) and route is not None
                    complete = complete and up.rate_mbps is not None and up.leaf is not None
                    complete = complete and cust_link.get_attr("IFLA_OPERSTATE") == "UP"
        else:
            complete = False
        return Port(connection_id, location_id, edge, ifname, complete, down, up)

    def port(self, spec: ConnectionSpec) -> Port | None:
        """The connection's objects as found, with their rates and byte counters."""
        with self._lock:
            return self._port(spec, IPv4Network(spec.ipv4_block or "0.0.0.0/32"))

    def _port(self, spec: ConnectionSpec, block: IPv4Network) -> Port | None:
        edge = self.edge_namespace(spec.location_id)
        if not self.kernel.exists(edge):
            return None
        with self.kernel.ns(edge, keep=True) as ipr:
            assert ipr is not None
            ifname, link = self._edge_link(ipr, spec.connection_id)
            if link is None:
                return None
            return self._read_port(
                ipr, edge, ifname, link, spec.connection_id, spec.location_id, block
            )

    # --- writing ------------------------------------------------------------------------

    def _converge(self, spec: ConnectionSpec, *, suspended: bool | None, op_id: str) -> None:
        """Make the kernel hold `spec`; `suspended` None keeps the current suspension."""
        if spec.ipv4_block is None:
            raise DriverError(f"connection {spec.connection_id} has no IPv4 block")
        block = IPv4Network(spec.ipv4_block)
        port = self._port(spec, block)
        if port is None or not port.complete:
            log.info(
                "linux.build", connection_id=spec.connection_id, op_id=op_id,
                rebuild=port is not None,
            )  # fmt: skip
            # Whatever an interrupted build left (a namespace, a pair not yet named by its
            # alias) goes first: removing the customer end takes the whole pair with it.
            self._remove(spec.connection_id)
            self._build(spec, block, suspended=bool(suspended))
            return
        self._correct(spec, port, suspended)

    def _correct(self, spec: ConnectionSpec, port: Port, suspended: bool | None) -> list[str]:
        """Fix rate and suspension of a complete port; returns what was wrong."""
        assert port.down is not None and port.up is not None
        fixed: list[str] = []
        cust_ns = self.customer_namespace(spec.connection_id)
        with (
            self.kernel.ns(port.edge_namespace, keep=True) as edge,
            self.kernel.ns(cust_ns) as cust,
        ):
            assert edge is not None and cust is not None
            edge_index = edge.link_lookup(ifname=port.edge_ifname)[0]
            cust_index = cust.link_lookup(ifname=self.customer_ifname)[0]
            sides = (
                (edge, port.edge_ifname, edge_index, port.down, "download"),
                (cust, self.customer_ifname, cust_index, port.up, "upload"),
            )
            for ipr, dev, index, shaping, direction in sides:
                if shaping.rate_mbps != spec.bandwidth_mbps:
                    fixed.append(f"{direction} {shaping.rate_mbps} -> {spec.bandwidth_mbps} Mbps")
                    self.kernel.set_rate(ipr, dev, index, spec.bandwidth_mbps)
                is_suspended = shaping.leaf is not None and shaping.leaf.suspended
                if suspended is not None and is_suspended != suspended:
                    fixed.append(f"{direction} {'suspended' if suspended else 'resumed'}")
                    self.kernel.set_leaf(ipr, dev, index, suspended)
        return fixed

    def _build(self, spec: ConnectionSpec, block: IPv4Network, *, suspended: bool) -> None:
        k = self.kernel
        edge_ns = self.edge_namespace(spec.location_id)
        cust_ns = self.customer_namespace(spec.connection_id)
        gw, mine = gateway(block), customer_address(block)
        with k.ns(edge_ns, create=True, keep=True) as edge:
            if edge is not None:
                loopback = edge.link_lookup(ifname="lo")[0]
                if edge.get_links(loopback)[0].get_attr("IFLA_OPERSTATE") != "UNKNOWN":
                    k.run(edge, f"ip -n {edge_ns} link set lo up",
                          lambda i: i.link("set", index=loopback, state="up"))  # fmt: skip
                self._evict_block_holders(edge, edge_ns, spec.connection_id, block)
            ifname, _ = self._edge_link(edge, spec.connection_id)
            with k.ns(cust_ns, create=True) as cust:
                peer = self.customer_ifname
                k.run(
                    edge,
                    f"ip -n {edge_ns} link add {ifname} type veth peer name {peer} netns {cust_ns}",
                    lambda i: i.link(
                        "add", ifname=ifname, kind="veth",
                        peer={"ifname": peer, "net_ns_fd": cust_ns},
                    ),
                )  # fmt: skip
                alias = _alias(spec.connection_id, spec.location_id)
                edge_index = self._index(edge, ifname)
                cust_index = self._index(cust, peer)
                k.run(edge, f"ip -n {edge_ns} link set {ifname} alias {alias}",
                      lambda i: i.link("set", index=edge_index, ifalias=alias))  # fmt: skip
                # Shaping first, then addresses and links up: no packet passes unshaped.
                k.shape(edge, ifname, edge_index, spec.bandwidth_mbps, suspended)
                k.shape(cust, peer, cust_index, spec.bandwidth_mbps, suspended)
                k.run(edge, f"ip -n {edge_ns} addr add {gw}/{block.prefixlen} dev {ifname}",
                      lambda i: i.addr("add", index=edge_index, address=str(gw),
                                       prefixlen=block.prefixlen))  # fmt: skip
                k.run(cust, f"ip -n {cust_ns} addr add {mine}/{block.prefixlen} dev {peer}",
                      lambda i: i.addr("add", index=cust_index, address=str(mine),
                                       prefixlen=block.prefixlen))  # fmt: skip
                cust_lo = self._index(cust, "lo")
                k.run(cust, f"ip -n {cust_ns} link set lo up",
                      lambda i: i.link("set", index=cust_lo, state="up"))  # fmt: skip
                k.run(cust, f"ip -n {cust_ns} link set {peer} up",
                      lambda i: i.link("set", index=cust_index, state="up"))  # fmt: skip
                k.run(edge, f"ip -n {edge_ns} link set {ifname} up",
                      lambda i: i.link("set", index=edge_index, state="up"))  # fmt: skip
                k.run(cust, f"ip -n {cust_ns} route add default via {gw}",
                      lambda i: i.route("add", dst="0.0.0.0/0", gateway=str(gw)))  # fmt: skip

    @staticmethod
    def _index(ipr: IPRoute | None, ifname: str) -> int:
        if ipr is None:
            return 0  # dry run: the interface would exist by now
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise DriverError(f"interface {ifname} vanished while being configured")
        return int(found[0])

    def _evict_block_holders(
        self, edge: IPRoute, edge_ns: str, connection_id: str, block: IPv4Network
    ) -> None:
        """A block belongs to one live connection (the database guarantees it). A link that
        holds it for another connection is a stale remnant (a provisioning that failed for
        good, its block since given again): remove it. Found by a route lookup of the
        customer address, which names the link with the block's connected route."""
        try:
            routes = edge.route("get", dst=str(customer_address(block)))
        except NetlinkError:
            return  # unreachable: nobody holds the block
        for route in routes:
            index = route.get_attr("RTA_OIF")
            if not index:
                continue
            link = edge.get_links(index)[0]
            owner = _parse_alias(link.get_attr("IFLA_IFALIAS"))
            if owner is not None and owner[0] != connection_id:
                log.warning("linux.evict", stale=owner[0], block_for=connection_id)
                self._remove(owner[0])

    def _remove(self, connection_id: str) -> None:
        """Delete every kernel object of the connection: its veth pair (deleting one end
        deletes both, with their addresses and qdiscs) and its namespace."""
        k = self.kernel
        cust_ns = self.customer_namespace(connection_id)
        for edge_ns in sorted(n for n in k.namespaces() if n.startswith(f"{self.prefix}-edge-")):
            with k.ns(edge_ns, keep=True) as edge:
                assert edge is not None
                ifname, link = self._edge_link(edge, connection_id)
                if link is not None:
                    self._delete_link(edge, f"-n {edge_ns}", ifname, int(link["index"]))
        if k.exists(cust_ns):
            with k.ns(cust_ns) as cust:
                assert cust is not None
                index = cust.link_lookup(ifname=self.customer_ifname)
                if index:
                    self._delete_link(cust, f"-n {cust_ns}", self.customer_ifname, index[0])
            k.remove_namespace(cust_ns)

    def _delete_link(self, ipr: IPRoute, where: str, ifname: str, index: int) -> None:
        self.kernel.run(ipr, f"ip {where} link del {ifname}", lambda i: i.link("del", index=index))

    # --- reconciliation -----------------------------------------------------------------

    def _reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str]
    ) -> ReconcileReport:
        report = ReconcileReport()
        wanted = {d.connection_id: d for d in desired}
        blocks = {d.connection_id: IPv4Network(d.ipv4_block) for d in desired if d.ipv4_block}
        found = self.ports(blocks)
        for connection_id, port in sorted(found.items()):
            if connection_id.startswith(UNNAMED):
                report.removed.append(f"{port.edge_namespace}/{port.edge_ifname}: no owner")
                with self.kernel.ns(port.edge_namespace, keep=True) as edge:
                    index = edge.link_lookup(ifname=port.edge_ifname) if edge else []
                    if edge is not None and index:
                        self._delete_link(edge, f"-n {port.edge_namespace}", port.edge_ifname,
                                          index[0])  # fmt: skip
            elif connection_id in skip:
                report.skipped.append(connection_id)
            elif connection_id not in wanted:
                report.removed.append(f"{connection_id}: not in the database")
                self._remove(connection_id)
        for connection_id, want in sorted(wanted.items()):
            if connection_id in skip:
                if connection_id not in found:  # (a port it has is counted above)
                    report.skipped.append(connection_id)
                continue
            spec = ConnectionSpec(
                connection_id, want.location_id, want.bandwidth_mbps, want.ipv4_block
            )
            if spec.ipv4_block is None:
                report.skipped.append(f"{connection_id}: no IPv4 block")
                continue
            current = found.get(connection_id)
            if current is None or not current.complete or current.location_id != want.location_id:
                why = "missing" if current is None else "incomplete, rebuilt"
                report.created.append(f"{connection_id}: {why}")
                self._remove(connection_id)
                self._build(spec, blocks[connection_id], suspended=want.suspended)
                continue
            fixed = self._correct(spec, current, want.suspended)
            if fixed:
                report.corrected.append(f"{connection_id}: {', '.join(fixed)}")
            else:
                report.unchanged += 1
        return report
