"""The virtual-time runner: any set of timed machines, on the links of `sim.link`.

It is the runtime driver's loop with time that jumps. Each step finds the earliest of
(scheduled events, pending link and stream deliveries, node deadlines), moves the clock there
and feeds what is due, in this order: scheduled events, datagram deliveries (link by link, in
delivery order), stream events, then the timers of every live node whose deadline has come
(in the order the nodes were added). Everything random comes from generators seeded from the
runner's seed, so a run is reproducible.

How a machine plugs in: write a node adapter, a `SimNode` subclass that holds the pure machine
(or a composition of them) and is its executor.

- `next_deadline()` returns the machine's (or the earliest of its members'); `on_timer(now)`
  calls the machine's `on_timer` and executes the actions it returns.
- Transmit-like actions go to a carrier the adapter was given when the scenario was built:
  `link.send(now, self.name, data)` for a broadcast `Link` or `PointToPoint`;
  `channel.connect(now, self.name)`, `channel.send(now, self.name, data)` and
  `channel.close(now, self.name)` for a `StreamChannel`.
- `receive(now, link, data)` is called for each datagram that reaches it on the named link;
  `stream_event(now, event)` for each `StreamOpened` / `StreamData` / `StreamClosed`. The
  adapter turns them into machine inputs and executes the returned actions at once.
- Any other input (a local event, an admin command) is a method on the adapter; schedule it
  with `runner.at(t, fn)` so it happens at an exact virtual instant.

Register carriers with `add_link` / `add_stream` and adapters with `add_node`; then `attach`
plugs a node into a link. `kill` takes a node off every carrier (breaking its streams) and stops
feeding it; the presets add a protocol's own start/stop/restart on top: `sim.carp_lan.CarpLan`
(CARP groups on one LAN), `sim.sync_pair.SyncPair` (two Replicators on a sync cable) and
`sim.ha_pair.HaPair` (two whole nodes, `NodeMachines` each, on both). `tests/sim/test_link.py`
has the smallest adapter there is, one that only records what reaches it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from carpsim.sim.clock import VirtualClock
from carpsim.sim.link import Link, StreamChannel, StreamEvent


class SimNode:
    """Base of node adapters: override what the machine has; the defaults do nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> None:
        """The deadline came: call the machine's `on_timer` and execute its actions."""

    def receive(self, now: float, link: str, data: bytes) -> None:
        """A datagram arrived on `link`."""
        raise NotImplementedError(f"{type(self).__name__} takes no datagrams (link {link!r})")

    def stream_event(self, now: float, event: StreamEvent) -> None:
        """A stream opened, delivered bytes, or closed."""
        raise NotImplementedError(f"{type(self).__name__} has no streams ({event.channel!r})")


N = TypeVar("N", bound=SimNode)


@dataclass(order=True)
class _Scheduled:
    time: float
    seq: int
    fn: Callable[[], None] = field(compare=False)


class SimulationStuckError(RuntimeError):
    """More steps than allowed without reaching the end time (a livelock in a machine)."""


