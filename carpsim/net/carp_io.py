"""CARP packet I/O on one parent interface: a raw IP socket in, an AF_PACKET socket out.

Receive: ``socket(AF_INET, SOCK_RAW, 112)`` delivers each packet as it arrives (no pcap
buffering, ucarp's 1 s lag) with its IPv4 header, so the machine checks TTL and addresses. The
socket is bound to the parent (SO_BINDTODEVICE), joins 224.0.0.18 on the parent's ifindex (which
also makes the NIC accept 01:00:5e:00:00:12) and never loops our own multicast back. Every
packet read is handed over as (ifindex, bytes): the pure `CarpGroup` decides everything else
(our own source, the interface, decoding, routing).

Send: multicast adverts and GARPs are whole Ethernet frames written to an AF_PACKET socket
bound to the parent, so the source MAC is the virtual MAC (or the real one with --real-mac).
Unicast adverts (--peer) go through an IP_HDRINCL raw socket so the kernel resolves the peer's
MAC; their source is the real MAC, as FreeBSD does for unicast peers (FreeBSD ip_carp.c).

Flood defence (docs/security.md): a LAN host sending tens of thousands of bogus CARP packets a
second once saturated a backup until it missed the master's adverts and took over. So
* a classic BPF socket filter (`vhid_filter`) lets the kernel drop, before Python sees them,
  packets that cannot be an advert for a VHID this parent serves: IPv4 without options, TTL
  255, protocol 112, CARP version 2 type 1, and a VHID byte from the served set;
* what is left is paced per source (`SourceBuckets`): each IPv4 source may hand at most
  `PER_SOURCE_RATE` packets a second (burst `PER_SOURCE_BURST`) to the machines; a real peer
  sends one advert per VHID per advbase, far below, so a flooding host only exhausts its own
  bucket and costs one recv and one dict lookup per packet. The dropped ones are counted.
A flood that spoofs the real peer's address shares its bucket: only keyed/strict CARP or the
node firewall (CARP only from the cluster's addresses) can tell those apart.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from carpsim.protocol.constants import CARP_GROUP_V4, IPPROTO_CARP
from carpsim.wire.garp import ETH_P_IP, ethernet_frame, multicast_mac

_RECV_BUF = 65535
_MAX_READS_PER_WAKEUP = 64
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
PER_SOURCE_RATE = 200.0
"""Packets per second one source may hand to the machines (255 VHIDs at advbase 1 + slack)."""
PER_SOURCE_BURST = 400.0
_MAX_SOURCES = 4096  # buckets kept; beyond, the idlest are forgotten (a spoofed-source flood)

# classic BPF opcodes (linux/filter.h)
_LDB_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_MAX_FILTERED_VHIDS = 200  # keeps every jump within the 8-bit offsets


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


def vhid_filter(vhids: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """The classic BPF program (code, jt, jf, k) a raw IPv4 socket's packets must pass; offsets
    count from the IPv4 header. Every failed check jumps to the final "drop"."""
    wanted = sorted(set(vhids))
    checks = [(0, 0x45), (8, 255), (9, IPPROTO_CARP), (20, 0x21)]
    if len(wanted) > _MAX_FILTERED_VHIDS:
        wanted = []  # too many for short jumps: the header checks still apply
    prog: list[tuple[int, int, int, int]] = []
    # layout: [ldb, jeq] per header check, ldb vhid, jeq per vhid, ret accept, ret drop
    total = 2 * len(checks) + (1 + len(wanted) if wanted else 0) + 2
    drop = total - 1
    accept = total - 2
    for off, value in checks:
        prog.append((_LDB_ABS, 0, 0, off))
        here = len(prog)
        prog.append((_JEQ_K, 0, drop - here - 1, value))
    if wanted:
        prog.append((_LDB_ABS, 0, 0, 21))
        for n, vhid in enumerate(wanted):
            here = len(prog)
            last = n == len(wanted) - 1
            prog.append((_JEQ_K, accept - here - 1, drop - here - 1 if last else 0, vhid))
    prog.append((_RET_K, 0, 0, 0x40000))
    prog.append((_RET_K, 0, 0, 0))
    assert len(prog) == total
    return prog


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER (the kernel copies the program during the call)."""
    insns = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))


