"""One node's protocol machines and the rules that join them, sans-IO.

`NodeMachines` holds the CARP group and, when state sync is configured, the Replicator. Each
member keeps its own inputs and actions; what the composition adds is the set of rules that
cross members, decided here and nowhere else:

- demotion: the group's demote is the operator's value plus state sync's, capped at 255. The
  operator's value starts at the configured one and changes only through `set_admin_demote`.
- readiness: while the Replicator is not ready (starting, link down, bulk pending) the group
  is demoted by `sync_demote` (OpenBSD pfsync's +32 during the bulk phase), so a node without
  the state table neither wins an election nor preempts; `ReadyChanged(ready=True)` (bulk done
  or given up) lifts it. A node starts not ready, so its first advert is already demoted.

The inputs: CARP's (`packet_received`, `link_up`, `link_down`, `shutdown`) return CARP
actions; a Replicator input goes through `sync_input(now, replicator.method, *args)`, which
returns the Replicator's actions followed by the CARP actions its readiness caused. An edge
that drives the Replicator on its own (the daemon runs one driver per member) hands each
`ReadyChanged` to `ready_changed` instead. `next_deadline` / `on_timer` cover every member,
so the composition is itself one timed machine for the simulator.

Adding a member (DHCP server and failover, config sync): give it a slot here, include it in
`next_deadline` / `on_timer`, route its inputs through a `<member>_input` like `sync_input`,
and put any cross-member rule (e.g. "failover partner down -> demote", "config applied ->
restart a member") in a method here whose inputs are that member's actions. Members never
call each other; only this class reads one member's output to feed another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Concatenate, ParamSpec

from carpsim.protocol.events import Action as CarpAction
from carpsim.protocol.group import CarpGroup, initial_demote
from carpsim.protocol.machine import CarpMachine
from carpsim.statesync.events import Action as SyncAction
from carpsim.statesync.events import ReadyChanged
from carpsim.statesync.replicator import Replicator

P = ParamSpec("P")

NodeAction = CarpAction | SyncAction

_DEMOTE_MAX = 255


class NodeMachines:
    """The CARP group, the optional Replicator, and the demotion rules between them."""

    def __init__(
        self,
        carp: CarpGroup,
        replicator: Replicator | None = None,
        *,
        sync_demote: int = 32,
        with_sync: bool | None = None,
    ) -> None:
        """`with_sync` says state sync is configured; it defaults to having a Replicator
        here (an edge that drives its Replicator elsewhere passes True without one)."""
        self.carp = carp
        self.replicator = replicator
        self.sync_demote = sync_demote
        self._admin_demote = initial_demote(carp.machines.values(), carp.demote_style)
        self._sync_ready = not (replicator is not None if with_sync is None else with_sync)

    # ---------------------------------------------------------------- read-only state

    @property
    def admin_demote(self) -> int:
        return self._admin_demote

    @property
    def sync_ready(self) -> bool:
        return self._sync_ready

    @property
    def sync_demotion(self) -> int:
        """What state sync currently adds to the group's demote."""
        return 0 if self._sync_ready else self.sync_demote

    @property
    def total_demote(self) -> int:
        return min(self._admin_demote + self.sync_demotion, _DEMOTE_MAX)

    def next_deadline(self) -> float | None:
        best = self.carp.next_deadline()
        if self.replicator is not None:
            d = self.replicator.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    # ---------------------------------------------------------------- lifecycle

    def start(self, now: float, up: Iterable[int], down: Iterable[int] = ()) -> list[CarpAction]:
        """CARP comes up on the usable links; the demote in force (sync not ready) applies
        before any advert is sent, since the machines only advertise as MASTER."""
        actions: list[CarpAction] = []
        down, up = list(down), list(up)
        if down:
            actions.extend(self.carp.link_down(now, down))
        if up:
            actions.extend(self.carp.link_up(now, up))
        actions.extend(self.carp.set_demote(now, self.total_demote))
        return actions

    def on_timer(self, now: float) -> list[NodeAction]:
        actions: list[NodeAction] = []
        d = self.carp.next_deadline()
        if d is not None and d <= now:
            actions.extend(self.carp.on_timer(now))
        rep = self.replicator
        if rep is not None:
            d = rep.next_deadline()
            if d is not None and d <= now:
                actions.extend(self._joined(now, rep.on_timer(now)))
        return actions

    # ---------------------------------------------------------------- CARP inputs

    def packet_received(self, now: float, data: bytes, ifindex: int = 0) -> list[CarpAction]:
        return self.carp.packet_received(now, data, ifindex)

    def link_up(self, now: float, vhids: Iterable[int] | None = None) -> list[CarpAction]:
        return self.carp.link_up(now, vhids)

    def link_down(self, now: float, vhids: Iterable[int] | None = None) -> list[CarpAction]:
        return self.carp.link_down(now, vhids)

    def shutdown(self, now: float) -> list[CarpAction]:
        return self.carp.shutdown(now)

    def add_vhid(
        self, now: float, machine: CarpMachine, ifindex: int | None = None, *, up: bool = True
    ) -> list[CarpAction]:
        """A VHID added to the running config: it starts INIT -> BACKUP under the demote in
        force (operator plus state sync), the other VHIDs undisturbed."""
        return self.carp.add_machine(now, machine, ifindex, up=up)

    def remove_vhid(self, now: float, vhid: int) -> list[CarpAction]:
        """A VHID deleted from the running config bows out and leaves the group."""
        return self.carp.remove_machine(now, vhid)

    def set_admin_demote(self, now: float, value: int) -> list[CarpAction]:
        """The operator's demote (config, `demote` command); state sync's adds to it."""
        self._admin_demote = min(max(value, 0), _DEMOTE_MAX)
        return self.carp.set_demote(now, self.total_demote)

    # ---------------------------------------------------------------- state-sync inputs

    def sync_input(
        self,
        now: float,
        method: Callable[Concatenate[float, P], Sequence[SyncAction]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> list[NodeAction]:
        """Feed one Replicator input; its actions, then the CARP actions they cause."""
        return self._joined(now, method(now, *args, **kwargs))

    def ready_changed(self, now: float, ready: bool) -> list[CarpAction]:
        """The Replicator's readiness flipped: apply or lift the sync demotion."""
        if ready == self._sync_ready:
            return []
        self._sync_ready = ready
        return self.carp.set_demote(now, self.total_demote)

    def joined(self, now: float, actions: Sequence[SyncAction]) -> list[CarpAction]:
        """The CARP actions a batch of Replicator actions causes (for edges that ran it)."""
        out: list[CarpAction] = []
        for action in actions:
            if isinstance(action, ReadyChanged):
                out.extend(self.ready_changed(now, action.ready))
        return out

    def _joined(self, now: float, actions: Sequence[SyncAction]) -> list[NodeAction]:
        return [*actions, *self.joined(now, actions)]
