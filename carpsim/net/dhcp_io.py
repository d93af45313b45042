"""DHCP server sockets for one interface, as dhcpd uses them (its "LPF" mode).

Receive: a UDP socket on 0.0.0.0:67 bound to the interface (SO_BINDTODEVICE, so only the
configured interfaces are served) with SO_BROADCAST and IP_PKTINFO (to tell a broadcast
REBINDING from a unicast RENEWING). Send: replies to a client without an address go out on an
AF_PACKET socket with an IPv4/UDP header built here, to the client's MAC (or broadcast per its
flag), because the client cannot answer ARP yet; relay and ciaddr replies are ordinary UDP.
`Pinger` is the ICMP echo for the server's ping check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

from carpsim.dhcp import codec
from carpsim.dhcp.actions import Transmit
from carpsim.wire.checksum import internet_checksum

log = logging.getLogger(__name__)
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
ETH_P_IP = 0x0800
MAX_READS = 64
RECV_BUF = 65536
PING_TIMEOUT = 1.0


def udp_ipv4(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, data: bytes) -> bytes:
    """IPv4 + UDP header (with checksums) around `data`."""
    ulen = 8 + len(data)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + data
    csum = internet_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, src.packed, dst.packed)
    hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
    return hdr + udp


class DhcpSocket:
    """Port 67 on one interface; `on_datagram(data, to_broadcast)` for every datagram."""

    def __init__(
        self,
        ifname: str,
        address: IPv4Address,
        loop: asyncio.AbstractEventLoop,
        on_datagram: Callable[[bytes, bool], None],
    ) -> None:
        self.ifname = ifname
        self.address = address
        self._loop = loop
        self._on_datagram = on_datagram
        self.tx_errors = 0
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            udp.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, ifname.encode())
            udp.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            udp.bind(("0.0.0.0", 67))  # noqa: S104 - restricted to the interface above
            udp.setblocking(False)
            # Protocol 0: this packet socket only sends, it never queues received frames.
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            raw.bind((ifname, 0))
            raw.setblocking(False)
        except OSError:
            udp.close()
            raise
        self._udp, self._raw = udp, raw
        loop.add_reader(udp.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(MAX_READS):
            try:
                data, anc, _flags, _addr = self._udp.recvmsg(RECV_BUF, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("dhcp %s: receive failed: %s", self.ifname, err)
                return
            bcast = True
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                    # struct in_pktinfo: ifindex, spec_dst, addr (the header destination).
                    bcast = IPv4Address(value[8:12]) != self.address
            self._on_datagram(data, bcast)

    def send(self, tx: Transmit) -> None:
        data = codec.encode(tx.message, max_size=tx.max_size, pad_to=codec.MIN_REPLY_LEN)
        try:
            if tx.dst_mac is not None:
                dst_mac = b"\xff" * 6 if tx.broadcast else tx.dst_mac
                frame = udp_ipv4(self.address, tx.dst_ip, 67, tx.dst_port, data)
                self._raw.sendto(frame, (self.ifname, ETH_P_IP, 0, 0, dst_mac))
            else:
                self._udp.sendto(data, (str(tx.dst_ip), tx.dst_port))
        except OSError as err:
            self.tx_errors += 1
            log.warning("dhcp %s: send to %s failed: %s", self.ifname, tx.dst_ip, err)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._udp.fileno())
        self._udp.close()
        self._raw.close()


class Pinger:
    """ICMP echo before an offer; `done(address, answered)` after a reply or `PING_TIMEOUT`."""

    def __init__(
        self,
        ifname: str,
        loop: asyncio.AbstractEventLoop,
        done: Callable[[IPv4Address, bool], None],
    ) -> None:
        self._loop = loop
        self._done = done
        self._ident = int.from_bytes(os.urandom(2), "big")
        self._seq = 0
        self._pending: dict[IPv4Address, asyncio.Handle] = {}
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, ifname.encode())
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def ping(self, address: IPv4Address) -> None:
        if address in self._pending:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        body = struct.pack("!BBHHH", 8, 0, 0, self._ident, self._seq) + b"carpsim-dhcp"
        body = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
        try:
            self._sock.sendto(body, (str(address), 0))
        except OSError:
            self._pending[address] = self._loop.call_soon(self._finish, address, False)
            return
        self._pending[address] = self._loop.call_later(PING_TIMEOUT, self._finish, address, False)

    def _readable(self) -> None:
        for _ in range(MAX_READS):
            try:
                packet, (src, _port) = self._sock.recvfrom(RECV_BUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ihl = (packet[0] & 0x0F) * 4 if packet else 0
            icmp = packet[ihl:]
            if len(icmp) >= 8 and icmp[0] == 0 and int.from_bytes(icmp[4:6], "big") == self._ident:
                self._finish(IPv4Address(src), True)

    def _finish(self, address: IPv4Address, answered: bool) -> None:
        handle = self._pending.pop(address, None)
        if handle is None:
            return
        handle.cancel()
        self._done(address, answered)

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
