"""Whole nodes on the runner: `NodeMachines` (CARP + state sync) on a LAN and a sync cable.

Each `HaNode` is the executor of one node's composition: CARP actions go to a `CarpExecutor`
(adverts onto the "lan" link, trace, VIP bookkeeping), Replicator actions to a `SyncExecutor`
(frames onto the "sync" point-to-point link, an in-memory kernel table). The sync executor
reports every batch it runs back to the composition, so readiness turns into CARP demotion
by the composition's rule, exactly as on a real node.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from carpsim.node.machines import NodeAction, NodeMachines
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import Action as CarpAction
from carpsim.protocol.group import DemoteStyle
from carpsim.sim.carp_lan import LAN, CarpExecutor, TraceEvent, new_group
from carpsim.sim.link import Impairment, Link, PointToPoint
from carpsim.sim.runner import Runner, SimNode
from carpsim.sim.sync_pair import SYNC, SyncExecutor, sync_faults
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.events import Action as SyncAction
from carpsim.statesync.events import ReadyChanged
from carpsim.statesync.record import StateRecord
from carpsim.statesync.replicator import Replicator


class HaNode(SimNode):
    """One node: its composition, and the executors of its two members."""

    def __init__(
        self,
        name: str,
        peer: str,
        *,
        carp: tuple[CarpConfig, ...],
        sync: ReplicatorConfig,
        sync_demote: int,
        lan: Link,
        sync_link: PointToPoint,
        trace: list[TraceEvent],
        rng: random.Random,
    ) -> None:
        super().__init__(name)
        self.alive = False
        self.peer = peer
        self.carp_configs = carp
        self.sync_config = sync
        self.sync_demote = sync_demote
        self._lan = lan
        self._sync_link = sync_link
        self._trace = trace
        self._rng = rng
        self.incarnation = 0
        self.machines, self.carp_exec, self.sync_exec = self._fresh()

    def _fresh(self) -> tuple[NodeMachines, CarpExecutor, SyncExecutor]:
        group = new_group(self.carp_configs, DemoteStyle.OPENBSD, self._rng)
        rep = Replicator(self.sync_config, random.Random(self._rng.getrandbits(64)))  # noqa: S311
        machines = NodeMachines(group, rep, sync_demote=self.sync_demote)
        carp_exec = CarpExecutor(self.name, self._lan, self._trace)
        sync_exec = SyncExecutor(self.name, self.peer, self._sync_link, rep)
        sync_exec.joined = self._joined
        return machines, carp_exec, sync_exec

    def _joined(self, now: float, actions: list[SyncAction]) -> None:
        for action in actions:
            if isinstance(action, ReadyChanged):
                what = "ready" if action.ready else "not ready"
                self._trace.append(
                    TraceEvent(now, self.name, None, None, None, f"sync {what} ({action.reason})")
                )
        self.carp_exec.execute(now, self.machines.joined(now, actions))

    def run(self, now: float, actions: Sequence[NodeAction]) -> None:
        """Execute a mixed batch in order, each action by its member's executor."""
        for action in actions:
            if isinstance(action, CarpAction):
                self.carp_exec.execute(now, [action])
            else:
                self.sync_exec.execute(now, [action])

    def state(self, vhid: int) -> CarpState:
        return self.machines.carp.machine(vhid).state

    # ---------------------------------------------------------------- the runner's inputs

    def next_deadline(self) -> float | None:
        return self.machines.next_deadline()

    def on_timer(self, now: float) -> None:
        self.run(now, self.machines.on_timer(now))

    def receive(self, now: float, link: str, data: bytes) -> None:
        if link == LAN:
            self.carp_exec.execute(now, self.machines.packet_received(now, data))
        else:
            rep = self.sync_exec.replicator
            self.run(now, self.machines.sync_input(now, rep.frame_received, data))

    # ---------------------------------------------------------------- lifecycle

    def boot(self, now: float, kernel: Sequence[StateRecord] = ()) -> None:
        """A fresh daemon: new cookies, a Replicator that has to ask for the table."""
        self.incarnation += 1
        self.machines, self.carp_exec, self.sync_exec = self._fresh()
        self.alive = True
        for rec in kernel:
            self.sync_exec.kernel.put(rec)
        rep = self.sync_exec.replicator
        self.run(now, self.machines.sync_input(now, rep.started))
        if kernel:
            self.run(now, self.machines.sync_input(now, rep.local_snapshot, list(kernel)))
        vhids = [c.vhid for c in self.carp_configs]
        self.carp_exec.execute(now, self.machines.start(now, up=vhids))


class HaPair(Runner[HaNode]):
    """node1 and node2, each CARP + state sync, on a "lan" segment and a "sync" cable."""

    def __init__(
        self,
        configs: tuple[tuple[CarpConfig, ...], tuple[CarpConfig, ...]],
        *,
        seed: int = 0,
        sync: tuple[ReplicatorConfig, ReplicatorConfig] | None = None,
        sync_demote: int = 32,
        lan_impairment: Impairment | None = None,
        sync_impairment: Impairment | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.trace: list[TraceEvent] = []
        self.lan = self.add_link(Link(LAN, self.derive_rng(), lan_impairment))
        names = ("node1", "node2")
        self.sync_link = PointToPoint(
            SYNC, names, self.derive_rng(), sync_impairment or sync_faults()
        )
        self.add_link(self.sync_link)
        syncs = sync or (ReplicatorConfig(creatorid=1), ReplicatorConfig(creatorid=2))
        for i, name in enumerate(names):
            node = HaNode(
                name,
                names[1 - i],
                carp=configs[i],
                sync=syncs[i],
                sync_demote=sync_demote,
                lan=self.lan,
                sync_link=self.sync_link,
                trace=self.trace,
                rng=self.derive_rng(),
            )
            self.add_node(node)

    def boot(self, name: str, kernel: Sequence[StateRecord] = ()) -> None:
        node = self.nodes[name]
        if node.alive:
            self.kill(name)
        self.trace.append(TraceEvent(self.now, name, None, None, None, "boot"))
        self.lan.attach(name)
        self.sync_link.attach(name)
        node.boot(self.now, kernel)

    def kill(self, name: str) -> None:
        self.trace.append(TraceEvent(self.now, name, None, None, None, "killed"))
        super().kill(name)

    def local_insert(self, name: str, rec: StateRecord) -> None:
        """A flow appears in `name`'s kernel (conntrack's new-state event)."""
        node = self.nodes[name]
        node.sync_exec.kernel.put(rec)
        rep = node.sync_exec.replicator
        node.run(self.now, node.machines.sync_input(self.now, rep.local_inserted, rec))

    def masters(self, vhid: int) -> list[str]:
        return [
            n.name for n in self.nodes.values() if n.alive and n.state(vhid) is CarpState.MASTER
        ]
