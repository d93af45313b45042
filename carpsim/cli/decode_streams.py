"""Messages of a TCP protocol in a capture, for `carpsim decode` (DHCP failover on 519/520/647).

Each direction of each connection is rebuilt in sequence order by `carpsim.wire.tcpstream`
and cut into messages by the protocol's own stream framer, so a segment holding several
messages yields several records and a message split over segments yields one. Where bytes are
missing (a hole the capture never filled, a capture that starts mid-connection, a new
connection on the same ports) the framer is replaced at the next segment boundary: that is
where a sender's write, and so a message, most likely begins. If the new framer's very first
message does not decode, the direction was not at a boundary: its decoding stops there, with
the reason, until the next such point. Every resync and stop is a record of its own
(``"kind": "<protocol>-stream"``) and is counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from carpsim.errors import DecodeError
from carpsim.wire.tcpstream import Chunk, FlowKey, FlowTable, Ipv4Packet, TcpSegment

_RESYNC_REASONS = ("restart", "gap", "midstream")


class MessageFramer(Protocol):
    def feed(self, data: bytes) -> tuple[list[Any], DecodeError | None]:
        """Messages completed by `data`, and the error that ended framing, if any."""
        ...


@dataclass
class _Direction:
    framer: MessageFramer
    stopped: bool = False
    since_resync: int = 0


@dataclass
class TcpMessageStreams:
    """Reassembly plus framing for one TCP protocol, every connection in one capture."""

    kind: str
    ports: frozenset[int]
    new_framer: Callable[[], MessageFramer]
    describe: Callable[[Any], dict[str, Any]]
    table: FlowTable = field(default_factory=FlowTable)
    counts: Counter[str] = field(default_factory=Counter)
    _dirs: dict[FlowKey, _Direction] = field(default_factory=dict)

    def wants(self, seg: TcpSegment) -> bool:
        return seg.sport in self.ports or seg.dport in self.ports

    def segment(self, time: float, ip: Ipv4Packet, seg: TcpSegment) -> list[dict[str, Any]]:
        key: FlowKey = (ip.src, seg.sport, ip.dst, seg.dport)
        flow = self.table.flows.get(key)
        if flow is None:
            self._dirs.pop(key, None)  # a new flow, or one the table evicted when closed
        before = {r: flow.counts[r] for r in _RESYNC_REASONS} if flow is not None else {}
        chunks = self.table.segment(key, seg)
        if chunks is None:
            self.counts["too_many_flows"] += 1
            return []
        flow = self.table.flows[key]
        reason = next((r for r in _RESYNC_REASONS if flow.counts[r] > before.get(r, 0)), "resync")
        return self._chunks(time, key, chunks, reason)

    def finish(self, time: float) -> list[dict[str, Any]]:
        """End of the capture: held bytes past holes are framed too, then totals are final."""
        out: list[dict[str, Any]] = []
        for key, chunks in self.table.finish().items():
            out += self._chunks(time, key, chunks, "gap")
        for flow in self.table.flows.values():
            self.counts.update(flow.counts)
        self.counts.update(self.table.counts)
        return out

    def _chunks(
        self, time: float, key: FlowKey, chunks: Iterable[Chunk], reason: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk in chunks:
            state = self._dirs.get(key)
            if state is None or chunk.resync:
                # A capture that starts mid-connection is normal: only later losses are news.
                if chunk.resync and (state is not None or reason != "midstream"):
                    out.append(self._event(time, key, "resync", reason))
                state = self._dirs[key] = _Direction(self.new_framer())
            if state.stopped:
                continue
            messages, error = state.framer.feed(chunk.data)
            for msg in messages:
                out.append({"time": time, "kind": self.kind, **_where(key), **self.describe(msg)})
            state.since_resync += len(messages)
            if error is not None:
                state.stopped = True
                why = error.reason if state.since_resync else "not_at_message_boundary"
                self.counts[f"stopped_{why}"] += 1
                out.append(self._event(time, key, "stopped", why, error.detail))
        return out

    def _event(
        self, time: float, key: FlowKey, event: str, reason: str, detail: str = ""
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": time,
            "kind": f"{self.kind}-stream",
            "type": event,
            **_where(key),
            "reason": reason,
        }
        if detail:
            record["detail"] = detail
        return record


def _where(key: FlowKey) -> dict[str, Any]:
    src, sport, dst, dport = key
    return {"src": str(src), "sport": sport, "dst": str(dst), "dport": dport}
