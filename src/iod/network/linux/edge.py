"""Edge mode: shaping thousands of connections on one uplink interface of an edge router.

The uplink's egress shapes downloads (traffic towards the customers); its ingress is
redirected (u32 match-all, `mirred egress redirect`) to an IFB device whose egress shapes
uploads. Each device has the same two-level HTB tree:

    root qdisc 1: (HTB)                      u32: hash on the address's third octet
      class 1:<octet+1>  (a /24, line rate)   -> its bucket's filter sends to this class
        qdisc <octet+2>: (HTB)                u32: hash on (fourth octet >> 2)
          class <octet+2>:<n+1>  one per connection, rate = ceil = its bandwidth,
                                 matched by its block in the bucket of each /30 it covers

so a packet is classified with two hash lookups whatever the number of connections, and
each connection has a class in both trees. Downloads match the destination address
(offset 16), uploads the source (offset 12). Why two levels rather than one HTB with
10,000 classes: creating a class makes the kernel walk every class of its qdisc to rebind
filters (`tc_bind_tclass`), so one flat qdisc costs O(n) per new class (14 ms per
connection at 10,000, measured); a qdisc per /24 bounds that walk at 64 classes.

A connection is named in the tree by its block: (third octet, first /30 of the block in
it), so an edge in this mode serves customer blocks of one /16 (the location's default
pool size). A suspended connection's class gets a leaf `pfifo limit 0` (every packet
dropped, configuration kept); an active one has HTB's default leaf.

Everything is netlink: pyroute2 for what is rare (the IFB, the roots, the ingress redirect
with its mirred action, a /24's qdisc and hash tables) and to encode an HTB class once per
rate; the per-connection messages (classes, u32 filters, leaves) are encoded here from
pyroute2's templates or by hand (pyroute2's `tc()` cannot express u32 hash tables, links
and hash keys, and its encoding costs milliseconds), and sent in batches on a plain
rtnetlink socket with every acknowledgement checked. Nothing shells out.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELQDISC,
    RTM_DELTCLASS,
    RTM_DELTFILTER,
    RTM_NEWQDISC,
    RTM_NEWTCLASS,
    RTM_NEWTFILTER,
)
from pyroute2.netlink.rtnl.tcmsg import sched_htb, tcmsg

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
HT_TABLE = 0x001  # ht 1: in each qdisc's filter block
HT_ROOT = 0x800
DST, SRC = 16, 12  # offsets of the IPv4 addresses in the header
BATCH = 256  # netlink messages per batch
LINE_MBPS = 100_000  # a /24's class: never the limit
ENOENT, EEXIST, EINVAL = 2, 17, 22


def _nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _handle(ht: int, bucket: int = 0, node: int = 0) -> int:
    """A u32 filter handle: table (12 bits), bucket (8), node (12)."""
    return (ht << 20) | (bucket << 12) | node


def _slot(block: IPv4Network) -> tuple[int, int]:
    """(third octet, first /30 bucket in it) of a block: where its class is."""
    address = int(block.network_address)
    return (address >> 8) & 0xFF, (address & 0xFF) >> 2


def minor_of(block: IPv4Network) -> int:
    """A block's identity in the trees: its /30 index within its /16, plus 1."""
    third, bucket = _slot(block)
    return (third << 6 | bucket) + 1


def _class_handle(minor: int) -> int:
    """minor_of(...) -> the class handle <octet+2>:<bucket+1>."""
    third, bucket = divmod(minor - 1, 64)
    return ((third + 2) << 16) | (bucket + 1)


def _minor_of_handle(handle: int) -> int | None:
    major, minor = handle >> 16, handle & 0xFFFF
    if not 2 <= major <= 257 or not 1 <= minor <= 64:
        return None
    return ((major - 2) << 6 | (minor - 1)) + 1


