"""Edge mode: shaping thousands of connections on one uplink interface of an edge router.

One HTB tree on the uplink's egress shapes downloads (traffic towards the customers); the
uplink's ingress is redirected (u32 match-all, `mirred egress redirect`) to an IFB device
whose own HTB tree shapes uploads. Each connection is a class `1:<minor>` in both trees at
its rate (rate = ceil), and is classified by its IPv4 block with hashed u32 filters:

    ht 800: (root)   match all, hash on the third octet of the address  -> ht 1: (256 buckets)
    ht 1:<octet>     match all, hash on (fourth octet >> 2)            -> ht 0x100+octet (64)
    ht 0x1oo:<b>     match the block exactly                            -> classid 1:<minor>

so a packet is classified with three lookups whatever the number of connections (a /29 or
/28 block has a filter in each /30 bucket it covers). Downloads match the destination
address (offset 16), uploads the source (offset 12).

The minor is the block's /30 index in its /16 (plus 1): an edge in this mode serves
customer blocks of one /16 (16,384 /30 blocks; HTB minors are 16 bits). A suspended
connection's class gets a leaf `pfifo limit 0` (every packet dropped, configuration kept);
an active one has HTB's default leaf.

Everything is netlink through pyroute2: qdiscs, classes and actions through its `tc()`;
the u32 hash tables and links, which its `tc()` cannot express (no divisor, link or hash
key), as tcmsg messages built here and sent in batches (`nlm_request_batch`). Nothing
shells out.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELTFILTER, RTM_NEWTFILTER
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from iod.network.base import (
    ConfiguredConnection,
    ConnectionSpec,
    DriverError,
    ReconcileReport,
)
from iod.network.linux.kernel import burst_bytes

ETH_P_IP = 0x0800
ROOT = 0x10000  # 1:
INGRESS = 0xFFFF0000  # ffff:
PRIO = 1
HT_L1 = 0x001  # ht 1: the third octet's 256 buckets
HT_ROOT = 0x800
DST, SRC = 16, 12  # offsets of the IPv4 addresses in the header
BATCH = 256  # netlink messages per batch


def _handle(ht: int, bucket: int = 0, node: int = 0) -> int:
    return (ht << 20) | (bucket << 12) | node


def minor_of(block: IPv4Network) -> int:
    """The class minor of a block: its /30 index within its /16, plus 1 (1..16384)."""
    address = int(block.network_address)
    return ((address >> 2) & 0x3FFF) + 1


def _slots(block: IPv4Network) -> list[tuple[int, int, int]]:
    """(third octet, /30 bucket, node id) of each /30 a block covers; the node id is the
    second octet + 1, so blocks of two /16s never share a filter handle."""
    base = int(block.network_address)
    count = max(1, block.num_addresses // 4)
    out = []
    for i in range(count):
        address = base + 4 * i
        out.append(((address >> 8) & 0xFF, (address & 0xFF) >> 2, ((address >> 16) & 0xFF) + 1))
    return out


@dataclass(frozen=True)
class ClassState:
    rate_mbps: int
    suspended: bool
    bytes: int
    packets: int


class EdgeShaper:
    """The edge mode driver: it implements the driver protocol (the agent applies desired
    rows with it) and knows blocks, not namespaces: connections are named by the agent."""

    name = "linux-edge"

    def __init__(
        self, *, uplink: str, ifb: str, location_id: str, namespace: str | None = None
    ) -> None:
        self.uplink = uplink
        self.ifb = ifb
        self.location_id = location_id
        self.namespace = namespace
        self._local = threading.local()
        self._lock = threading.RLock()
        self._ready = False
        self.blocks: dict[str, IPv4Network] = {}  # connection -> block, as applied

    # --- sockets ---------------------------------------------------------------------------

    @property
    def ipr(self) -> IPRoute:
        ipr: IPRoute | None = getattr(self._local, "ipr", None)
        if ipr is None:
            if self.namespace is not None:
                netns.pushns(self.namespace)
                try:
                    ipr = IPRoute()
                finally:
                    netns.popns()
            else:
                ipr = IPRoute()
            self._local.ipr = ipr
        return ipr

    def close(self) -> None:
        ipr = getattr(self._local, "ipr", None)
        if ipr is not None:
            ipr.close()
            self._local.ipr = None

    def _index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise DriverError(f"no interface {name}")
        return int(found[0])

    @contextmanager
    def _netlink(self, what: str) -> Iterator[None]:
        try:
            yield
        except NetlinkError as exc:
            raise DriverError(f"{what}: {exc}") from exc

    # --- the trees ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Builds (idempotently) the IFB, both HTB roots, the ingress redirect and the hash
        tables; run before the first operation."""
        if self._ready:
            return
        ipr = self.ipr
        with self._netlink("edge setup"):
            if not ipr.link_lookup(ifname=self.ifb):
                ipr.link("add", ifname=self.ifb, kind="ifb")
            ifb = self._index(self.ifb)
            ipr.link("set", index=ifb, state="up")
            up = self._index(self.uplink)
            qdiscs = {(q["index"], q["parent"]): q for q in ipr.get_qdiscs()}
            for index, offset in ((up, DST), (ifb, SRC)):
                root = qdiscs.get((index, 0xFFFFFFFF))
                if root is None or root.get_attr("TCA_KIND") != "htb" or root["handle"] != ROOT:
                    if root is not None and root.get_attr("TCA_KIND") not in (None, "noqueue"):
                        ipr.tc("del", index=index, parent=0xFFFFFFFF)
                    ipr.tc("add", "htb", index=index, handle=ROOT, default=0, r2q=1000)
                    self._send(
                        RTM_NEWTFILTER,
                        [
                            self._filter(index, _handle(HT_L1), [["TCA_U32_DIVISOR", 256]]),
                            self._link(index, _handle(HT_ROOT, 0, HT_ROOT), HT_L1, 0xFF00, offset),
                        ],
                    )
            if not any(
                q["index"] == up and q.get_attr("TCA_KIND") == "ingress" for q in qdiscs.values()
            ):
                ipr.tc("add", "ingress", index=up)
                ipr.tc("add-filter", "u32", index=up, parent=INGRESS, prio=PRIO,
                       protocol=ETH_P_IP, target=0, keys=["0x0/0x0+0"],
                       action={"kind": "mirred", "direction": "egress", "action": "redirect",
                               "ifindex": ifb})  # fmt: skip
        self._tables: dict[int, set[int]] = {
            up: self._existing_tables(up),
            ifb: self._existing_tables(ifb),
        }
        self._up, self._ifb = up, ifb
        self._ready = True

    def _existing_tables(self, index: int) -> set[int]:
        """The second-level hash tables already there (third octets)."""
        found = set()
        for f in self.ipr.get_filters(index=index, parent=ROOT):
            handle = f["handle"]
            ht = handle >> 20
            options = f.get_attr("TCA_OPTIONS")
            divisor = options.get_attr("TCA_U32_DIVISOR") if options is not None else None
            if ht >= 0x100 and handle & 0xFFFFF == 0 and divisor:
                found.add(ht - 0x100)
        return found

    @staticmethod
    def _filter(index: int, handle: int, attrs: list[list[Any]]) -> tcmsg:
        msg = tcmsg()
        msg["index"] = index
        msg["handle"] = handle
        msg["parent"] = ROOT
        msg["info"] = (PRIO << 16) | socket.htons(ETH_P_IP)
        msg["attrs"] = [["TCA_KIND", "u32"], ["TCA_OPTIONS", {"attrs": attrs}]]
        return msg

    def _link(self, index: int, handle: int, to_ht: int, hmask: int, offset: int) -> tcmsg:
        ht = handle >> 20
        bucket = (handle >> 12) & 0xFF
        return self._filter(
            index,
            handle,
            [
                ["TCA_U32_HASH", _handle(ht, bucket)],
                ["TCA_U32_LINK", struct.pack("I", _handle(to_ht))],
                ["TCA_U32_SEL", {"keys": [f"0x0/0x0+{offset}"], "hmask": hmask,
                                 "hoff": offset}],
            ],
        )  # fmt: skip

    def _send(self, kind: int, msgs: list[tcmsg], *, missing_ok: bool = False) -> None:
        flags = NLM_F_REQUEST | NLM_F_ACK
        if kind == RTM_NEWTFILTER:
            flags |= NLM_F_CREATE  # by handle: an existing filter is replaced
        for msg in msgs:
            msg["header"]["type"] = kind
            msg["header"]["flags"] = flags
        for start in range(0, len(msgs), BATCH):
            try:
                self.ipr.nlm_request_batch(msgs[start : start + BATCH])
            except NetlinkError as exc:
                if missing_ok and exc.code in (2, 22):  # ENOENT, EINVAL: already gone
                    continue
                raise DriverError(f"tc filters: {exc}") from exc

    def _filters_for(self, block: IPv4Network, minor: int, create_tables: bool) -> list[tcmsg]:
        msgs: list[tcmsg] = []
        for index, offset in ((self._up, DST), (self._ifb, SRC)):
            for third, bucket, node in _slots(block):
                ht = 0x100 + third
                if create_tables and third not in self._tables[index]:
                    msgs.append(self._filter(index, _handle(ht), [["TCA_U32_DIVISOR", 64]]))
                    msgs.append(self._link(index, _handle(HT_L1, third, 1), ht, 0xFC, offset))
                    self._tables[index].add(third)
                net, mask = int(block.network_address), int(block.netmask)
                msgs.append(
                    self._filter(
                        index,
                        _handle(ht, bucket, node),
                        [
                            ["TCA_U32_HASH", _handle(ht, bucket)],
                            ["TCA_U32_CLASSID", ROOT | minor],
                            ["TCA_U32_SEL", {"keys": [f"0x{net:08x}/0x{mask:08x}+{offset}"],
                                             "flags": 1}],
                        ],
                    )
                )  # fmt: skip
        return msgs

    # --- one connection ----------------------------------------------------------------------

    def _class(self, verb: str, index: int, minor: int, mbps: int) -> None:
        rate, burst = f"{mbps}mbit", burst_bytes(mbps)
        self.ipr.tc(f"{verb}-class", "htb", index=index, handle=ROOT | minor, parent=ROOT,
                    rate=rate, ceil=rate, burst=burst, cburst=burst)  # fmt: skip

    def _leaf(self, index: int, minor: int, suspended: bool) -> None:
        handle = (minor + 1) << 16
        if suspended:
            self.ipr.tc("replace", "pfifo", index=index, handle=handle, parent=ROOT | minor,
                        limit=0)  # fmt: skip
        else:
            try:
                self.ipr.tc("del", "pfifo", index=index, handle=handle, parent=ROOT | minor)
            except NetlinkError as exc:
                if exc.code not in (2, 22):
                    raise

    def ensure(self, block: IPv4Network, mbps: int, suspended: bool, *, new: bool) -> None:
        """Adds (new) or corrects a block's classes, filters and leaf."""
        minor = minor_of(block)
        with self._netlink(f"edge {block}"):
            if new:
                for index in (self._up, self._ifb):
                    self._class("add", index, minor, mbps)
                self._send(RTM_NEWTFILTER, self._filters_for(block, minor, True))
            else:
                for index in (self._up, self._ifb):
                    self._class("change", index, minor, mbps)
            if suspended or not new:
                for index in (self._up, self._ifb):
                    self._leaf(index, minor, suspended)

    def remove(self, block: IPv4Network) -> None:
        minor = minor_of(block)
        with self._netlink(f"edge remove {block}"):
            msgs = []
            for index, _offset in ((self._up, DST), (self._ifb, SRC)):
                for third, bucket, node in _slots(block):
                    msgs.append(self._filter(index, _handle(0x100 + third, bucket, node), []))
            self._send(RTM_DELTFILTER, msgs, missing_ok=True)
            for index in (self._up, self._ifb):
                try:
                    self.ipr.tc("del-class", "htb", index=index, handle=ROOT | minor,
                                parent=ROOT)  # fmt: skip
                except NetlinkError as exc:
                    if exc.code not in (2, 22):
                        raise

    def classes(self) -> dict[int, tuple[ClassState, ClassState]]:
        """minor -> (download, upload) as the kernel has them, counters included."""
        self.setup()
        sides: list[dict[int, ClassState]] = []
        for index in (self._up, self._ifb):
            suspended = {
                q["parent"] & 0xFFFF
                for q in self.ipr.get_qdiscs(index=index)
                if q.get_attr("TCA_KIND") == "pfifo" and (q["parent"] >> 16) == 1
            }
            side: dict[int, ClassState] = {}
            for cls in self.ipr.get_classes(index=index):
                handle = cls["handle"]
                if handle >> 16 != 1 or handle & 0xFFFF == 0:
                    continue
                params = cls.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                stats = cls.get_attr("TCA_STATS2").get_attr("TCA_STATS_BASIC")
                minor = handle & 0xFFFF
                side[minor] = ClassState(
                    round(params["rate"] * 8 / 1_000_000), minor in suspended,
                    int(stats["bytes"]), int(stats["packets"]),
                )  # fmt: skip
            sides.append(side)
        down, up = sides
        return {m: (down[m], up[m]) for m in down if m in up}

    # --- the driver protocol -------------------------------------------------------------------

    def _block(self, spec: ConnectionSpec) -> IPv4Network:
        if spec.ipv4_block is None:
            raise DriverError(f"connection {spec.connection_id} has no IPv4 block")
        return IPv4Network(spec.ipv4_block)

    def _apply(self, spec: ConnectionSpec, suspended: bool | None) -> None:
        """Builds or corrects one connection without reading the trees: each class is
        added, or changed where it exists; the filters are (re)written by handle, which
        replaces them in place; the leaf is set when the suspension is given."""
        with self._lock:
            self.setup()
            block = self._block(spec)
            known = self.blocks.get(spec.connection_id)
            if known is not None and known != block:
                self.remove(known)
            minor = minor_of(block)
            with self._netlink(f"edge {block}"):
                for index in (self._up, self._ifb):
                    try:
                        self._class("add", index, minor, spec.bandwidth_mbps)
                    except NetlinkError as exc:
                        if exc.code != 17:  # EEXIST
                            raise
                        self._class("change", index, minor, spec.bandwidth_mbps)
                self._send(RTM_NEWTFILTER, self._filters_for(block, minor, True))
                if suspended is not None:
                    for index in (self._up, self._ifb):
                        self._leaf(index, minor, suspended)
            self.blocks[spec.connection_id] = block

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        self._apply(spec, False)

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None:
        """The fast path: change both classes in place (two netlink messages); a missing
        class falls back to building the connection."""
        with self._lock:
            self.setup()
            block = self._block(spec)
            minor = minor_of(block)
            try:
                for index in (self._up, self._ifb):
                    self._class("change", index, minor, spec.bandwidth_mbps)
                self.blocks[spec.connection_id] = block
                return
            except NetlinkError:
                pass
        self._apply(spec, None)

    def suspend(self, spec: ConnectionSpec, op_id: str) -> None:
        self._apply(spec, True)

    def resume(self, spec: ConnectionSpec, op_id: str) -> None:
        self._apply(spec, False)

    def remember(self, connection_id: str, block: str | None) -> None:
        """The block of a connection about to be terminated (the agent's tombstones carry
        it), for a shaper that did not apply it in this process."""
        if block is not None:
            self.blocks.setdefault(connection_id, IPv4Network(block))

    def terminate(self, connection_id: str, op_id: str) -> None:
        with self._lock:
            self.setup()
            block = self.blocks.pop(connection_id, None)
            if block is not None:
                self.remove(block)

    def counters(self) -> dict[str, tuple[int, int, int, int]]:
        """connection -> (bytes in, bytes out, packets in, packets out); `in` is the
        download (the uplink's egress), `out` the upload (the IFB's)."""
        with self._lock:
            states = self.classes()
            out = {}
            for connection_id, block in self.blocks.items():
                pair = states.get(minor_of(block))
                if pair is not None:
                    down, up = pair
                    out[connection_id] = (down.bytes, up.bytes, down.packets, up.packets)
            return out

    def inventory(self) -> list[ConfiguredConnection]:
        with self._lock:
            states = self.classes()
            by_minor = {minor_of(b): c for c, b in self.blocks.items()}
            return [
                ConfiguredConnection(by_minor.get(m, f"class-1:{m:x}"), self.location_id,
                                     down.rate_mbps, down.suspended,
                                     str(self.blocks[by_minor[m]]) if m in by_minor else None)
                for m, (down, _up) in sorted(states.items())
            ]  # fmt: skip

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        """Makes the trees hold exactly `desired`: one dump of each device's classes and
        leaves, then only the differences (new connections in filter batches)."""
        report = ReconcileReport()
        with self._lock:
            states = self.classes()
            wanted: dict[int, tuple[ConfiguredConnection, IPv4Network]] = {}
            for c in desired:
                if c.ipv4_block is None:
                    continue
                block = IPv4Network(c.ipv4_block)
                wanted[minor_of(block)] = (c, block)
                if c.connection_id not in skip:
                    self.blocks[c.connection_id] = block
            for minor, (c, block) in sorted(wanted.items()):
                if c.connection_id in skip:
                    report.skipped.append(c.connection_id)
                    continue
                pair = states.get(minor)
                if pair is None:
                    report.created.append(c.connection_id)
                    if not dry_run:
                        self.ensure(block, c.bandwidth_mbps, c.suspended, new=True)
                elif (pair[0].rate_mbps, pair[0].suspended) != (c.bandwidth_mbps, c.suspended):
                    report.corrected.append(c.connection_id)
                    if not dry_run:
                        self.ensure(block, c.bandwidth_mbps, c.suspended, new=False)
                else:
                    report.unchanged += 1
            stale = [m for m in states if m not in wanted]
            if stale:
                blocks = self._blocks_of_classes(set(stale))
                for minor in stale:
                    report.removed.append(f"class-1:{minor:x}")
                    if dry_run:
                        continue
                    for block in blocks.get(minor, []):
                        self.remove(block)
                    if minor not in blocks:
                        self._remove_class(minor)
            self.blocks = {c: b for c, b in self.blocks.items() if minor_of(b) in wanted}
        return report

    def _blocks_of_classes(self, minors: set[int]) -> dict[int, list[IPv4Network]]:
        """The blocks the uplink's filters send to these classes (for orphans)."""
        found: dict[int, list[IPv4Network]] = {}
        for f in self.ipr.get_filters(index=self._up, parent=ROOT):
            options = f.get_attr("TCA_OPTIONS")
            if options is None:
                continue
            classid = options.get_attr("TCA_U32_CLASSID")
            sel = options.get_attr("TCA_U32_SEL")
            if not classid or (classid & 0xFFFF) not in minors or sel is None:
                continue
            keys = sel.get("keys") or []
            if not keys:
                continue
            key = keys[0]
            mask = int(key["key_mask"])
            prefix = bin(mask).count("1")
            block = IPv4Network((int(key["key_val"]), prefix))
            if block not in found.setdefault(classid & 0xFFFF, []):
                found[classid & 0xFFFF].append(block)
        return found

    def _remove_class(self, minor: int) -> None:
        for index in (self._up, self._ifb):
            try:
                self.ipr.tc("del-class", "htb", index=index, handle=ROOT | minor, parent=ROOT)
            except NetlinkError as exc:
                if exc.code not in (2, 22, 16):
                    raise DriverError(f"del class 1:{minor:x}: {exc}") from exc
