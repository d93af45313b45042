"""The virtual-time driver: the same loop as the runtime driver, but time jumps.

Each step finds the earliest of (scheduled admin events, pending LAN deliveries, machine
deadlines), moves the clock there, and feeds that input to the pure machines. Actions are
executed in order: `Transmit` goes onto the `Lan`, `StateChanged` into the trace, VIP and GARP
actions into per-node bookkeeping, so tests can assert who holds which VIP at any instant.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import (
    Action,
    AddVip,
    AdvertAccepted,
    CountDrop,
    DelVip,
    SendGarp,
    StateChanged,
    Transmit,
)
from carpsim.protocol.group import CarpGroup, DemoteStyle
from carpsim.protocol.machine import CarpMachine
from carpsim.sim.clock import VirtualClock
from carpsim.sim.lan import Impairment, Lan


@dataclass(frozen=True)
class TraceEvent:
    """One line of the timeline: a state change, or an admin/fault event (vhid None)."""

    time: float
    node: str
    vhid: int | None
    old: CarpState | None
    new: CarpState | None
    reason: str

    def describe(self) -> str:
        if self.old is None or self.new is None:
            return self.reason
        return f"{self.old.name}->{self.new.name} ({self.reason})"


@dataclass
class SimNode:
    name: str
    configs: tuple[CarpConfig, ...]
    demote_style: DemoteStyle
    group: CarpGroup
    alive: bool = False
    vips_up: dict[int, bool] = field(default_factory=dict)
    garps: Counter[int] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    adverts_sent: int = 0
    adverts_accepted: int = 0

    def state(self, vhid: int) -> CarpState:
        return self.group.machine(vhid).state


@dataclass(order=True)
class _Scheduled:
    time: float
    seq: int
    fn: Callable[[], None] = field(compare=False)


class Runner:
    """Nodes on one simulated LAN, in virtual time, reproducible from `seed`."""

    def __init__(self, *, seed: int = 0, impairment: Impairment | None = None) -> None:
        # Seeded, reproducible simulation randomness, not security (hence the S311 waivers).
        self._rng = random.Random(seed)  # noqa: S311
        self.clock = VirtualClock()
        self.lan = Lan(random.Random(self._rng.getrandbits(64)), impairment)  # noqa: S311
        self.nodes: dict[str, SimNode] = {}
        self.trace: list[TraceEvent] = []
        self._scheduled: list[_Scheduled] = []
        self._seq = 0

    @property
    def now(self) -> float:
        return self.clock.now

    # ---------------------------------------------------------------- topology

    def add_node(
        self,
        name: str,
        configs: Iterable[CarpConfig],
        *,
        demote_style: DemoteStyle = DemoteStyle.OPENBSD,
    ) -> SimNode:
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists")
        cfgs = tuple(configs)
        node = SimNode(name, cfgs, demote_style, self._new_group(cfgs, demote_style))
        self.nodes[name] = node
        return node

    def _new_group(self, configs: tuple[CarpConfig, ...], style: DemoteStyle) -> CarpGroup:
        # Each process start draws a fresh counter cookie, as a restarted daemon would.
        rngs = [random.Random(self._rng.getrandbits(64)) for _ in configs]  # noqa: S311
        machines = [CarpMachine(c, rng) for c, rng in zip(configs, rngs, strict=True)]
        return CarpGroup(machines, demote_style=style)

    # ---------------------------------------------------------------- admin and faults

    def start(self, name: str) -> None:
        """Process start with the link up: every VHID goes INIT -> BACKUP."""
        node = self.nodes[name]
        if node.alive:
            return
        node.alive = True
        self.lan.attach(name)
        self._note(name, "start")
        self._execute(node, node.group.link_up(self.now))

    def kill(self, name: str) -> None:
        """Power cut: no goodbye, nothing more sent or received."""
        node = self.nodes[name]
        if not node.alive:
            return
        node.alive = False
        self.lan.detach(name)
        node.vips_up.clear()
        self._note(name, "killed")

    def stop(self, name: str) -> None:
        """Clean shutdown: a master bows out (255/255), then the node leaves."""
        node = self.nodes[name]
        if not node.alive:
            return
        self._note(name, "stop")
        self._execute(node, node.group.shutdown(self.now))
        node.alive = False
        self.lan.detach(name)

    def restart(self, name: str) -> None:
        """A fresh process (new cookie, INIT) on the same configuration."""
        node = self.nodes[name]
        if node.alive:
            self.kill(name)
        node.group = self._new_group(node.configs, node.demote_style)
        node.vips_up.clear()
        self.start(name)

    def link_down(self, name: str, vhids: Iterable[int] | None = None) -> None:
        node = self.nodes[name]
        chosen = list(vhids) if vhids is not None else None
        self._note(name, f"link down {chosen if chosen is not None else 'all'}")
        self._execute(node, node.group.link_down(self.now, chosen))

    def link_up(self, name: str, vhids: Iterable[int] | None = None) -> None:
        node = self.nodes[name]
        chosen = list(vhids) if vhids is not None else None
        self._note(name, f"link up {chosen if chosen is not None else 'all'}")
        self._execute(node, node.group.link_up(self.now, chosen))

    def set_demote(self, name: str, value: int) -> None:
        node = self.nodes[name]
        self._note(name, f"demote {value}")
        self._execute(node, node.group.set_demote(self.now, value))

    def partition(self, *sides: Iterable[str]) -> None:
        groups = [list(s) for s in sides]
        self._note("lan", f"partition {groups}")
        self.lan.partition(*groups)

    def heal(self) -> None:
        self._note("lan", "heal")
        self.lan.heal()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run `fn` at virtual time `when` (before deliveries and timers due then)."""
        self._seq += 1
        heapq.heappush(self._scheduled, _Scheduled(when, self._seq, fn))

    # ---------------------------------------------------------------- queries

    def masters(self, vhid: int) -> list[str]:
        return [
            n.name
            for n in self.nodes.values()
            if n.alive and vhid in n.group.machines and n.state(vhid) is CarpState.MASTER
        ]

    def transitions(
        self, *, node: str | None = None, new: CarpState | None = None
    ) -> list[TraceEvent]:
        return [
            e
            for e in self.trace
            if e.new is not None
            and (node is None or e.node == node)
            and (new is None or e.new is new)
        ]

    # ---------------------------------------------------------------- the loop

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until(self, end: float) -> None:
        while True:
            when = self._next_event_time()
            if when is None or when > end:
                break
            self.clock.advance_to(when)
            self._step(when)
        self.clock.advance_to(max(end, self.now))

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
        best = self.lan.next_time()
        if self._scheduled and (best is None or self._scheduled[0].time < best):
            best = self._scheduled[0].time
        for node in self.nodes.values():
            if node.alive:
                d = node.group.next_deadline()
                if d is not None and (best is None or d < best):
                    best = d
        return best

    def _step(self, now: float) -> None:
        while self._scheduled and self._scheduled[0].time <= now:
            heapq.heappop(self._scheduled).fn()
        for delivery in self.lan.pop_due(now):
            node = self.nodes[delivery.node]
            if node.alive:
                self._execute(node, node.group.packet_received(now, delivery.data))
        for node in self.nodes.values():
            if node.alive:
                d = node.group.next_deadline()
                if d is not None and d <= now:
                    self._execute(node, node.group.on_timer(now))

    def _execute(self, node: SimNode, actions: list[Action]) -> None:
        now = self.now
        for action in actions:
            if isinstance(action, Transmit):
                node.adverts_sent += 1
                self.lan.send(now, node.name, action.packet)
            elif isinstance(action, AdvertAccepted):
                node.adverts_accepted += 1
            elif isinstance(action, StateChanged):
                self.trace.append(
                    TraceEvent(now, node.name, action.vhid, action.old, action.new, action.reason)
                )
            elif isinstance(action, AddVip):
                node.vips_up[action.vhid] = True
            elif isinstance(action, DelVip):
                node.vips_up[action.vhid] = False
            elif isinstance(action, SendGarp):
                node.garps[action.vhid] += 1
            elif isinstance(action, CountDrop):
                node.drops[str(action.reason)] += 1

    def _note(self, node: str, what: str) -> None:
        self.trace.append(TraceEvent(self.now, node, None, None, None, what))
