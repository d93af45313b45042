"""Several VHIDs on one node, demoted together so they fail over as a group (carp-spec §3.6-3.7).

A packet is decoded once and routed by vhid. Link loss demotes every machine in the group:
OpenBSD style adds 1 to the demote byte per VHID whose link is down; FreeBSD style adds a skew
demotion (240 by default) that goes on the wire in advskew. Either way the peer sees a worse
advert for the VHIDs that are still up and takes them over too, so all VIPs end on one node.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from carpsim.errors import DecodeError
from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CARP_MAXSKEW, DropReason
from carpsim.protocol.events import Action, CountDrop
from carpsim.protocol.machine import CarpMachine


class DemoteStyle(enum.Enum):
    OPENBSD = "openbsd"  # +1 demote byte per down VHID link
    FREEBSD = "freebsd"  # ifdown_demotion_factor added to advskew


class CarpGroup:
    """The CARP machines of one node, keyed by vhid."""

    def __init__(
        self,
        machines: Iterable[CarpMachine],
        *,
        demote_style: DemoteStyle = DemoteStyle.OPENBSD,
        ifdown_demotion: int = CARP_MAXSKEW,
    ) -> None:
        self._machines: dict[int, CarpMachine] = {}
        for machine in machines:
            if machine.vhid in self._machines:
                raise ValueError(f"vhid {machine.vhid} appears twice in one group")
            self._machines[machine.vhid] = machine
        self._style = demote_style
        self._ifdown_demotion = ifdown_demotion
        # Start from the configured demote so link flaps return to it, not to 0.
        self._admin_demote = (
            max((m.config.demote for m in self._machines.values()), default=0)
            if demote_style is DemoteStyle.OPENBSD
            else 0
        )
        self._down: set[int] = set()

    @property
    def machines(self) -> dict[int, CarpMachine]:
        return dict(self._machines)

    def machine(self, vhid: int) -> CarpMachine:
        return self._machines[vhid]

    @property
    def down_vhids(self) -> frozenset[int]:
        return frozenset(self._down)

    @property
    def group_demote(self) -> int:
        """The demote value currently applied to every machine (style-dependent units)."""
        if self._style is DemoteStyle.OPENBSD:
            return min(self._admin_demote + len(self._down), 255)
        return min(self._ifdown_demotion * len(self._down), CARP_MAXSKEW) + self._admin_demote

    def next_deadline(self) -> float | None:
        best: float | None = None
        for machine in self._machines.values():
            d = machine.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    # ---------------------------------------------------------------- inputs

    def packet_received(self, now: float, data: bytes) -> list[Action]:
        try:
            pkt = decode_packet(data)
        except DecodeError as exc:
            return [CountDrop(None, DropReason(exc.reason), exc.detail)]
        machine = self._machines.get(pkt.advert.vhid)
        if machine is None:
            return [CountDrop(None, DropReason.BADVHID, f"vhid {pkt.advert.vhid}")]
        return machine.packet_received(now, pkt)

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for machine in self._machines.values():
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
        """Administrative demotion for the whole group (`ifconfig -g carp carpdemote`)."""
        self._admin_demote = max(value, 0)
        return self._apply_demotion(now)

    def shutdown(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for machine in self._machines.values():
            actions.extend(machine.shutdown(now))
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

    def _apply_demotion(self, now: float) -> list[Action]:
        value = self.group_demote
        actions: list[Action] = []
        for machine in self._machines.values():
            if self._style is DemoteStyle.OPENBSD:
                actions.extend(machine.set_demote(now, value))
            else:
                actions.extend(machine.set_skew_demotion(now, value))
        return actions
