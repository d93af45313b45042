"""The simulator's one network model: seeded impairments, datagram links and byte streams.

`Impairment` says what the network does to a datagram: independent loss per receiver, a fixed
delay plus uniform jitter, duplication, and reordering (a copy held back by up to
`reorder_delay`, so later datagrams overtake it). Every random draw comes from the link's own
seeded `random.Random` (a probability of zero draws nothing unless `draw_always`), so a run is
reproducible from its seed and one link's impairments never perturb another link's draws.

Three carriers share it:

- `Link`: a broadcast L2 segment. Whatever one attached endpoint sends reaches every other
  attached endpoint that can hear it (CARP adverts on the multicast group).
- `PointToPoint`: a `Link` with exactly two ends (the state-sync link).
- `StreamChannel`: an ordered, reliable byte stream between two endpoints with TCP semantics:
  `connect` succeeds only when both ends are attached and can hear each other; data arrives in
  order after delay and jitter, never lost or duplicated; a partition, an endpoint going away
  or `close` ends it, with a `StreamClosed` for each end still alive.

Partitions are sides of endpoint names: endpoints on different sides cannot hear each other,
endpoints on no side hear everyone.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    """Probability that one receiver misses one datagram."""
    delay: float = 0.0
    """Seconds from send to delivery."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from [0, jitter)."""
    duplicate: float = 0.0
    """Probability that a delivered datagram arrives twice."""
    reorder: float = 0.0
    """Probability that one copy is held back by up to `reorder_delay` seconds."""
    reorder_delay: float = 0.02
    draw_always: bool = False
    """Draw for loss, duplication and reordering even where the probability is 0, so the
    sequence of draws (hence which datagram suffers what) does not depend on which
    impairments are switched on. The sync link's recorded seeds replay only in this mode."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.delay < 0 or self.jitter < 0 or self.reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")


def arrivals(imp: Impairment, rng: random.Random, now: float) -> list[float]:
    """When the copies of one datagram sent at `now` reach one receiver: none if it is lost,
    two if duplicated. The whole decision, so the lab's impairment relay draws exactly what a
    simulated link draws for the same seed and sequence of datagrams."""
    every = imp.draw_always
    if (imp.loss or every) and rng.random() < imp.loss:
        return []
    copies = 2 if (imp.duplicate or every) and rng.random() < imp.duplicate else 1
    times: list[float] = []
    for _ in range(copies):
        when = now + imp.delay
        if imp.jitter:
            when += rng.random() * imp.jitter
        if (imp.reorder or every) and rng.random() < imp.reorder:
            when += imp.reorder_delay * rng.random()
        times.append(when)
    return times


@dataclass(order=True)
class Delivery:
    time: float
    seq: int
    node: str = field(compare=False)
    """The receiving endpoint."""
    sender: str = field(compare=False)
    data: bytes = field(compare=False)


class _Reach:
    """Who can hear whom: attached endpoints and partition sides."""

    def __init__(self) -> None:
        self._nodes: list[str] = []
        self._side: dict[str, int] = {}

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._nodes)

    def partition(self, *sides: Iterable[str]) -> None:
        """Nodes in different sides cannot hear each other; unlisted nodes hear everyone."""
        self._side = {node: i for i, side in enumerate(sides) for node in side}

    def heal(self) -> None:
        self._side = {}

    def can_hear(self, sender: str, receiver: str) -> bool:
        a, b = self._side.get(sender), self._side.get(receiver)
        return a is None or b is None or a == b


class Link(_Reach):
    """One broadcast domain: a datagram goes to every other attached endpoint that hears it."""

    def __init__(self, name: str, rng: random.Random, impairment: Impairment | None = None) -> None:
        super().__init__()
        self.name = name
        self._rng = rng
        self.impairment = impairment or Impairment()
        self.up = True
        """A cut cable: while False every datagram is dropped."""
        self._queue: list[Delivery] = []
        self._seq = 0
        self.sent = 0
        self.lost = 0
        """Copies eaten by the loss impairment."""
        self.dropped = 0
        """Copies not delivered for any reason (loss, cable cut)."""

    def attach(self, node: str) -> None:
        if node not in self._nodes:
            self._nodes.append(node)

    def detach(self, node: str) -> None:
        """Unplug: nothing more is delivered to it, including datagrams in flight."""
        if node in self._nodes:
            self._nodes.remove(node)
        self._queue = [d for d in self._queue if d.node != node]
        heapq.heapify(self._queue)

    def send(self, now: float, sender: str, data: bytes) -> None:
        self.sent += 1
        if not self.up:
            self.dropped += 1
            return
        split = bool(self._side)
        for node in self._nodes:
            if node != sender and (not split or self.can_hear(sender, node)):
                self._carry(now, sender, node, data)

    def _carry(self, now: float, sender: str, node: str, data: bytes) -> None:
        times = arrivals(self.impairment, self._rng, now)
        if not times:
            self.lost += 1
            self.dropped += 1
            return
        for when in times:
            self._seq += 1
            heapq.heappush(self._queue, Delivery(when, self._seq, node, sender, data))

    def next_time(self) -> float | None:
        return self._queue[0].time if self._queue else None

    def pop_due(self, now: float) -> list[Delivery]:
        due: list[Delivery] = []
        while self._queue and self._queue[0].time <= now:
            due.append(heapq.heappop(self._queue))
        return due


class PointToPoint(Link):
    """A datagram link with two ends (a dedicated sync cable)."""

    def __init__(
        self,
        name: str,
        ends: tuple[str, str],
        rng: random.Random,
        impairment: Impairment | None = None,
    ) -> None:
        super().__init__(name, rng, impairment)
        self.ends = ends
        for end in ends:
            self.attach(end)

    def attach(self, node: str) -> None:
        if node not in self.ends:
            raise ValueError(f"{node!r} is not an end of point-to-point link {self.name!r}")
        super().attach(node)


# ------------------------------------------------------------------------------ streams


@dataclass(frozen=True)
class StreamOpened:
    channel: str
    peer: str


@dataclass(frozen=True)
class StreamData:
    channel: str
    peer: str
    data: bytes


@dataclass(frozen=True)
class StreamClosed:
    channel: str
    peer: str
    reason: str
    """refused, closed (the peer called close), partition, peer_down, overflow."""


StreamEvent = StreamOpened | StreamData | StreamClosed


@dataclass(order=True)
class StreamDelivery:
    time: float
    seq: int
    node: str = field(compare=False)
    event: StreamEvent = field(compare=False)


class StreamChannel(_Reach):
    """One TCP-like connection slot between endpoints `a` and `b` (either may connect)."""

    def __init__(
        self,
        name: str,
        ends: tuple[str, str],
        rng: random.Random,
        *,
        delay: float = 0.001,
        jitter: float = 0.0,
        max_in_flight: int = 4 << 20,
    ) -> None:
        super().__init__()
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self.name = name
        self.ends = ends
        self._rng = rng
        self.delay = delay
        self.jitter = jitter
        self.max_in_flight = max_in_flight
        """Bytes in flight per direction before the stream is reset (a bounded buffer)."""
        self.open = False
        self._queue: list[StreamDelivery] = []
        self._seq = 0
        self._last: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self.connects = 0
        self.closes = 0

    def attach(self, node: str) -> None:
        if node not in self.ends:
            raise ValueError(f"{node!r} is not an end of stream channel {self.name!r}")
        if node not in self._nodes:
            self._nodes.append(node)

    def _other(self, node: str) -> str:
        a, b = self.ends
        if node not in self.ends:
            raise ValueError(f"{node!r} is not an end of stream channel {self.name!r}")
        return b if node == a else a

    def _reachable(self) -> bool:
        a, b = self.ends
        return a in self._nodes and b in self._nodes and self.can_hear(a, b)

    def _push(self, when: float, node: str, event: StreamEvent) -> None:
        self._seq += 1
        heapq.heappush(self._queue, StreamDelivery(when, self._seq, node, event))

    def _latency(self) -> float:
        return self.delay + (self._rng.random() * self.jitter if self.jitter else 0.0)

    def connect(self, now: float, initiator: str) -> None:
        """Open the connection; both ends get `StreamOpened`, or the initiator `refused`."""
        peer = self._other(initiator)
        if self.open:
            return
        if initiator not in self._nodes or not self._reachable():
            self._push(now + self._latency(), initiator, StreamClosed(self.name, peer, "refused"))
            return
        self.open = True
        self.connects += 1
        self._last = {}
        self._in_flight = {}
        when = now + self._latency()
        self._push(when, peer, StreamOpened(self.name, initiator))
        self._push(when + self._latency(), initiator, StreamOpened(self.name, peer))

    def send(self, now: float, sender: str, data: bytes) -> None:
        """Queue bytes for the other end; in order, never lost while the stream is open."""
        receiver = self._other(sender)
        if not self.open or not data:
            return
        pending = self._in_flight.get(receiver, 0) + len(data)
        if pending > self.max_in_flight:
            self.reset(now, "overflow")
            return
        self._in_flight[receiver] = pending
        # Never earlier than the previous segment: a byte stream does not reorder.
        when = max(now + self._latency(), self._last.get(receiver, 0.0))
        self._last[receiver] = when
        self._push(when, receiver, StreamData(self.name, sender, data))

    def close(self, now: float, closer: str) -> None:
        """An orderly close by `closer`: data already sent still arrives, then the close."""
        peer = self._other(closer)
        if not self.open:
            return
        self.open = False
        self.closes += 1
        when = max(now + self._latency(), self._last.get(peer, 0.0))
        self._drop_queued(to=closer)
        self._push(when, peer, StreamClosed(self.name, closer, "closed"))

    def reset(self, now: float, reason: str) -> None:
        """The connection broke: in-flight data is lost, both ends get `StreamClosed`."""
        if not self.open:
            return
        self.open = False
        self.closes += 1
        self._queue = [d for d in self._queue if isinstance(d.event, StreamClosed)]
        heapq.heapify(self._queue)
        a, b = self.ends
        self._push(now, a, StreamClosed(self.name, b, reason))
        self._push(now, b, StreamClosed(self.name, a, reason))

    def _drop_queued(self, *, to: str) -> None:
        self._queue = [d for d in self._queue if d.node != to]
        heapq.heapify(self._queue)

    def detach(self, now: float, node: str) -> None:
        """The endpoint went away (power cut): the connection, if any, breaks."""
        if node in self._nodes:
            self._nodes.remove(node)
        self._drop_queued(to=node)
        self.reset(now, "peer_down")

    def partition_at(self, now: float, *sides: Iterable[str]) -> None:
        self.partition(*sides)
        if self.open and not self._reachable():
            self.reset(now, "partition")

    def next_time(self) -> float | None:
        return self._queue[0].time if self._queue else None

    def pop_due(self, now: float) -> list[StreamDelivery]:
        due: list[StreamDelivery] = []
        while self._queue and self._queue[0].time <= now:
            d = heapq.heappop(self._queue)
            if isinstance(d.event, StreamData):
                self._in_flight[d.node] = self._in_flight.get(d.node, 0) - len(d.event.data)
            due.append(d)
        return due
