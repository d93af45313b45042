"""One direction of the lab's impairment relay, pure: frames in, frames out at their times.

The decision for each frame is `sim.link.arrivals`, the simulator's own: with the same
`Impairment`, seed and sequence of arrival times a relay direction drops, duplicates, delays and
reorders exactly the frames a simulated link would. What the relay adds is a bound: the frames
held (delayed, or held back for reordering) never exceed `max_bytes`; a copy that would exceed
it is dropped on arrival (tail drop, as a full switch buffer does) and counted as `overflow`.
The caller owns the clock and the sockets (`carpsim.lab.impair_relay`).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from carpsim.sim.link import Impairment, arrivals

DEFAULT_MAX_BYTES = 4 << 20
"""Held bytes per direction: 50 ms of jitter at ~80 MB/s, far above what a lab test sends."""


@dataclass(order=True)
class _Held:
    time: float
    seq: int
    frame: bytes = field(compare=False)


@dataclass
class QueueCounters:
    received: int = 0
    lost: int = 0
    """Eaten by the model's loss (the lab normally leaves loss to nftables: loss 0 here)."""
    duplicated: int = 0
    overflow: int = 0
    """Copies refused because the held bytes would pass `max_bytes`."""
    sent: int = 0


class ImpairQueue:
    """Frames offered at `now` come back from `pop_due` at the times the model chose."""

    def __init__(
        self, impairment: Impairment, rng: random.Random, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.impairment = impairment
        self._rng = rng
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.counters = QueueCounters()
        self._heap: list[_Held] = []
        self._seq = 0

    def offer(self, now: float, frame: bytes) -> list[float]:
        """Take one frame; returns the delivery times of the copies it holds ([] if none)."""
        self.counters.received += 1
        times = arrivals(self.impairment, self._rng, now)
        if not times:
            self.counters.lost += 1
            return []
        if len(times) > 1:
            self.counters.duplicated += 1
        kept: list[float] = []
        for when in times:
            if self.held_bytes + len(frame) > self.max_bytes:
                self.counters.overflow += 1
                continue
            self._seq += 1
            self.held_bytes += len(frame)
            heapq.heappush(self._heap, _Held(when, self._seq, frame))
            kept.append(when)
        return kept

    def next_time(self) -> float | None:
        return self._heap[0].time if self._heap else None

    def pop_due(self, now: float) -> list[bytes]:
        """Every held copy whose time has come, earliest first (ties in arrival order)."""
        out: list[bytes] = []
        while self._heap and self._heap[0].time <= now:
            held = heapq.heappop(self._heap)
            self.held_bytes -= len(held.frame)
            out.append(held.frame)
        self.counters.sent += len(out)
        return out

    def __len__(self) -> int:
        return len(self._heap)
