"""Failover messages out of captured TCP segments, for ``carpsim decode``.

Per direction of a connection the segments are put back in sequence order (retransmissions
and overlaps trimmed, out-of-order segments held in a bounded buffer), then cut into messages
by the stream framer, so several messages per segment and messages split across segments
both come out whole. A SYN starts a direction afresh, a FIN or RST ends it; a capture that
starts mid-connection starts at its first segment.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from carpsim.dhcp.failover.codec import Message, StreamFramer, describe
from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.lease import BindingState

FAILOVER_PORTS = frozenset({519, 520, 647})
"""pfSense's two ports and the protocol's registered one."""
MAX_HELD = 256 * 1024
"""Bytes of out-of-order segments kept per direction before the direction is given up."""
_SYN, _FIN, _RST = 0x02, 0x01, 0x04

Key = tuple[str, int, str, int]


@dataclass
class _Direction:
    next_seq: int | None = None
    held: dict[int, bytes] = field(default_factory=dict)
    framer: StreamFramer = field(default_factory=StreamFramer)

    def held_bytes(self) -> int:
        return sum(len(v) for v in self.held.values())


def _after(a: int, b: int) -> int:
    """Signed distance from b to a in sequence space (wraps at 2**32)."""
    return (a - b + (1 << 31)) % (1 << 32) - (1 << 31)


def describe_message(msg: Message) -> dict[str, Any]:
    """`codec.describe` with states by name, as ISC and pfSense write them."""
    out = describe(msg)
    state, status = out.get("server_state"), out.get("binding_status")
    if isinstance(state, int) and state in FailoverState._value2member_map_:
        out["server_state"] = FailoverState(state).word
    if isinstance(status, int) and status in BindingState._value2member_map_:
        out["binding_status"] = BindingState(status).name.lower()
    return out


class FailoverStreams:
    """Feed every IPv4 packet; get one record per failover message."""

    def __init__(self, ports: frozenset[int] = FAILOVER_PORTS) -> None:
        self.ports = ports
        self._dirs: dict[Key, _Direction] = {}

    def packet(self, time: float, ip: bytes) -> Iterator[dict[str, Any]]:
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            return
        ihl = (ip[0] & 15) * 4
        total = min(len(ip), struct.unpack_from(">H", ip, 2)[0])
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            return
        sport, dport, seq = struct.unpack_from(">HHI", tcp)
        if sport not in self.ports and dport not in self.ports:
            return
        flags = tcp[13]
        payload = tcp[(tcp[12] >> 4) * 4 :]
        key = (str(IPv4Address(ip[12:16])), sport, str(IPv4Address(ip[16:20])), dport)
        if flags & _SYN:
            self._dirs[key] = _Direction(next_seq=(seq + 1) & 0xFFFFFFFF)
            return
        d = self._dirs.setdefault(key, _Direction())
        if payload:
            yield from self._data(time, key, d, seq, payload)
        if flags & (_FIN | _RST):
            self._dirs.pop(key, None)

    def _data(
        self, time: float, key: Key, d: _Direction, seq: int, payload: bytes
    ) -> Iterator[dict[str, Any]]:
        if d.next_seq is None:
            d.next_seq = seq
        gap = _after(seq, d.next_seq)
        if gap > 0:
            d.held[seq] = payload
            if d.held_bytes() > MAX_HELD:
                self._dirs.pop(key, None)
                yield self._record(time, key, {"error": "reassembly_overflow"})
            return
        if gap < 0:
            payload = payload[-gap:]  # a retransmission: keep only what is new
        chunks = [payload]
        d.next_seq = (d.next_seq + len(payload)) & 0xFFFFFFFF
        while d.next_seq in d.held:
            nxt = d.held.pop(d.next_seq)
            chunks.append(nxt)
            d.next_seq = (d.next_seq + len(nxt)) & 0xFFFFFFFF
        for chunk in chunks:
            if not chunk:
                continue
            messages, error = d.framer.feed(chunk)
            for msg in messages:
                yield self._record(time, key, describe_message(msg))
            if error is not None:
                yield self._record(time, key, {"error": error.reason, "detail": error.detail})
                self._dirs.pop(key, None)
                return

    @staticmethod
    def _record(time: float, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        src, sport, dst, dport = key
        if "time" in body:  # the sender's clock from the header; `time` is the capture's
            body = {**body, "sender_time": body["time"]}
            del body["time"]
        return {"time": time, "kind": "dhcp-failover", "src": f"{src}:{sport}",
                "dst": f"{dst}:{dport}", **body}  # fmt: skip
