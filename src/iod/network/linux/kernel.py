"""A thin layer over pyroute2: reads always run; writes run, or in dry-run mode are printed.

Every write is described in `ip`/`tc` syntax before it is made, so a dry run shows an
operator exactly what the driver would do, in commands they already read fluently.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from iod.network.base import DriverError

# HTB tree of each shaped interface: root 1:, one class 1:10 that all traffic defaults to,
# and a leaf qdisc 10: under it.
ROOT = "1:"
CLASS = "1:10"
DEFAULT_MINOR = 0x10
CLASS_HANDLE = 0x10010
LEAF = "10:"
LEAF_HANDLE = 0x100000
ROOT_HANDLE = 0x10000
# The leaf when nothing better exists, and the suspended leaf: a FIFO that holds no packet
# drops every one, so a suspended connection passes zero bytes and keeps its HTB class.
FIFO_LIMIT = 1000
SUSPENDED_LIMIT = 0
# Best first. These kernels have none of them; then the FIFO is the leaf.
LEAF_CANDIDATES = ("cake", "fq_codel", "sfq")


def burst_bytes(mbps: int) -> int:
    """4 ms at the rate, at least 10 full frames. HTB refills its bucket by the clock, but
    only dequeues when the CPU gets to it: with a bucket of 1 ms, a sender preempted for a
    few ms (a busy 2-core machine) loses that capacity for good, and 1 Gbps measured 94 %.
    4 ms rides that out (measured 99.6-100.2 % under load) and also covers TSO-sized
    segments on veth; the cost is a line-rate burst of at most 4 ms after an idle spell."""
    return max(15_000, mbps * 500)


@dataclass(frozen=True)
class Leaf:
    kind: str
    limit: int | None

    @property
    def suspended(self) -> bool:
        return self.kind == "pfifo" and self.limit == SUSPENDED_LIMIT


@dataclass(frozen=True)
class Shaping:
    """What an interface's egress has: the HTB class's rate (Mbps) and the leaf, if any."""

    rate_mbps: int | None
    leaf: Leaf | None
    sent_bytes: int = 0


@dataclass(frozen=True)
class Snapshot:
    addresses: dict[int, set[str]]  # by interface index, "a.b.c.d/len"
    leaves: dict[int, Leaf]  # by interface index: the leaf under class 1:10


Emit = Callable[[str], None]


class Kernel:
    def __init__(self, *, dry_run: bool = False, emit: Emit | None = None) -> None:
        self.dry_run = dry_run
        self.emit = emit or (lambda text: print(text, flush=True))
        # pyroute2's synchronous sockets belong to the thread that opened them (each runs
        # its own event loop), so cached sockets are per thread: worker threads share the
        # driver, not the sockets.
        self._local = threading.local()
        self._all: list[IPRoute] = []
        self._best_leaf: str | None = None

    # --- namespaces ---------------------------------------------------------------------

    @staticmethod
    def namespaces() -> set[str]:
        return set(netns.listnetns())

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(netns.NETNS_RUN_DIR, name))

    def write(self, text: str) -> bool:
        """Announce a write; False means dry run: do not make it."""
        if self.dry_run:
            self.emit(f"dry-run: {text}")
            return False
        return True

    @contextmanager
    def ns(
        self, name: str, *, create: bool = False, keep: bool = False
    ) -> Iterator[IPRoute | None]:
        """An rtnetlink socket inside namespace `name`, or None in a dry run where it does
        not exist yet. `keep` caches the socket (edge namespaces, used by every operation;
        opening one costs a few ms). Callers serialise (the driver holds its lock)."""
        cached = self._handles.get(name)
        if cached is not None:
            handle, inode = cached
            if self._inode(name) == inode:
                yield handle
                return
            # Deleted (and perhaps made again) behind our back: the socket would still
            # talk to the old namespace, which lives on anonymously while it is open.
            handle.close()
            del self._handles[name]
        if not self.exists(name):
            if not create:
                raise DriverError(f"network namespace {name} does not exist")
            if not self.write(f"ip netns add {name}"):
                yield None
                return
            self._create_namespace(name)
        handle = self._open(name)
        if keep:
            self._handles[name] = (handle, self._inode(name))
            self._all.append(handle)
            yield handle
            return
        try:
            yield handle
        finally:
            handle.close()

    @staticmethod
    def _inode(name: str) -> int | None:
        try:
            return os.stat(os.path.join(netns.NETNS_RUN_DIR, name)).st_ino
        except FileNotFoundError:
            return None

    @property
    def _handles(self) -> dict[str, tuple[IPRoute, int | None]]:
        handles: dict[str, tuple[IPRoute, int | None]] | None = getattr(
            self._local, "handles", None
        )
        if handles is None:
            handles = self._local.handles = {}
        return handles

    @staticmethod
    def _open(name: str) -> IPRoute:
        """A socket created inside the namespace: this thread enters it (setns affects only
        the calling thread), makes the socket, and returns. About 0.7 ms, where
        IPRoute(netns=...) starts a helper process and takes about 7 ms."""
        netns.pushns(name)
        try:
            return IPRoute()
        finally:
            netns.popns()

    @staticmethod
    def _create_namespace(name: str) -> None:
        try:
            netns.create(name)
        except OSError as exc:  # another worker process made it first
            if exc.errno != errno.EEXIST:
                raise

    def remove_namespace(self, name: str) -> None:
        if self.exists(name) and self.write(f"ip netns del {name}"):
            netns.remove(name)  # only customer namespaces are removed: never cached

    def close(self) -> None:
        """Close every cached socket (call when no thread uses the driver any more)."""
        for handle in self._all:
            handle.close()
        self._all.clear()
        self._local = threading.local()

    # --- links and addresses ------------------------------------------------------------

    @staticmethod
    def link(ipr: IPRoute, ifname: str) -> Any | None:
        found = ipr.link_lookup(ifname=ifname)
        return ipr.get_links(found[0])[0] if found else None

    @staticmethod
    def links(ipr: IPRoute) -> list[Any]:
        return list(ipr.get_links())

    @staticmethod
    def default_gateway(ipr: IPRoute) -> str | None:
        for route in ipr.get_routes(family=2, table=254):
            if route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY"):
                return str(route.get_attr("RTA_GATEWAY"))
        return None

    def run(self, ipr: IPRoute | None, text: str, call: Callable[[IPRoute], object]) -> None:
        """Make one write (described by `text`), turning netlink errors into DriverError."""
        if not self.write(text):
            return
        assert ipr is not None
        try:
            call(ipr)
        except NetlinkError as exc:
            raise DriverError(f"{text}: {exc}") from exc

    # --- traffic control ----------------------------------------------------------------

    @staticmethod
    def snapshot(ipr: IPRoute) -> Snapshot:
        """One dump each of a namespace's IPv4 addresses and qdiscs. The kernel answers an
        address or qdisc dump for the whole namespace (pyroute2 filters by interface in
        Python), so an edge with many connections is read once, not once per connection."""
        addresses: dict[int, set[str]] = {}
        for a in ipr.get_addr(family=2):
            addresses.setdefault(a["index"], set()).add(
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            )
        leaves: dict[int, Leaf] = {}
        for qdisc in ipr.get_qdiscs():
            if qdisc["handle"] == LEAF_HANDLE and qdisc["parent"] == CLASS_HANDLE:
                options = qdisc.get_attr("TCA_OPTIONS")
                limit = options.get("limit") if isinstance(options, dict) else None
                leaves[qdisc["index"]] = Leaf(str(qdisc.get_attr("TCA_KIND")), limit)
        return Snapshot(addresses, leaves)

    @staticmethod
    def shaping(ipr: IPRoute, index: int, snapshot: Snapshot) -> Shaping:
        """The interface's class rate and byte counter (a class dump is per interface in the
        kernel, so this one is cheap) and its leaf from the snapshot."""
        rate = None
        sent = 0
        for cls in ipr.get_classes(index=index):
            if cls["handle"] == CLASS_HANDLE and cls.get_attr("TCA_KIND") == "htb":
                params = cls.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                rate = round(params["rate"] * 8 / 1_000_000)
                stats = cls.get_attr("TCA_STATS2").get_attr("TCA_STATS_BASIC")
                sent = int(stats["bytes"])
        return Shaping(rate, snapshot.leaves.get(index), sent)

    def shape(self, ipr: IPRoute | None, dev: str, index: int, mbps: int, suspended: bool) -> None:
        """Build the HTB tree on a fresh interface's egress."""
        self.run(
            ipr,
            f"tc qdisc add dev {dev} root handle {ROOT} htb default {DEFAULT_MINOR:x}",
            lambda i: i.tc("add", "htb", index=index, handle=ROOT, default=DEFAULT_MINOR),
        )
        self._rate_class(ipr, "add", dev, index, mbps)
        self.set_leaf(ipr, dev, index, suspended, verb="add")

    def set_rate(self, ipr: IPRoute | None, dev: str, index: int, mbps: int) -> None:
        """Change the class in place: queued packets and established flows carry on."""
        self._rate_class(ipr, "change", dev, index, mbps)

    def _rate_class(self, ipr: IPRoute | None, verb: str, dev: str, index: int, mbps: int) -> None:
        rate, burst = f"{mbps}mbit", burst_bytes(mbps)
        self.run(
            ipr,
            f"tc class {verb} dev {dev} parent {ROOT} classid {CLASS} htb rate {rate}"
            f" ceil {rate} burst {burst} cburst {burst}",
            lambda i: i.tc(
                f"{verb}-class", "htb", index=index, handle=CLASS, parent=ROOT,
                rate=rate, ceil=rate, burst=burst, cburst=burst,
            ),
        )  # fmt: skip

    def set_leaf(
        self, ipr: IPRoute | None, dev: str, index: int, suspended: bool, verb: str = "replace"
    ) -> None:
        """The leaf under the class: an empty FIFO when suspended, else the best there is."""
        kind = "pfifo" if suspended else self.best_leaf(ipr, index)
        options: dict[str, int] = {}
        if kind == "pfifo":
            options["limit"] = SUSPENDED_LIMIT if suspended else FIFO_LIMIT
        described = "".join(f" {name} {value}" for name, value in options.items())
        self.run(
            ipr,
            f"tc qdisc {verb} dev {dev} parent {CLASS} handle {LEAF} {kind}{described}",
            lambda i: i.tc(verb, kind, index=index, handle=LEAF, parent=CLASS, **options),
        )

    def best_leaf(self, ipr: IPRoute | None, index: int) -> str:
        """The best leaf qdisc this kernel offers, found once by trying each candidate as the
        root qdisc of the namespace's loopback and removing it at once: detected, not
        assumed, and without touching the interface being shaped."""
        if self._best_leaf is not None:
            return self._best_leaf
        if ipr is None or self.dry_run:
            return "pfifo"  # nothing to try on in a dry run; not cached
        loopback = ipr.link_lookup(ifname="lo")[0]
        for kind in LEAF_CANDIDATES:
            try:
                ipr.tc("add", kind, index=loopback, handle="0x7fff:", parent=0xFFFFFFFF)
            except NetlinkError:
                continue
            ipr.tc("del", kind, index=loopback, handle="0x7fff:", parent=0xFFFFFFFF)
            self._best_leaf = kind
            break
        else:
            self._best_leaf = "pfifo"
        return self._best_leaf
