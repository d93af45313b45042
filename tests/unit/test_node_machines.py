"""NodeMachines: the demotion rules that join state sync to CARP, decided in one place."""

from __future__ import annotations

import random
from dataclasses import replace

from carpsim.node.machines import NodeMachines
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import Action as CarpAction
from carpsim.protocol.group import CarpGroup
from carpsim.protocol.machine import CarpMachine
from carpsim.sim.scenarios import lan_config
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.events import ReadyChanged, Transmit
from carpsim.statesync.replicator import Replicator


def group(demote: int = 0) -> CarpGroup:
    return CarpGroup(
        CarpMachine(replace(lan_config(1, vhid=v), demote=demote), random.Random(v)) for v in (1, 2)
    )


def demotes(m: NodeMachines) -> list[int]:
    return [x.demote for x in m.carp.machines.values()]


def test_without_state_sync_the_configured_demote_stays() -> None:
    m = NodeMachines(group(demote=3))
    assert m.sync_ready
    m.start(0.0, up=[1, 2])
    assert demotes(m) == [3, 3]
    assert m.total_demote == 3


def test_sync_not_ready_demotes_from_the_start_and_ready_lifts_it() -> None:
    m = NodeMachines(group(), with_sync=True, sync_demote=32)
    assert not m.sync_ready
    m.start(0.0, up=[1, 2])
    assert demotes(m) == [32, 32]
    assert all(x.state is CarpState.BACKUP for x in m.carp.machines.values())
    m.ready_changed(1.0, True)
    assert demotes(m) == [0, 0]
    m.on_timer(3.0)  # master-down: both VHIDs become MASTER
    assert m.ready_changed(3.5, True) == []  # no flip, nothing to do
    again = m.ready_changed(4.0, False)
    assert demotes(m) == [32, 32]
    assert [type(a).__name__ for a in again] == ["Transmit", "Transmit"]  # masters re-advertise


def test_admin_and_sync_demotion_add_up_and_cap_at_255() -> None:
    m = NodeMachines(group(demote=2), with_sync=True, sync_demote=32)
    assert m.admin_demote == 2
    m.start(0.0, up=[1, 2])
    assert m.total_demote == 34
    m.set_admin_demote(1.0, 250)
    assert demotes(m) == [255, 255]
    m.ready_changed(2.0, True)
    assert demotes(m) == [250, 250]
    m.set_admin_demote(3.0, 0)
    assert demotes(m) == [0, 0]


def test_replicator_actions_come_first_then_the_carp_actions_they_cause() -> None:
    rep = Replicator(ReplicatorConfig(creatorid=1), random.Random(0))
    m = NodeMachines(group(), rep, sync_demote=32)
    m.start(0.0, up=[1, 2])
    assert demotes(m) == [32, 32]
    assert m.joined(1.0, [Transmit(b"x")]) == []
    m.joined(1.0, [ReadyChanged(True, "bulk_done")])
    assert demotes(m) == [0, 0]
    m.on_timer(3.0)
    out = m.sync_input(3.5, rep.started)
    kinds = [isinstance(a, CarpAction) for a in out]
    assert kinds == sorted(kinds)  # every Replicator action before the first CARP one
    assert any(isinstance(a, ReadyChanged) and not a.ready for a in out)
    assert any(kinds)  # the masters re-advertise their new demote
    assert demotes(m) == [32, 32]  # a restarted Replicator is not ready: demoted again
    deadlines = [d for d in (m.carp.next_deadline(), rep.next_deadline()) if d is not None]
    assert m.next_deadline() == min(deadlines)
