"""TCP byte streams rebuilt from captured segments, one direction at a time (PURE).

A capture reader that wants a TCP protocol's messages (DHCP failover on 519/520/647) needs the
bytes in sequence order: segments arrive out of order, retransmitted, overlapping, or not at all
(the capture dropped them, or started mid-connection). `Direction` orders one direction's
segments by sequence number (modulo 2^32, RFC 1982 style), trims what was already delivered,
holds early segments in a buffer bounded in bytes and in segments, and when a hole cannot be
filled (the buffer is full, the peer closed, the capture ended) it gives up on the hole: the
bytes after it are delivered as a chunk marked `resync`, so the consumer restarts its framer
at a segment boundary instead of reading across the hole. Everything is counted by reason.

`FlowTable` keys directions by (src, sport, dst, dport) and bounds how many it tracks.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from carpsim.errors import DecodeError

SEQ_MOD = 1 << 32
FIN, SYN, RST = 0x01, 0x02, 0x04
MAX_HELD_BYTES = 64 * 1024
"""Early bytes one direction may hold while waiting for a hole to fill (a TCP window's worth)."""
MAX_HELD_SEGMENTS = 256
"""Early segments one direction may hold: tiny segments must not bypass the byte bound's intent."""
MAX_FLOWS = 256
"""Directions a `FlowTable` tracks; segments of further flows are counted and ignored."""

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed distance in -2^31 .. 2^31-1."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


@dataclass(frozen=True)
class Ipv4Packet:
    src: IPv4Address
    dst: IPv4Address
    proto: int
    ttl: int
    payload: bytes
    fragment: bool
    """A fragment (MF set or a non-zero offset): its payload is not a whole transport PDU."""


def parse_ipv4(data: bytes) -> Ipv4Packet:
    """The IPv4 header's fields and the payload it bounds (total length, not the frame's)."""
    if len(data) < _IPV4.size:
        raise DecodeError("badlen", f"{len(data)} bytes, shorter than an IPv4 header")
    ver_ihl, _tos, total, _id, frag, ttl, proto, _sum, src, dst = _IPV4.unpack_from(data)
    if ver_ihl >> 4 != 4:
        raise DecodeError("badver", f"IP version {ver_ihl >> 4}")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < _IPV4.size or total < ihl or total > len(data):
        raise DecodeError("badlen", f"IPv4 ihl {ihl} total length {total}")
    fragment = bool(frag & 0x2000) or bool(frag & 0x1FFF)
    return Ipv4Packet(
        IPv4Address(src), IPv4Address(dst), proto, ttl, bytes(data[ihl:total]), fragment
    )


@dataclass(frozen=True)
class TcpSegment:
    sport: int
    dport: int
    seq: int
    flags: int
    payload: bytes


def parse_tcp(data: bytes) -> TcpSegment:
    """A TCP header and its payload (the checksum is not checked: captures see offloaded sums)."""
    if len(data) < _TCP.size:
        raise DecodeError("badlen", f"{len(data)} bytes, shorter than a TCP header")
    sport, dport, seq, _ack, off, flags, _win, _sum, _urg = _TCP.unpack_from(data)
    hlen = (off >> 4) * 4
    if hlen < _TCP.size or hlen > len(data):
        raise DecodeError("badlen", f"TCP data offset {hlen} in {len(data)} bytes")
    return TcpSegment(sport, dport, seq, flags, bytes(data[hlen:]))


@dataclass(frozen=True)
class Chunk:
    data: bytes
    resync: bool
    """True if bytes were lost (or never seen) right before this chunk: restart framing here."""


@dataclass
class Direction:
    """One direction of one connection: segments in, in-order chunks out."""

    max_held_bytes: int = MAX_HELD_BYTES
    max_held_segments: int = MAX_HELD_SEGMENTS
    counts: Counter[str] = field(default_factory=Counter)
    _isn: int | None = None
    _next: int | None = None
    _fin: int | None = None
    _closed: bool = False
    _resync: bool = False
    _held: dict[int, bytes] = field(default_factory=dict)
    _held_bytes: int = 0

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def segment(self, seq: int, flags: int, payload: bytes) -> list[Chunk]:
        """Feed one captured segment; returns the bytes that became deliverable, in order."""
        out: list[Chunk] = []
        if flags & SYN:
            if seq == self._isn:
                self.counts["retransmit"] += 1
                return out
            if self._next is not None:
                # A new connection on the same ports: what is held belongs to the old one.
                self.counts["restart"] += 1
                self._held.clear()
                self._held_bytes = 0
                self._fin = None
                self._closed = False
            self._isn = seq
            seq = (seq + 1) % SEQ_MOD  # the SYN itself takes one sequence number
            self._next = seq
            self._resync = self.counts["restart"] > 0
        if self._closed:
            if payload:
                self.counts["after_close"] += 1
            return out
        if self._next is None:
            if not payload:
                return out
            # Mid-connection start: nothing says this segment begins a message.
            self.counts["midstream"] += 1
            self._next = seq
            self._resync = True
        if flags & FIN:
            self._fin = (seq + len(payload)) % SEQ_MOD
        if payload:
            self._accept(seq, payload, out)
        if flags & RST or (self._fin is not None and self._next == self._fin):
            self._close(out)
        return out

    def finish(self) -> list[Chunk]:
        """End of the capture: whatever is held is delivered across its holes (counted)."""
        out: list[Chunk] = []
        if not self._closed:
            self._close(out)
        return out

    def _dist(self, seq: int) -> int:
        assert self._next is not None
        return seq_diff(seq, self._next)

    def _accept(self, seq: int, payload: bytes, out: list[Chunk]) -> None:
        d = self._dist(seq)
        if d + len(payload) <= 0:
            self.counts["retransmit"] += 1
            return
        if d < 0:
            self.counts["overlap"] += 1
            payload, d = payload[-d:], 0
        if d == 0:
            self._deliver(payload, out)
            self._drain(out)
        else:
            self._hold(seq, payload, out)

    def _hold(self, seq: int, payload: bytes, out: list[Chunk]) -> None:
        self.counts["out_of_order"] += 1
        if len(payload) > self.max_held_bytes:
            self.counts["truncated_hold"] += 1
            payload = payload[: self.max_held_bytes]
        while self._held and (
            self._held_bytes + len(payload) > self.max_held_bytes
            or len(self._held) >= self.max_held_segments
        ):
            # Full: the hole in front will not be filled in time. Give it up and go on from
            # the earliest bytes we have, this segment's or a held one's.
            lowest = min(self._held, key=self._dist)
            if self._dist(seq) < self._dist(lowest):
                self._skip_to(seq, out)
            else:
                self._skip_to(lowest, out)
            if self._dist(seq) <= 0:
                self._accept(seq, payload, out)
                return
        old = self._held.get(seq, b"")
        if len(old) < len(payload):
            self._held_bytes += len(payload) - len(old)
            self._held[seq] = payload

    def _deliver(self, data: bytes, out: list[Chunk]) -> None:
        assert self._next is not None
        self._next = (self._next + len(data)) % SEQ_MOD
        if out and not self._resync:
            out[-1] = Chunk(out[-1].data + data, out[-1].resync)
        else:
            out.append(Chunk(data, self._resync))
        self._resync = False

    def _drain(self, out: list[Chunk]) -> None:
        """Deliver held segments that the delivered bytes have reached."""
        progressed = True
        while self._held and progressed:
            progressed = False
            for seq in [s for s in self._held if self._dist(s) <= 0]:
                data = self._held.pop(seq)
                self._held_bytes -= len(data)
                progressed = True
                d = self._dist(seq)
                if d + len(data) > 0:
                    self._deliver(data[-d:] if d else data, out)

    def _skip_to(self, seq: int, out: list[Chunk]) -> None:
        self.counts["gap"] += 1
        self._next = seq
        self._resync = True
        self._drain(out)

    def _close(self, out: list[Chunk]) -> None:
        while self._held and self._next is not None:
            self._skip_to(min(self._held, key=self._dist), out)
        if self._fin is not None and self._next is not None and self._next != self._fin:
            self.counts["gap"] += 1
        self._closed = True


FlowKey = tuple[IPv4Address, int, IPv4Address, int]


@dataclass
class FlowTable:
    """Directions by (src, sport, dst, dport), at most `max_flows` of them."""

    max_flows: int = MAX_FLOWS
    counts: Counter[str] = field(default_factory=Counter)
    flows: dict[FlowKey, Direction] = field(default_factory=dict)

    def segment(self, key: FlowKey, seg: TcpSegment) -> list[Chunk] | None:
        """The chunks this segment releases, or None if the table is full for a new flow."""
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= self.max_flows:
                self._evict_closed()
            if len(self.flows) >= self.max_flows:
                self.counts["too_many_flows"] += 1
                return None
            flow = self.flows[key] = Direction()
        return flow.segment(seg.seq, seg.flags, seg.payload)

    def finish(self) -> dict[FlowKey, list[Chunk]]:
        return {key: flow.finish() for key, flow in self.flows.items()}

    def _evict_closed(self) -> None:
        """Forget finished connections (a peer that reconnects all day must not fill the table)."""
        for key in [k for k, f in self.flows.items() if f.closed]:
            self.counts.update(self.flows.pop(key).counts)
            self.counts["evicted"] += 1