class SourceBuckets:
    """A token bucket per IPv4 source: `allow(src, now)` False once a source exceeds its rate."""

    __slots__ = ("_b", "burst", "dropped", "rate")

    def __init__(self, rate: float = PER_SOURCE_RATE, burst: float = PER_SOURCE_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._b: dict[bytes, list[float]] = {}  # src -> [tokens, last]
        self.dropped = 0

    def allow(self, src: bytes, now: float) -> bool:
        b = self._b.get(src)
        if b is None:
            if len(self._b) >= _MAX_SOURCES:
                self._b.pop(next(iter(self._b)))
            b = self._b[src] = [self.burst, now]
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            self.dropped += 1
            return False
        b[0] = tokens - 1.0
        return True


PacketHandler = Callable[[int, bytes], None]
"""(ifindex the packet was read on, the IPv4 packet)"""


def _bind_to_device(sock: socket.socket, ifname: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, ifname.encode())


class CarpSocket:
    """Raw CARP sockets for one parent interface; `on_packet` gets each received IP packet."""

    def __init__(
        self,
        ifname: str,
        ifindex: int,
        on_packet: PacketHandler,
        *,
        join_group: bool = True,
    ) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self._on_packet = on_packet
        self._loop: asyncio.AbstractEventLoop | None = None
        self.buckets = SourceBuckets()
        self.filtered_vhids: tuple[int, ...] = ()

        rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_CARP)
        try:
            _bind_to_device(rx, ifname)
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            if join_group:
                # struct ip_mreqn: group, local address (any), ifindex
                mreqn = struct.pack("=4s4si", CARP_GROUP_V4.packed, b"\x00" * 4, ifindex)
                rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            rx.setblocking(False)
            # Protocol 0: a send-only packet socket never queues received frames.
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            tx.bind((ifname, 0))
            tx.setblocking(False)
            uni = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            uni.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            _bind_to_device(uni, ifname)
            uni.setblocking(False)
        except OSError:
            rx.close()
            raise
        self._rx, self._tx, self._uni = rx, tx, uni

    def restrict_vhids(self, vhids: Iterable[int]) -> None:
        """Let the kernel drop every packet that is no advert for one of `vhids`."""
        self.filtered_vhids = tuple(sorted(set(vhids)))
        attach_filter(self._rx, vhid_filter(self.filtered_vhids))
        # Packets queued before the filter was attached did not pass it: drop them.
        while True:
            try:
                self._rx.recv(_RECV_BUF)
            except OSError:
                break

    def serve_vhids(self, vhids: Iterable[int]) -> None:
        """The served VHIDs changed on a running node: swap the filter (the kernel replaces it
        atomically) and keep what is queued, which are adverts the old filter let through."""
        self.filtered_vhids = tuple(sorted(set(vhids)))
        attach_filter(self._rx, vhid_filter(self.filtered_vhids))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._rx.fileno(), self._readable)

    def _readable(self) -> None:
        # Drain what is queued (one wake-up may cover several adverts), but at most a bounded
        # batch: under a flood the loop must still get back to its timers, or a master stops
        # advertising. The reader fires again at once while data is left.
        allow = self.buckets.allow
        now = time.monotonic()
        for _ in range(_MAX_READS_PER_WAKEUP):
            try:
                data = self._rx.recv(_RECV_BUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if allow(data[12:16], now):
                self._on_packet(self.ifindex, data)

    def send_advert(self, packet: bytes, src_mac: bytes) -> None:
        """Send one IPv4 CARP packet; raises OSError on failure (the caller counts it)."""
        dst = IPv4Address(packet[16:20])
        if dst.is_multicast:
            frame = ethernet_frame(multicast_mac(dst), src_mac, ETH_P_IP, packet)
            self._tx.send(frame)
        else:
            self._uni.sendto(packet, (str(dst), 0))

    def send_frame(self, frame: bytes) -> None:
        self._tx.send(frame)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._rx.fileno())
        for s in (self._rx, self._tx, self._uni):
            s.close()