class Runner(Generic[N]):
    """Nodes on simulated links, in virtual time, reproducible from `seed`."""

    def __init__(self, *, seed: int = 0, max_steps: int = 10_000_000) -> None:
        self.seed = seed
        # Seeded, reproducible simulation randomness, not security (hence the S311 waivers).
        self.rng = random.Random(seed)  # noqa: S311
        self.clock = VirtualClock()
        self.nodes: dict[str, N] = {}
        self.links: dict[str, Link] = {}
        self.streams: dict[str, StreamChannel] = {}
        self.max_steps = max_steps
        self._scheduled: list[_Scheduled] = []
        self._seq = 0

    @property
    def now(self) -> float:
        return self.clock.now

    def derive_rng(self) -> random.Random:
        """A generator for one component, drawn from the runner's seed."""
        return random.Random(self.rng.getrandbits(64))  # noqa: S311

    # ---------------------------------------------------------------- topology

    def add_node(self, node: N) -> N:
        if node.name in self.nodes:
            raise ValueError(f"node {node.name!r} already exists")
        self.nodes[node.name] = node
        return node

    def add_link(self, link: Link) -> Link:
        if link.name in self.links:
            raise ValueError(f"link {link.name!r} already exists")
        self.links[link.name] = link
        return link

    def add_stream(self, channel: StreamChannel) -> StreamChannel:
        if channel.name in self.streams:
            raise ValueError(f"stream {channel.name!r} already exists")
        self.streams[channel.name] = channel
        for end in channel.ends:
            channel.attach(end)
        return channel

    def attach(self, node: str, link: str) -> None:
        self.links[link].attach(node)

    def detach(self, node: str) -> None:
        """Unplug `node` from every link and stream (in-flight traffic to it is lost)."""
        for link in self.links.values():
            link.detach(node)
        for channel in self.streams.values():
            if node in channel.ends:
                channel.detach(self.now, node)

    def kill(self, name: str) -> None:
        """Power cut: nothing more is sent to or fed into the node."""
        node = self.nodes[name]
        node.alive = False
        self.detach(name)

    def partition(self, *sides: Iterable[str]) -> None:
        """Split every link and stream; a stream whose ends end up apart breaks."""
        groups = [list(s) for s in sides]
        for link in self.links.values():
            link.partition(*groups)
        for channel in self.streams.values():
            channel.partition_at(self.now, *groups)

    def heal(self) -> None:
        for link in self.links.values():
            link.heal()
        for channel in self.streams.values():
            channel.heal()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run `fn` at virtual time `when` (before deliveries and timers due then)."""
        self._seq += 1
        heapq.heappush(self._scheduled, _Scheduled(when, self._seq, fn))

    # ---------------------------------------------------------------- the loop

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until(self, end: float) -> None:
        for _ in range(self.max_steps):
            when = self._next_event_time()
            if when is None or when > end:
                self.clock.advance_to(max(end, self.now))
                return
            self.clock.advance_to(when)
            self._step(when)
        raise SimulationStuckError(f"no end after {self.max_steps} steps (seed {self.seed})")

    def run_until_quiet(self, condition: Callable[[], bool], limit: float) -> bool:
        """Step until `condition()` holds (True) or virtual time passes `limit` (False)."""
        while not condition():
            when = self._next_event_time()
            if when is None or when > limit:
                return False
            self.clock.advance_to(when)
            self._step(when)
        return True

    def _next_event_time(self) -> float | None:
        """The earliest pending instant; one already past (a deadline an input moved into the
        past) counts as now, as the runtime driver fires an overdue timer at once."""
        best = self._scheduled[0].time if self._scheduled else None
        for link in self.links.values():
            t = link.next_time()
            if t is not None and (best is None or t < best):
                best = t
        if self.streams:
            for channel in self.streams.values():
                t = channel.next_time()
                if t is not None and (best is None or t < best):
                    best = t
        for node in self.nodes.values():
            if node.alive:
                t = node.next_deadline()
                if t is not None and (best is None or t < best):
                    best = t
        now = self.clock.now
        return best if best is None or best >= now else now

    def _step(self, now: float) -> None:
        while self._scheduled and self._scheduled[0].time <= now:
            heapq.heappop(self._scheduled).fn()
        nodes = self.nodes
        for link in self.links.values():
            for delivery in link.pop_due(now):
                node = nodes[delivery.node]
                if node.alive:
                    node.receive(now, link.name, delivery.data)
        for channel in self.streams.values() if self.streams else ():
            for sd in channel.pop_due(now):
                node = nodes[sd.node]
                if node.alive:
                    node.stream_event(now, sd.event)
        for node in nodes.values():
            if node.alive:
                t = node.next_deadline()
                if t is not None and t <= now:
                    node.on_timer(now)
