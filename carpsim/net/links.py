"""Links and addresses through netlink (pyroute2): parent lookup, per-VHID macvlans, VIPs.

Each VHID's VIPs live on a macvlan named ``carp<vhid>x<parent ifindex>`` whose MAC is the CARP
virtual MAC 00:00:5e:00:01:<vhid>. The macvlan is created DOWN at start; it goes UP (and gets
the VIPs) only while MASTER, so no frame ever leaves with the virtual MAC from a BACKUP.

A node killed with SIGKILL cannot clean up: its macvlan (and, in --real-mac mode, the VIP on
the parent) stay configured. `reclaim` removes them on the next start, matching macvlans by
name pattern or by virtual MAC on the same parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from carpsim.protocol.constants import virtual_mac

MACVLAN_NAME = re.compile(r"^carp(\d{1,3})x(\d+)$")
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

Vip = IPv4Interface | IPv6Interface


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mac: str
    flags: int
    kind: str
    parent: int | None

    @property
    def usable(self) -> bool:
        """Administratively up and carrier present (what CARP calls a usable parent)."""
        return self.flags_usable(self.flags)

    @staticmethod
    def flags_usable(flags: int) -> bool:
        """`usable` for the raw ifi_flags of a link event."""
        return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def macvlan_name(vhid: int, parent_index: int) -> str:
    return f"carp{vhid}x{parent_index}"


def _link_info(msg: Any) -> LinkInfo:
    kind = ""
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND") or ""
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
        flags=int(msg["flags"]),
        kind=str(kind),
        parent=msg.get_attr("IFLA_LINK"),
    )


class _Proxy:
    """Runs every pyroute2 call on one private thread.

    pyroute2's synchronous IPRoute drives its own asyncio loop, which cannot run inside the
    daemon's (running, possibly uvloop) loop thread. The calls stay blocking for the caller:
    each is a netlink round trip of well under a millisecond.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._ipr: Any = self._pool.submit(IPRoute).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._ipr, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._pool.submit(method, *args, **kwargs).result()

        return call

    def shutdown(self) -> None:
        self._pool.submit(self._ipr.close).result()
        self._pool.shutdown()


class Links:
    """Synchronous netlink calls (links, macvlans, addresses) for the current namespace."""

    def __init__(self) -> None:
        self._ipr = _Proxy()

    def close(self) -> None:
        self._ipr.shutdown()

    def lookup(self, name: str) -> LinkInfo | None:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            return None
        return self.get(found[0])

    def get(self, index: int) -> LinkInfo | None:
        try:
            msgs = self._ipr.get_links(index)
        except NetlinkError:
            return None
        return _link_info(msgs[0]) if msgs else None

    def all_links(self) -> list[LinkInfo]:
        return [_link_info(m) for m in self._ipr.get_links()]

    def ipv4_addresses(self, index: int) -> list[IPv4Interface]:
        out = []
        for msg in self._ipr.get_addr(family=socket.AF_INET, index=index):
            out.append(IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
        return out

    # --- macvlan -------------------------------------------------------------------------

    def create_macvlan(self, parent: LinkInfo, vhid: int) -> LinkInfo:
        name = macvlan_name(vhid, parent.index)
        self._ipr.link(
            "add",
            ifname=name,
            kind="macvlan",
            link=parent.index,
            macvlan_mode="bridge",
            address=virtual_mac(vhid),
        )
        info = self.lookup(name)
        if info is None:  # pragma: no cover - the kernel just created it
            raise OSError(f"macvlan {name} vanished after creation")
        return info

    def delete(self, index: int) -> None:
        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: already gone
                raise

    def set_up(self, index: int, up: bool) -> None:
        self._ipr.link("set", index=index, state="up" if up else "down")

    def stale_macvlans(self, parent: LinkInfo, vhids: set[int]) -> list[LinkInfo]:
        """Macvlans on `parent` left by an earlier run (by name pattern or virtual MAC)."""
        macs = {virtual_mac(v) for v in vhids}
        stale = []
        for link in self.all_links():
            if link.kind != "macvlan" or link.parent != parent.index:
                continue
            m = MACVLAN_NAME.match(link.name)
            if (m and int(m.group(1)) in vhids) or link.mac in macs:
                stale.append(link)
        return stale

    # --- addresses -----------------------------------------------------------------------

    def add_address(self, index: int, vip: Vip) -> None:
        family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        try:
            self._ipr.addr(
                "add",
                index=index,
                address=str(vip.ip),
                prefixlen=vip.network.prefixlen,
                family=family,
            )
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: already there (e.g. reclaimed VIP)
                raise

    def del_address(self, index: int, vip: Vip) -> bool:
        family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        try:
            self._ipr.addr(
                "del",
                index=index,
                address=str(vip.ip),
                prefixlen=vip.network.prefixlen,
                family=family,
            )
        except NetlinkError as exc:
            if exc.code in (99, 19):  # EADDRNOTAVAIL / ENODEV: nothing to remove
                return False
            raise
        return True


_RTMGRP_LINK = 0x1
_RTM_NEWLINK = 16
_RTM_DELLINK = 17
_RTM_GETLINK = 18
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_HDR = struct.Struct("=LHHLL")
_IFINFOMSG = struct.Struct("=BxHiII")

LinkHandler = Callable[[int, int, bool], None]
"""(ifindex, flags, deleted)"""


class LinkWatcher:
    """Netlink RTMGRP_LINK listener: calls `on_change(index, flags, deleted)` per link event.

    A raw netlink socket parsed by hand keeps the loop free of pyroute2's own threads.
    """

    def __init__(self, on_change: LinkHandler) -> None:
        self._on_change = on_change
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, _RTMGRP_LINK))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self.overruns = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # The kernel dropped link events: a missed carrier change would leave CARP
                    # or state sync on a stale view until the next one. Ask for every link.
                    self.overruns += 1
                    self.resync()
                    continue
                return
            for index, flags, deleted in parse_link_messages(data):
                self._on_change(index, flags, deleted)

    def resync(self) -> None:
        """Request a dump of every link; the replies arrive as RTM_NEWLINK like any event."""
        self._seq += 1
        request = _NLMSG_HDR.pack(
            _NLMSG_HDR.size + _IFINFOMSG.size,
            _RTM_GETLINK,
            _NLM_F_REQUEST | _NLM_F_DUMP,
            self._seq,
            0,
        ) + _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        with contextlib.suppress(OSError):
            self._sock.send(request)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def parse_link_messages(data: bytes) -> list[tuple[int, int, bool]]:
    out = []
    off = 0
    while off + _NLMSG_HDR.size + _IFINFOMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size:
            break
        if mtype in (_RTM_NEWLINK, _RTM_DELLINK):
            _fam, _type, index, ifflags, _change = _IFINFOMSG.unpack_from(
                data, off + _NLMSG_HDR.size
            )
            out.append((index, ifflags, mtype == _RTM_DELLINK))
        off += (length + 3) & ~3
    return out