def _buckets(block: IPv4Network) -> list[tuple[int, int]]:
    """(/30 bucket, node id) for each /30 a block covers; the node id is the second octet
    + 1, so blocks of two /16s never share a filter handle."""
    base = int(block.network_address)
    second = ((base >> 16) & 0xFF) + 1
    return [(((base + 4 * i) & 0xFF) >> 2, second) for i in range(max(1, block.num_addresses // 4))]


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
        self._class_templates: dict[int, bytes] = {}
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
        sock = getattr(self._local, "nl", None)
        if sock is not None:
            sock.close()
            self._local.nl = None
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

    @property
    def _nl(self) -> socket.socket:
        """A plain rtnetlink socket of the namespace, for batches of messages pyroute2 has
        encoded: one `sendto` and the acknowledgements read back, without pyroute2's
        per-request event loop round (about 1.5 ms a call, most of a rate change)."""
        sock: socket.socket | None = getattr(self._local, "nl", None)
        if sock is None:
            if self.namespace is not None:
                netns.pushns(self.namespace)
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
            finally:
                if self.namespace is not None:
                    netns.popns()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, 0))
            self._local.nl = sock
            self._local.seq = 0
        return sock

    def _send(
        self, kind: int, msgs: list[Any], *, ok: tuple[int, ...] = (), flags: int | None = None
    ) -> None:
        """Sends messages of one type in batches (one system call each) and checks every
        acknowledgement; the first error is raised as a NetlinkError."""
        if flags is None:
            # By handle, without EXCL: an existing filter or class is replaced in place.
            flags = NLM_F_CREATE if kind in (RTM_NEWTFILTER, RTM_NEWTCLASS) else 0
        sock = self._nl
        for start in range(0, len(msgs), BATCH):
            chunk = msgs[start : start + BATCH]
            data = bytearray()
            first = self._local.seq + 1
            for msg in chunk:
                self._local.seq += 1
                if isinstance(msg, bytearray):  # encoded here already (the hot paths)
                    struct.pack_into(
                        "=HHII", msg, 4, kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                        self._local.seq, 0,
                    )  # fmt: skip
                    data += msg
                    continue
                msg["header"]["type"] = kind
                msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
                msg["header"]["sequence_number"] = self._local.seq
                msg["header"]["pid"] = 0
                msg.encode()
                data += msg.data
            sock.sendto(bytes(data), (0, 0))
            waiting = set(range(first, self._local.seq + 1))
            error: int | None = None
            while waiting:
                buf = sock.recv(1 << 20)
                offset = 0
                while offset + 16 <= len(buf):
                    length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, offset)
                    if mtype == 2 and seq in waiting:  # NLMSG_ERROR: 0 is the ack
                        waiting.discard(seq)
                        (code,) = struct.unpack_from("=i", buf, offset + 16)
                        if code and error is None and -code not in ok:
                            error = -code
                    offset += (length + 3) & ~3 if length else len(buf)
            if error is not None:
                raise NetlinkError(error, os.strerror(error))

    # --- messages --------------------------------------------------------------------------

    def _class_msg(self, index: int, parent: int, handle: int, mbps: int) -> bytearray:
        """An HTB class at `mbps` (rate = ceil). pyroute2 encodes one message per rate (its
        rate tables take milliseconds of Python); copies get their interface and handles."""
        template = self._class_templates.get(mbps)
        if template is None:
            rate, burst = f"{mbps}mbit", burst_bytes(mbps)
            msg = tcmsg()
            msg["attrs"] = [
                ["TCA_KIND", "htb"],
                ["TCA_OPTIONS", sched_htb.get_class_parameters(
                    {"rate": rate, "ceil": rate, "burst": burst, "cburst": burst})],
            ]  # fmt: skip
            msg.encode()
            template = self._class_templates[mbps] = bytes(msg.data)
        out = bytearray(template)
        struct.pack_into("=iII", out, 20, index, handle, parent)
        return out

    @staticmethod
    def _tc(index: int, handle: int, parent: int, attrs: bytes = b"", info: int = 0) -> bytearray:
        """A bare tcmsg with its attributes (type and flags are set when sent)."""
        body = struct.pack("=BBHiIII", 0, 0, 0, index, handle, parent, info) + attrs
        return bytearray(struct.pack("=IHHII", 16 + len(body), 0, 0, 0, 0) + body)

    def _u32(self, index: int, parent: int, handle: int, options: bytes) -> bytearray:
        return self._tc(index, handle, parent,
                        _nla(1, b"u32\0") + _nla(2, options),
                        (PRIO << 16) | socket.htons(ETH_P_IP))  # fmt: skip

    @staticmethod
    def _sel(*, net: int = 0, mask: int = 0, offset: int, terminal: bool,
             hmask: int = 0) -> bytes:  # fmt: skip
        """struct tc_u32_sel with one key (a match-all one when mask is 0)."""
        return (struct.pack("=BBBx", 1 if terminal else 0, 0, 1) + struct.pack(">H", 0)
                + struct.pack("=Hhh", 0, 0, offset if hmask else 0) + struct.pack(">I", hmask)
                + struct.pack(">II", mask, net) + struct.pack("=ii", offset, 0))  # fmt: skip

    def _hash_tables(self, index: int, parent: int, divisor: int, hmask: int,
                     offset: int) -> list[bytearray]:  # fmt: skip
        """A qdisc's hash table `1:` and the root filter hashing into it."""
        table = self._u32(index, parent, _handle(HT_TABLE), _nla(4, struct.pack("=I", divisor)))
        link = self._u32(
            index, parent, _handle(HT_ROOT, 0, HT_ROOT),
            _nla(2, struct.pack("=I", _handle(HT_ROOT)))
            + _nla(3, struct.pack("=I", _handle(HT_TABLE)))
            + _nla(5, self._sel(offset=offset, terminal=False, hmask=hmask)),
        )  # fmt: skip
        return [table, link]

    def _block_filters(self, index: int, block: IPv4Network, offset: int) -> list[bytearray]:
        """The block's filters in its /24 qdisc: one per /30 bucket it covers."""
        minor = minor_of(block)
        handle = _class_handle(minor)
        parent = handle & 0xFFFF0000
        net, mask = int(block.network_address), int(block.netmask)
        sel = self._sel(net=net, mask=mask, offset=offset, terminal=True)
        return [
            self._u32(
                index,
                parent,
                _handle(HT_TABLE, bucket, node),
                _nla(2, struct.pack("=I", _handle(HT_TABLE, bucket)))
                + _nla(1, struct.pack("=I", handle))
                + _nla(5, sel),
            )
            for bucket, node in _buckets(block)
        ]

    def _leaf_msg(self, index: int, minor: int, suspended: bool) -> bytearray:
        handle = (0x400 + minor) << 16
        attrs = _nla(1, b"pfifo\0")
        if suspended:
            attrs += _nla(2, struct.pack("=i", 0))  # limit 0
        return self._tc(index, handle, _class_handle(minor), attrs)

    # --- the trees ---------------------------------------------------------------------------

    def _devices(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self._up, DST), (self._ifb, SRC)

    def setup(self) -> None:
        """Builds (idempotently) the IFB, both roots, their hash tables and the ingress
        redirect, and reads which /24s and suspended leaves exist; once per process."""
        if self._ready:
            return
        ipr = self.ipr
        with self._netlink("edge setup"):
            if not ipr.link_lookup(ifname=self.ifb):
                ipr.link("add", ifname=self.ifb, kind="ifb")
            ifb = self._index(self.ifb)
            ipr.link("set", index=ifb, state="up")
            up = self._index(self.uplink)
            self._up, self._ifb = up, ifb
            qdiscs = list(ipr.get_qdiscs())
            for index, offset in self._devices():
                root = [q for q in qdiscs if q["index"] == index and q["parent"] == 0xFFFFFFFF]
                if not root or root[0].get_attr("TCA_KIND") != "htb" or root[0]["handle"] != ROOT:
                    # Replaces the device's default qdisc (and anything else at the root).
                    ipr.tc("replace", "htb", index=index, handle=ROOT, default=0, r2q=1000)
                    self._send(RTM_NEWTFILTER, self._hash_tables(index, ROOT, 256, 0xFF00, offset))
            if not any(q["index"] == up and q.get_attr("TCA_KIND") == "ingress" for q in qdiscs):
                ipr.tc("add", "ingress", index=up)
                ipr.tc("add-filter", "u32", index=up, parent=INGRESS, prio=PRIO,
                       protocol=ETH_P_IP, target=0, keys=["0x0/0x0+0"],
                       action={"kind": "mirred", "direction": "egress", "action": "redirect",
                               "ifindex": ifb})  # fmt: skip
            self._subnets: dict[int, set[int]] = {
                index: {
                    (q["handle"] >> 16) - 2
                    for q in ipr.get_qdiscs(index=index)
                    if q.get_attr("TCA_KIND") == "htb" and (q["parent"] >> 16) == 1
                }
                for index in (up, ifb)
            }
            self._suspended = {
                m
                for q in ipr.get_qdiscs(index=up)
                if q.get_attr("TCA_KIND") == "pfifo"
                and (m := _minor_of_handle(q["parent"])) is not None
            }
        self._ready = True

    def _subnet(self, third: int) -> None:
        """A /24's class, qdisc and hash table on both devices, made once."""
        for index, offset in self._devices():
            if third in self._subnets[index]:
                continue
            self._send(RTM_NEWTCLASS, [self._class_msg(index, ROOT, ROOT | (third + 1), LINE_MBPS)])
            self.ipr.tc("replace", "htb", index=index, handle=(third + 2) << 16,
                        parent=ROOT | (third + 1), default=0, r2q=1000)  # fmt: skip
            self._send(
                RTM_NEWTFILTER,
                [
                    *self._hash_tables(index, (third + 2) << 16, 64, 0xFC, offset),
                    self._u32(
                        index,
                        ROOT,
                        _handle(HT_TABLE, third, 1),
                        _nla(2, struct.pack("=I", _handle(HT_TABLE, third)))
                        + _nla(1, struct.pack("=I", ROOT | (third + 1)))
                        + _nla(5, self._sel(offset=offset, terminal=True)),
                    ),
                ],
                ok=(EEXIST,),
            )
            self._subnets[index].add(third)

    def ensure(self, block: IPv4Network, mbps: int, suspended: bool | None) -> None:
        """Adds or corrects a block's classes and filters (a batch each), and its leaf
        when `suspended` is given."""
        minor = minor_of(block)
        handle = _class_handle(minor)
        with self._netlink(f"edge {block}"):
            self._subnet(_slot(block)[0])
            self._send(RTM_NEWTCLASS, [
                self._class_msg(i, handle & 0xFFFF0000, handle, mbps) for i in (self._up, self._ifb)
            ])  # fmt: skip
            self._send(RTM_NEWTFILTER, [
                m for i, offset in self._devices() for m in self._block_filters(i, block, offset)
            ])  # fmt: skip
            if suspended is not None:
                self._set_leaf(minor, suspended)

    def _set_leaf(self, minor: int, suspended: bool) -> None:
        """An empty FIFO under both classes (suspended), or HTB's default leaf again."""
        if suspended == (minor in self._suspended):
            return
        msgs = [self._leaf_msg(i, minor, suspended) for i in (self._up, self._ifb)]
        if suspended:
            self._send(RTM_NEWQDISC, msgs, flags=NLM_F_CREATE | NLM_F_REPLACE)
            self._suspended.add(minor)
        else:
            self._send(RTM_DELQDISC, msgs, ok=(ENOENT, EINVAL))
            self._suspended.discard(minor)

    def remove(self, block: IPv4Network) -> None:
        minor = minor_of(block)
        handle = _class_handle(minor)
        with self._netlink(f"edge remove {block}"):
            filters = [m for i, off in self._devices() for m in self._block_filters(i, block, off)]
            self._send(RTM_DELTFILTER, filters, ok=(ENOENT, EINVAL))
            self._suspended.discard(minor)
            classes = [self._tc(i, handle, handle & 0xFFFF0000) for i in (self._up, self._ifb)]
            self._send(RTM_DELTCLASS, classes, ok=(ENOENT, EINVAL))

    def classes(self) -> dict[int, tuple[ClassState, ClassState]]:
        """minor -> (download, upload) as the kernel has them, counters included."""
        self.setup()
        sides: list[dict[int, ClassState]] = []
        for index in (self._up, self._ifb):
            suspended = {
                m
                for q in self.ipr.get_qdiscs(index=index)
                if q.get_attr("TCA_KIND") == "pfifo"
                and (m := _minor_of_handle(q["parent"])) is not None
            }
            side: dict[int, ClassState] = {}
            for cls in self.ipr.get_classes(index=index):
                minor = _minor_of_handle(cls["handle"])
                if minor is None or cls.get_attr("TCA_KIND") != "htb":
                    continue
                params = cls.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                stats = cls.get_attr("TCA_STATS2").get_attr("TCA_STATS_BASIC")
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
        """Builds or corrects one connection without reading the trees: classes and filters
        are written by handle (created, or replaced in place), the leaf set when the
        suspension is given."""
        with self._lock:
            self.setup()
            block = self._block(spec)
            known = self.blocks.get(spec.connection_id)
            if known is not None and known != block:
                self.remove(known)
            self.ensure(block, spec.bandwidth_mbps, suspended)
            self.blocks[spec.connection_id] = block

    def provision(self, spec: ConnectionSpec, op_id: str) -> None:
        self._apply(spec, False)

    def set_bandwidth(self, spec: ConnectionSpec, op_id: str) -> None:
        """The fast path: both classes changed in place, in one batch of two messages (a
        missing class fails it, and the connection is built instead)."""
        with self._lock:
            self.setup()
            block = self._block(spec)
            handle = _class_handle(minor_of(block))
            msgs = [
                self._class_msg(i, handle & 0xFFFF0000, handle, spec.bandwidth_mbps)
                for i in (self._up, self._ifb)
            ]
            try:
                self._send(RTM_NEWTCLASS, msgs, flags=0)
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
                ConfiguredConnection(by_minor.get(m, f"class-{m}"), self.location_id,
                                     down.rate_mbps, down.suspended,
                                     str(self.blocks[by_minor[m]]) if m in by_minor else None)
                for m, (down, _up) in sorted(states.items())
            ]  # fmt: skip

    def reconcile(
        self, desired: list[ConfiguredConnection], skip: frozenset[str], *, dry_run: bool = False
    ) -> ReconcileReport:
        """Makes the trees hold exactly `desired`: one dump of each device's classes and
        leaves, then only the differences."""
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
                elif (pair[0].rate_mbps, pair[0].suspended) != (c.bandwidth_mbps, c.suspended):
                    report.corrected.append(c.connection_id)
                else:
                    report.unchanged += 1
                    continue
                if not dry_run:
                    self.ensure(block, c.bandwidth_mbps, c.suspended)
            stale = [m for m in states if m not in wanted]
            report.removed += [f"class-{minor}" for minor in stale]
            if stale and not dry_run:
                with self._netlink("edge remove orphans"):
                    doomed = self._filters_of_classes(set(stale))
                    self._send(RTM_DELTFILTER, doomed, ok=(ENOENT, EINVAL))
                    classes = []
                    for minor in stale:
                        self._suspended.discard(minor)
                        handle = _class_handle(minor)
                        classes += [self._tc(i, handle, handle & 0xFFFF0000)
                                    for i in (self._up, self._ifb)]  # fmt: skip
                    self._send(RTM_DELTCLASS, classes, ok=(ENOENT, EINVAL))
            self.blocks = {c: b for c, b in self.blocks.items() if minor_of(b) in wanted}
        return report

    def _filters_of_classes(self, minors: set[int]) -> list[bytearray]:
        """Delete messages for the filters (both devices) that send to these classes: for
        orphans, whose blocks nobody knows any more; found by handle in their /24's qdisc."""
        out: list[bytearray] = []
        thirds = {(m - 1) >> 6 for m in minors}
        for index in (self._up, self._ifb):
            for third in thirds:
                parent = (third + 2) << 16
                for f in self.ipr.get_filters(index=index, parent=parent):
                    options = f.get_attr("TCA_OPTIONS")
                    classid = options.get_attr("TCA_U32_CLASSID") if options is not None else None
                    if classid and _minor_of_handle(classid) in minors:
                        out.append(self._u32(index, parent, f["handle"], b""))
        return out
