"""State sync on the runner: a node adapter for a `Replicator` and the two-node preset.

Each node has a "kernel" (an InMemoryStateTable standing in for conntrack) that executes
InstallStates/RemoveStates and, with `echo=True`, reports those changes back as conntrack
events do on Linux, so echo suppression is exercised too. The two nodes share one
`PointToPoint` link ("sync"); `Transmit` goes onto it.
"""

# ruff: noqa: S311  -- seeded simulation randomness, not cryptography

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from carpsim.sim.link import Impairment, PointToPoint
from carpsim.sim.runner import Runner, SimNode
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

SYNC = "sync"
SYNC_DELAY = 0.001
"""One-way latency of the simulated sync cable unless a scenario says otherwise."""


def sync_faults(
    *,
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    delay: float = SYNC_DELAY,
    reorder_delay: float = 0.02,
) -> Impairment:
    """The sync link's impairment (a dedicated cable: latency, no jitter unless reordered)."""
    return Impairment(
        loss=loss,
        duplicate=duplicate,
        reorder=reorder,
        delay=delay,
        reorder_delay=reorder_delay,
        draw_always=True,
    )


@dataclass
class SyncExecutor:
    """Executes Replicator actions against an in-memory kernel table and a datagram link."""

    name: str
    peer: str
    link: PointToPoint
    replicator: Replicator
    kernel: InMemoryStateTable = field(default_factory=InMemoryStateTable)
    echo: bool = True
    ready: bool = False
    ready_reasons: list[str] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    bulks: list[BulkCompleted] = field(default_factory=list)
    served: list[BulkServed] = field(default_factory=list)
    tx_frames: int = 0
    joined: Callable[[float, list[Action]], None] | None = None
    """Told of every batch of Replicator actions executed here (the node composition's rules
    react to them, e.g. readiness -> CARP demotion)."""

    def execute(self, now: float, actions: list[Action]) -> None:  # noqa: C901 - one branch per replicator action type
        rep = self.replicator
        if self.joined is not None:
            self.joined(now, actions)
        for act in actions:
            if isinstance(act, Transmit):
                self.tx_frames += 1
                self.link.send(now, self.name, act.data)
            elif isinstance(act, InstallStates):
                for rec in act.records:
                    self.kernel.put(rec)
                if self.echo:
                    # conntrack reports our own injections as events without pfsync ids
                    for rec in act.records:
                        ev = replace(rec, creatorid=0, id=0, packets=(0, 0), bytes_=(0, 0))
                        self.execute(now, rep.local_updated(now, ev))
            elif isinstance(act, RemoveStates):
                for key in act.keys:
                    if self.kernel.delete(key) and self.echo:
                        self.execute(now, rep.local_deleted(now, key))
            elif isinstance(act, ReadyChanged):
                self.ready = act.ready
                self.ready_reasons.append(act.reason)
            elif isinstance(act, CountDrop):
                self.drops[act.reason] += 1
            elif isinstance(act, BulkCompleted):
                self.bulks.append(act)
            elif isinstance(act, BulkServed):
                self.served.append(act)


class SyncSimNode(SimNode):
    """A node whose only machine is a Replicator (the bookkeeping lives in `state`)."""

    def __init__(self, state: SyncExecutor) -> None:
        super().__init__(state.name)
        self.state = state

    def next_deadline(self) -> float | None:
        return self.state.replicator.next_deadline()

    def on_timer(self, now: float) -> None:
        self.state.execute(now, self.state.replicator.on_timer(now))

    def receive(self, now: float, link: str, data: bytes) -> None:
        self.state.execute(now, self.state.replicator.frame_received(now, data))


class SyncPair(Runner[SyncSimNode]):
    """Two replicators (nodes 0 and 1) on one `PointToPoint` sync link, on virtual time."""

    def __init__(
        self,
        seed: int,
        faults: Impairment | None = None,
        configs: tuple[ReplicatorConfig, ReplicatorConfig] | None = None,
        echo: bool = True,
    ) -> None:
        super().__init__(seed=seed, max_steps=3_000_000)
        self.link = PointToPoint(
            SYNC, ("0", "1"), random.Random(seed ^ 0x5EED), faults or sync_faults()
        )
        self.add_link(self.link)
        cfgs = configs or (ReplicatorConfig(creatorid=1), ReplicatorConfig(creatorid=2))
        for i, cfg in enumerate(cfgs):
            rep = Replicator(cfg, random.Random(seed * 2 + i))
            self.add_node(SyncSimNode(SyncExecutor(str(i), str(1 - i), self.link, rep, echo=echo)))

    @property
    def members(self) -> list[SyncExecutor]:
        """Per-node bookkeeping, indexed 0 and 1 (kernel, readiness, drops, bulks)."""
        return [self.nodes["0"].state, self.nodes["1"].state]

    # -- node control ----------------------------------------------------------------------

    def execute(self, i: int, actions: list[Action]) -> None:
        self.members[i].execute(self.now, actions)

    def start(self, i: int) -> None:
        node = self.members[i]
        node.execute(self.now, node.replicator.started(self.now))

    def restart(self, i: int, *, keep_kernel: bool = False) -> None:
        """Replace node i's replicator with a fresh incarnation (a daemon restart)."""
        old = self.members[i]
        rep = Replicator(old.replicator.config, random.Random(self.rng.getrandbits(32)))
        kernel = old.kernel if keep_kernel else InMemoryStateTable()
        new = SyncExecutor(old.name, old.peer, self.link, rep, kernel, echo=old.echo)
        self.nodes[old.name].state = new
        new.execute(self.now, rep.started(self.now))

    def local_insert(self, i: int, rec: StateRecord) -> None:
        node = self.members[i]
        node.kernel.put(rec)
        node.execute(self.now, node.replicator.local_inserted(self.now, rec))

    def local_update(self, i: int, rec: StateRecord) -> None:
        node = self.members[i]
        node.kernel.put(rec)
        node.execute(self.now, node.replicator.local_updated(self.now, rec))

    def local_delete(self, i: int, key: FlowKey) -> None:
        node = self.members[i]
        node.kernel.delete(key)
        node.execute(self.now, node.replicator.local_deleted(self.now, key))


def flow_view(
    table: InMemoryStateTable, *, identity: bool = False
) -> dict[FlowKey, tuple[object, ...]]:
    """What must agree across nodes after sync: TCP state and NAT per key (plus the pfsync
    identity for mirrors; kernel tables, like conntrack, hold no ids for local flows)."""
    if identity:
        return {r.key: (r.creatorid, r.id, r.tcp_state, r.nat_src, r.nat_dst) for r in table}
    return {r.key: (r.tcp_state, r.nat_src, r.nat_dst) for r in table}
