"""CARP packet I/O on one parent interface: a raw IP socket in, an AF_PACKET socket out.

Receive: ``socket(AF_INET, SOCK_RAW, 112)`` delivers each packet as it arrives (no pcap
buffering, carp-spec §4.4) with its IPv4 header, so the machine checks TTL and addresses. The
socket is bound to the parent (SO_BINDTODEVICE), joins 224.0.0.18 on the parent's ifindex (which
also makes the NIC accept 01:00:5e:00:00:12) and never loops our own multicast back. Every
packet read is handed over as (ifindex, bytes): the pure `CarpGroup` decides everything else
(our own source, the interface, decoding, routing).

Send: multicast adverts and GARPs are whole Ethernet frames written to an AF_PACKET socket
bound to the parent, so the source MAC is the virtual MAC (or the real one with --real-mac).
Unicast adverts (--peer) go through an IP_HDRINCL raw socket so the kernel resolves the peer's
MAC; their source is the real MAC, as FreeBSD does for unicast peers (carp-spec §1.1).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

from carpsim.net.garp import ETH_P_IP, ethernet_frame, multicast_mac
from carpsim.protocol.constants import CARP_GROUP_V4, IPPROTO_CARP

_RECV_BUF = 65535
_MAX_READS_PER_WAKEUP = 64
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)

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

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._rx.fileno(), self._readable)

    def _readable(self) -> None:
        # Drain what is queued (one wake-up may cover several adverts), but at most a bounded
        # batch: under a flood the loop must still get back to its timers, or a master stops
        # advertising. The reader fires again at once while data is left.
        for _ in range(_MAX_READS_PER_WAKEUP):
            try:
                data = self._rx.recv(_RECV_BUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
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
