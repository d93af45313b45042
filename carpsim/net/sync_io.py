"""pfsync transport on the SYNC link: raw IP protocol 240, TTL 255 (BSD if_pfsync.c).

Send: a raw socket bound (SO_BINDTODEVICE) to the sync interface; the kernel builds the IPv4
header (TTL 255, TOS low-delay, DF) and the destination is the configured unicast peer or the
pfsync group 224.0.0.240 (then multicast TTL 255, no loopback of our own frames).

Receive: a second raw socket that is *not* bound to the interface, with IP_PKTINFO, so a frame
that arrives elsewhere is seen and counted as ``badif`` instead of silently never arriving.
Checked here: the interface, and the sender (docs/security.md): with a unicast peer only that
address may speak (``badpeer``); with the pfsync group, only addresses on the sync interface's
subnets that are not our own (``badpeer``; our own: ``loop``). The IPv4 header rules (TTL
exactly 255, IHL, protocol) are the pure codec's `decode_packet`, and the frame's are the
replicator's. Every drop is counted by its `SyncDropReason` and logged once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from carpsim.errors import DecodeError
from carpsim.statesync.codec import decode_packet
from carpsim.statesync.constants import (
    IPPROTO_PFSYNC,
    PFSYNC_DFLTTL,
    PFSYNC_GROUP_V4,
    SyncDropReason,
)

log = logging.getLogger(__name__)

PFSYNC_GROUP = IPv4Address(PFSYNC_GROUP_V4)
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPTOS_LOWDELAY = 0x10
_IP_PMTUDISC_DO = 2
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_RECV_BUF = 65535
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32
# Frames handled per readable callback: a bulk arrives as thousands of frames back to back and
# each costs a decode plus a mirror update, so the loop gets back to CARP's timer in between.
_READ_BATCH = 64

FrameHandler = Callable[[bytes], None]
"""Called with the pfsync payload (IP header stripped) of every frame that passed the checks."""


def source_refusal(
    src: bytes,
    peer: IPv4Address | None,
    own: frozenset[bytes],
    nets: tuple[IPv4Network, ...],
) -> SyncDropReason | None:
    """Why a frame from `src` is not accepted, or None (docs/security.md): ours (`loop`); with a
    unicast `peer` anything else (`badpeer`); with the group, anything off the sync subnets or
    their network/broadcast addresses (`badpeer`)."""
    if src in own:
        return SyncDropReason.LOOP
    if peer is not None:
        return None if src == peer.packed else SyncDropReason.BADPEER
    addr = IPv4Address(src)
    for net in nets:
        if addr in net and addr not in (net.network_address, net.broadcast_address):
            return None
    return SyncDropReason.BADPEER


class SyncSocket:
    """The raw sockets of one sync interface; `on_frame` gets each accepted pfsync payload."""

    def __init__(
        self,
        ifname: str,
        ifindex: int,
        on_frame: FrameHandler,
        *,
        peer: IPv4Address | None = None,
        local: Iterable[IPv4Interface] = (),
        rcvbuf: int = 8 << 20,
        sndbuf: int = 4 << 20,
    ) -> None:
        """`local`: the sync interface's own addresses (with prefix): never a peer, and with
        the multicast group their subnets are where a peer may be."""
        self.ifname = ifname
        self.ifindex = ifindex
        self.dst = peer if peer is not None else PFSYNC_GROUP
        self.multicast = self.dst.is_multicast
        self._on_frame = on_frame
        local = list(local)
        self._own = frozenset(i.ip.packed for i in local)
        self._nets = tuple(i.network for i in local if i.network.prefixlen < 32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.drops: Counter[str] = Counter()  # by SyncDropReason value
        self.tx_errors: Counter[str] = Counter()
        self.rx_frames = 0
        self.tx_frames = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self._logged: set[str] = set()

        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_PFSYNC)
        rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_PFSYNC)
        try:
            tx.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, ifname.encode())
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, PFSYNC_DFLTTL)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _IPTOS_LOWDELAY)
            tx.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, PFSYNC_DFLTTL)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            mreqn = struct.pack("=4s4si", PFSYNC_GROUP.packed, bytes(4), ifindex)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            # A bulk tick sends a few hundred frames at once from a non-blocking socket: with
            # the default ~200 kB they would fail with EAGAIN and cost a resend round.
            try:
                tx.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, sndbuf)
            except PermissionError:
                tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            tx.setblocking(False)
            rx.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            try:
                rx.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if self.multicast:
                rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            rx.setblocking(False)
        except BaseException:
            tx.close()
            rx.close()
            raise
        self._tx = tx
        self._rx = rx

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._rx.fileno(), self._readable)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._rx.fileno())
        self._loop = None
        self._rx.close()
        self._tx.close()

    # ------------------------------------------------------------------ send

    def send(self, payload: bytes) -> bool:
        """Send one pfsync payload; failures (no ARP reply from a dead peer...) are counted."""
        try:
            self._tx.sendto(payload, (str(self.dst), 0))
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "oserror").lower()
            self.tx_errors[reason] += 1
            self._once(f"tx:{reason}", "send to %s failed (%s): %s", self.dst, reason, exc)
            return False
        self.tx_frames += 1
        self.tx_bytes += len(payload)
        return True

    # ------------------------------------------------------------------ receive

    def _readable(self) -> None:
        for _ in range(_READ_BATCH):  # bounded so a flood cannot starve the rest of the loop
            try:
                data, anc, _flags, _addr = self._rx.recvmsg(_RECV_BUF, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._once("rx", "sync receive failed: %s", exc)
                return
            ifindex = None
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
                    ifindex = _PKTINFO.unpack_from(value)[0]
            payload = self.check(data, ifindex)
            if payload is not None:
                self.rx_frames += 1
                self.rx_bytes += len(payload)
                self._on_frame(payload)

    def check(self, packet: bytes, ifindex: int | None) -> bytes | None:
        """The interface check here, the header's in the codec; the payload or None (counted)."""
        if ifindex is not None and ifindex != self.ifindex:
            self.count_drop(
                SyncDropReason.BADIF, f"arrived on ifindex {ifindex}, sync is {self.ifindex}"
            )
            return None
        try:
            pkt = decode_packet(packet)
        except DecodeError as exc:
            self.count_drop(SyncDropReason(exc.reason), exc.detail)
            return None
        reason = self.refuse_source(pkt.src)
        if reason is not None:
            self.count_drop(reason, f"from {IPv4Address(pkt.src)}")
            return None
        return pkt.payload

    def refuse_source(self, src: bytes) -> SyncDropReason | None:
        return source_refusal(src, None if self.multicast else self.dst, self._own, self._nets)

    def count_drop(self, reason: SyncDropReason, detail: str = "") -> None:
        """Count a dropped frame (also used for the codec's reasons, so one table holds all)."""
        self.drops[reason] += 1
        self._once(
            f"drop:{reason}",
            "sync: dropped a frame: %s (%s); further ones only counted",
            reason,
            detail,
        )

    def _once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)
