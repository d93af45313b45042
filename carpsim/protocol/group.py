"""Several VHIDs on one node, demoted together so they fail over as a group (OpenBSD carp groups).

A received packet takes one path: `packet_received(now, data, ifindex)` drops our own
adverts (by IPv4 source), decodes once, routes by vhid, and counts a vhid that is served on
another interface as `badif`. Link loss demotes every machine in the group:
OpenBSD style adds 1 to the demote byte per VHID whose link is down; FreeBSD style adds a skew
demotion (240 by default) that goes on the wire in advskew. Either way the peer sees a worse
advert for the VHIDs that are still up and takes them over too, so all VIPs end on one node.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from carpsim.errors import DecodeError
from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CARP_MAXSKEW, DropReason
from carpsim.protocol.events import Action, CountDrop
from carpsim.protocol.machine import CarpMachine


class DemoteStyle(enum.Enum):
    OPENBSD = "openbsd"  # +1 demote byte per down VHID link
    FREEBSD = "freebsd"  # ifdown_demotion_factor added to advskew


def initial_demote(machines: Iterable[CarpMachine], style: DemoteStyle) -> int:
    """The configured demote a group starts from (OpenBSD counts; FreeBSD has none)."""
    if style is not DemoteStyle.OPENBSD:
        return 0
    return max((m.config.demote for m in machines), default=0)


class CarpGroup:
    """The CARP machines of one node, keyed by vhid."""

    def __init__(
        self,
        machines: Iterable[CarpMachine],
        *,
        demote_style: DemoteStyle = DemoteStyle.OPENBSD,
        ifdown_demotion: int = CARP_MAXSKEW,
        interfaces: Mapping[int, int] | None = None,
    ) -> None:
        """`interfaces` maps vhid -> ifindex of its parent; without it any interface is fine
        (the simulator has one segment)."""
        self._machines: dict[int, CarpMachine] = {}
        for machine in machines:
            if machine.vhid in self._machines:
                raise ValueError(f"vhid {machine.vhid} appears twice in one group")
            self._machines[machine.vhid] = machine
        # The simulator and the driver ask for the deadline after every input: iterate a tuple.
        self._all = tuple(self._machines.values())
        self._interfaces = dict(interfaces) if interfaces is not None else None
        self._own = frozenset(m.config.srcip.packed for m in self._machines.values())
        self.rx_own = 0
        """Our own adverts heard back (another socket on the segment, a looping switch)."""
        self._style = demote_style
        self._ifdown_demotion = ifdown_demotion
        # What set_demote last gave (operator plus state sync, summed by the node), starting
        # from the configured demote so link flaps return to it, not to 0.
        self._outside_demote = initial_demote(self._machines.values(), demote_style)
        self._down: set[int] = set()

    def bind_interfaces(self, interfaces: Mapping[int, int]) -> None:
        """Set vhid -> parent ifindex once the edge has looked its interfaces up."""
        self._interfaces = dict(interfaces)

    @property
    def machines(self) -> dict[int, CarpMachine]:
        return dict(self._machines)

    def machine(self, vhid: int) -> CarpMachine:
        return self._machines[vhid]

    @property
    def demote_style(self) -> DemoteStyle:
        return self._style

    @property
    def down_vhids(self) -> frozenset[int]:
        return frozenset(self._down)

    @property
    def group_demote(self) -> int:
        """The demote value currently applied to every machine (style-dependent units)."""
        if self._style is DemoteStyle.OPENBSD:
            return min(self._outside_demote + len(self._down), 255)
        return min(self._ifdown_demotion * len(self._down), CARP_MAXSKEW) + self._outside_demote

    def next_deadline(self) -> float | None:
        best: float | None = None
        for machine in self._all:
            d = machine.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    # ---------------------------------------------------------------- inputs

    def packet_received(self, now: float, data: bytes, ifindex: int = 0) -> list[Action]:
        """An IPv4 packet (header included) read on interface `ifindex`."""
        if len(data) >= 20 and data[12:16] in self._own:
            self.rx_own += 1
            return []
        try:
            pkt = decode_packet(data)
        except DecodeError as exc:
            return [CountDrop(None, DropReason(exc.reason), exc.detail)]
        vhid = pkt.advert.vhid
        machine = self._machines.get(vhid)
        if machine is None:
            return [CountDrop(None, DropReason.BADVHID, f"vhid {vhid}")]
        if self._interfaces is not None and self._interfaces.get(vhid) != ifindex:
            # Served on another parent: delivering it would let a foreign segment steer this
            # VHID (OpenBSD counts it as badif).
            return [CountDrop(vhid, DropReason.BADIF, f"on ifindex {ifindex}")]
        return machine.packet_received(now, pkt)

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for machine in self._all:
            deadline = machine.next_deadline()
            if deadline is not None and deadline <= now:
                actions.extend(machine.on_timer(now))
        return actions

    def link_up(self, now: float, vhids: Iterable[int] | None = None) -> list[Action]:
        """The link(s) carrying `vhids` (all when None) came up: INIT -> BACKUP, undemote."""
        targets = self._select(vhids)
        actions: list[Action] = []
        for vhid in targets:
            self._down.discard(vhid)
        actions.extend(self._apply_demotion(now))
        for vhid in targets:
            actions.extend(self._machines[vhid].link_up(now))
        return actions

    def link_down(self, now: float, vhids: Iterable[int] | None = None) -> list[Action]:
        """The link(s) carrying `vhids` went down: those go to INIT, the rest are demoted."""
        targets = self._select(vhids)
        actions: list[Action] = []
        for vhid in targets:
            self._down.add(vhid)
            actions.extend(self._machines[vhid].link_down(now))
        actions.extend(self._apply_demotion(now))
        return actions

    def set_demote(self, now: float, value: int) -> list[Action]:
        """Demotion from outside the group for all its VHIDs (`ifconfig -g carp carpdemote`):
        the node's composition passes the operator's value plus state sync's."""
        self._outside_demote = max(value, 0)
        return self._apply_demotion(now)

    def shutdown(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for machine in self._machines.values():
            actions.extend(machine.shutdown(now))
        return actions

    def add_machine(
        self, now: float, machine: CarpMachine, ifindex: int | None = None, *, up: bool = True
    ) -> list[Action]:
        """A VHID configured on a running node: it joins in INIT and starts as at boot
        (link up -> BACKUP, master-down timer armed), demoted like the rest of the group.

        The other machines are touched only if the new VHID's link is down (the group's
        demote grows by it, as for any down link)."""
        if machine.vhid in self._machines:
            raise ValueError(f"vhid {machine.vhid} appears twice in one group")
        self._machines[machine.vhid] = machine
        self._all = tuple(self._machines.values())
        self._own = self._own | {machine.config.srcip.packed}
        if self._interfaces is not None and ifindex is not None:
            self._interfaces[machine.vhid] = ifindex
        if up:
            actions = self._demote_one(now, machine)
            return actions + machine.link_up(now)
        return self.link_down(now, [machine.vhid])

    def remove_machine(self, now: float, vhid: int) -> list[Action]:
        """A VHID deleted on a running node: it bows out as on shutdown (a MASTER sends the
        255/255 advert and drops its VIPs), then leaves the group. Its actions come first, so
        the edge still knows the VHID while executing them."""
        machine = self._machines[vhid]
        actions = machine.shutdown(now)
        del self._machines[vhid]
        self._all = tuple(self._machines.values())
        self._own = frozenset(m.config.srcip.packed for m in self._all)
        if self._interfaces is not None:
            self._interfaces.pop(vhid, None)
        if vhid in self._down:
            self._down.discard(vhid)
            actions.extend(self._apply_demotion(now))
        return actions

    # ---------------------------------------------------------------- helpers

    def _select(self, vhids: Iterable[int] | None) -> list[int]:
        if vhids is None:
            return list(self._machines)
        chosen = list(vhids)
        unknown = [v for v in chosen if v not in self._machines]
        if unknown:
            raise KeyError(f"unknown vhid(s) {unknown}")
        return chosen

    def _demote_one(self, now: float, machine: CarpMachine) -> list[Action]:
        if self._style is DemoteStyle.OPENBSD:
            return machine.set_demote(now, self.group_demote)
        return machine.set_skew_demotion(now, self.group_demote)

    def _apply_demotion(self, now: float) -> list[Action]:
        value = self.group_demote
        actions: list[Action] = []
        for machine in self._machines.values():
            if self._style is DemoteStyle.OPENBSD:
                actions.extend(machine.set_demote(now, value))
            else:
                actions.extend(machine.set_skew_demotion(now, value))
        return actions
