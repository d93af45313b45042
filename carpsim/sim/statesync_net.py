"""In-memory sync link for two Replicators, with seeded loss/duplication/reordering/delay.

Time is virtual and kept here (the CARP sim's clock is separate). Each node has a "kernel"
(an InMemoryStateTable standing in for conntrack) that executes InstallStates/RemoveStates and,
with `echo=True`, reports those changes back as conntrack events do on Linux, so echo
suppression is exercised too.
"""

# ruff: noqa: S311  -- seeded simulation randomness, not cryptography

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.events import (
    Action,
    BulkCompleted,
    BulkServed,
    CountDrop,
    InstallStates,
    ReadyChanged,
    RemoveStates,
    Transmit,
)
from carpsim.statesync.record import FlowKey, StateRecord
from carpsim.statesync.replicator import Replicator
from carpsim.statesync.table import InMemoryStateTable


@dataclass(frozen=True)
class LinkFaults:
    loss: float = 0.0
    """Probability a frame is dropped."""
    duplicate: float = 0.0
    """Probability a frame is delivered twice."""
    reorder: float = 0.0
    """Probability a frame gets `reorder_delay` extra latency (so later frames overtake it)."""
    delay: float = 0.001
    reorder_delay: float = 0.02


class SyncLink:
    """Point-to-point link between node 0 and node 1; frames keep their bytes intact."""

    def __init__(self, rng: random.Random, faults: LinkFaults = LinkFaults()) -> None:
        self.rng = rng
        self.faults = faults
        self.up = True
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._order = 0
        self.sent = 0
        self.dropped = 0

    def send(self, now: float, dst: int, data: bytes) -> None:
        self.sent += 1
        f = self.faults
        if not self.up or self.rng.random() < f.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            at = now + f.delay
            if self.rng.random() < f.reorder:
                at += f.reorder_delay * self.rng.random()
            self._order += 1
            heapq.heappush(self._queue, (at, self._order, dst, data))

    def next_deadline(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while self._queue and self._queue[0][0] <= now:
            _, _, dst, data = heapq.heappop(self._queue)
            out.append((dst, data))
        return out


@dataclass
class SyncNode:
    replicator: Replicator
    kernel: InMemoryStateTable = field(default_factory=InMemoryStateTable)
    echo: bool = True
    ready: bool = False
    ready_reasons: list[str] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    bulks: list[BulkCompleted] = field(default_factory=list)
    served: list[BulkServed] = field(default_factory=list)
    tx_frames: int = 0


class SyncPair:
    """Two replicators on one SyncLink, driven on virtual time."""

    def __init__(
        self,
        seed: int,
        faults: LinkFaults = LinkFaults(),
        configs: tuple[ReplicatorConfig, ReplicatorConfig] | None = None,
        echo: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.link = SyncLink(random.Random(seed ^ 0x5EED), faults)
        cfgs = configs or (ReplicatorConfig(creatorid=1), ReplicatorConfig(creatorid=2))
        self.nodes = [
            SyncNode(Replicator(cfg, random.Random(seed * 2 + i)), echo=echo)
            for i, cfg in enumerate(cfgs)
        ]
        self.now = 0.0

    # -- node control ----------------------------------------------------------------------

    def start(self, i: int) -> None:
        self.execute(i, self.nodes[i].replicator.started(self.now))

    def restart(self, i: int, *, keep_kernel: bool = False) -> None:
        """Replace node i's replicator with a fresh incarnation (a daemon restart)."""
        old = self.nodes[i]
        rep = Replicator(old.replicator.config, random.Random(self.rng.getrandbits(32)))
        self.nodes[i] = SyncNode(rep, old.kernel if keep_kernel else InMemoryStateTable(),
                                 echo=old.echo)  # fmt: skip
        self.execute(i, rep.started(self.now))

    def local_insert(self, i: int, rec: StateRecord) -> None:
        node = self.nodes[i]
        node.kernel.put(rec)
        self.execute(i, node.replicator.local_inserted(self.now, rec))

    def local_update(self, i: int, rec: StateRecord) -> None:
        node = self.nodes[i]
        node.kernel.put(rec)
        self.execute(i, node.replicator.local_updated(self.now, rec))

    def local_delete(self, i: int, key: FlowKey) -> None:
        node = self.nodes[i]
        node.kernel.delete(key)
        self.execute(i, node.replicator.local_deleted(self.now, key))

    # -- action execution ------------------------------------------------------------------

    def execute(self, i: int, actions: list[Action]) -> None:
        node = self.nodes[i]
        rep = node.replicator
        for act in actions:
            if isinstance(act, Transmit):
                node.tx_frames += 1
                self.link.send(self.now, 1 - i, act.data)
            elif isinstance(act, InstallStates):
                for rec in act.records:
                    node.kernel.put(rec)
                if node.echo:
                    # conntrack reports our own injections as events without pfsync ids
                    for rec in act.records:
                        ev = replace(rec, creatorid=0, id=0, packets=(0, 0), bytes_=(0, 0))
                        self.execute(i, rep.local_updated(self.now, ev))
            elif isinstance(act, RemoveStates):
                for key in act.keys:
                    if node.kernel.delete(key) and node.echo:
                        self.execute(i, rep.local_deleted(self.now, key))
            elif isinstance(act, ReadyChanged):
                node.ready = act.ready
                node.ready_reasons.append(act.reason)
            elif isinstance(act, CountDrop):
                node.drops[act.reason] += 1
            elif isinstance(act, BulkCompleted):
                node.bulks.append(act)
            elif isinstance(act, BulkServed):
                node.served.append(act)

    # -- virtual time ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        cands = [t for t in (n.replicator.next_deadline() for n in self.nodes) if t is not None]
        link = self.link.next_deadline()
        if link is not None:
            cands.append(link)
        return min(cands) if cands else None

    def run_until(self, t_end: float, max_steps: int = 3_000_000) -> None:
        for _ in range(max_steps):
            nxt = self.next_deadline()
            if nxt is None or nxt > t_end:
                self.now = max(self.now, t_end)
                return
            self.now = max(self.now, nxt)
            for dst, data in self.link.due(self.now):
                self.execute(dst, self.nodes[dst].replicator.frame_received(self.now, data))
            for i, node in enumerate(self.nodes):
                dl = node.replicator.next_deadline()
                if dl is not None and dl <= self.now:
                    self.execute(i, node.replicator.on_timer(self.now))
        raise RuntimeError(f"simulation did not settle (seed {self.seed})")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)


def flow_view(
    table: InMemoryStateTable, *, identity: bool = False
) -> dict[FlowKey, tuple[object, ...]]:
    """What must agree across nodes after sync: TCP state and NAT per key (plus the pfsync
    identity for mirrors; kernel tables, like conntrack, hold no ids for local flows)."""
    if identity:
        return {r.key: (r.creatorid, r.id, r.tcp_state, r.nat_src, r.nat_dst) for r in table}
    return {r.key: (r.tcp_state, r.nat_src, r.nat_dst) for r in table}
