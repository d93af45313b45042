"""An in-memory L2 segment: every transmitted packet goes to every other attached node.

Impairments come from one seeded `random.Random`, so a run is reproducible from its seed:
independent loss per receiver, a fixed delay plus uniform jitter, duplication, and partitions
(groups of nodes that cannot hear each other).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    """Probability that one receiver misses one packet."""
    delay: float = 0.0
    """Seconds from transmit to delivery."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from [0, jitter)."""
    duplicate: float = 0.0
    """Probability that a delivered packet arrives twice."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must be >= 0")


@dataclass(order=True)
class Delivery:
    time: float
    seq: int
    node: str = field(compare=False)
    sender: str = field(compare=False)
    data: bytes = field(compare=False)


class Lan:
    """One broadcast domain (the CARP multicast group is heard by everyone on it)."""

    def __init__(self, rng: random.Random, impairment: Impairment | None = None) -> None:
        self._rng = rng
        self.impairment = impairment or Impairment()
        self._nodes: list[str] = []
        self._side: dict[str, int] = {}
        self._queue: list[Delivery] = []
        self._seq = 0
        self.sent = 0
        self.lost = 0

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._nodes)

    def attach(self, node: str) -> None:
        if node not in self._nodes:
            self._nodes.append(node)

    def detach(self, node: str) -> None:
        """Unplug: nothing more is delivered to it, including packets in flight."""
        if node in self._nodes:
            self._nodes.remove(node)
        self._queue = [d for d in self._queue if d.node != node]
        heapq.heapify(self._queue)

    def partition(self, *sides: Iterable[str]) -> None:
        """Nodes in different sides cannot hear each other; unlisted nodes hear everyone."""
        self._side = {node: i for i, side in enumerate(sides) for node in side}

    def heal(self) -> None:
        self._side = {}

    def can_hear(self, sender: str, receiver: str) -> bool:
        a, b = self._side.get(sender), self._side.get(receiver)
        return a is None or b is None or a == b

    def send(self, now: float, sender: str, data: bytes) -> None:
        self.sent += 1
        imp, rng = self.impairment, self._rng
        for node in self._nodes:
            if node == sender or not self.can_hear(sender, node):
                continue
            if imp.loss and rng.random() < imp.loss:
                self.lost += 1
                continue
            copies = 2 if imp.duplicate and rng.random() < imp.duplicate else 1
            for _ in range(copies):
                when = now + imp.delay + (rng.random() * imp.jitter if imp.jitter else 0.0)
                self._seq += 1
                heapq.heappush(self._queue, Delivery(when, self._seq, node, sender, data))

    def next_time(self) -> float | None:
        return self._queue[0].time if self._queue else None

    def pop_due(self, now: float) -> list[Delivery]:
        due: list[Delivery] = []
        while self._queue and self._queue[0].time <= now:
            due.append(heapq.heappop(self._queue))
        return due
