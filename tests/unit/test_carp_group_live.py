"""VHIDs added to and removed from a running group (a live config edit or a config sync)."""

from __future__ import annotations

import random

import pytest

from carpsim.node.machines import NodeMachines
from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import Action, AddVip, DelVip, StateChanged, Transmit
from carpsim.protocol.group import CarpGroup, DemoteStyle
from carpsim.protocol.machine import CarpMachine
from carpsim.sim.scenarios import lan_config


def machine(node: int, vhid: int, skew: int = 0) -> CarpMachine:
    return CarpMachine(lan_config(node, vhid=vhid, advskew=skew), random.Random(node * 10 + vhid))


def running(style: DemoteStyle = DemoteStyle.OPENBSD) -> CarpGroup:
    g = CarpGroup([machine(1, 1), machine(1, 2)], demote_style=style, interfaces={1: 7, 2: 8})
    g.link_up(0.0)
    g.on_timer(3.0)
    assert {m.state for m in g.machines.values()} == {CarpState.MASTER}
    return g


def states(actions: list[Action]) -> list[tuple[int, CarpState, CarpState]]:
    return [(a.vhid, a.old, a.new) for a in actions if isinstance(a, StateChanged)]


def test_an_added_vhid_starts_init_to_backup_and_leaves_the_others_alone() -> None:
    g = running()
    before = {v: (m.state, m.next_deadline()) for v, m in g.machines.items()}
    actions = g.add_machine(4.0, machine(1, 5), 9)
    assert states(actions) == [(5, CarpState.INIT, CarpState.BACKUP)]
    assert all(a.vhid == 5 for a in actions if hasattr(a, "vhid"))
    assert not any(isinstance(a, Transmit | AddVip) for a in actions)
    assert {v: (m.state, m.next_deadline()) for v, m in g.machines.items() if v != 5} == before
    new = g.machine(5)
    assert new.next_deadline() == 4.0 + new.master_down_interval
    # the group now serves it: on its interface only, and its master-down makes it MASTER
    advert = machine(2, 5, skew=100)
    advert.link_up(0.0)
    packets = [a.packet for a in advert.force_master(0.0) if isinstance(a, Transmit)]
    assert g.packet_received(5.0, packets[0], 8)[0].reason.name == "BADIF"  # type: ignore[union-attr]
    won = g.on_timer(4.0 + new.master_down_interval)
    assert states(won) == [(5, CarpState.BACKUP, CarpState.MASTER)]


def test_an_added_vhid_gets_the_demote_in_force() -> None:
    m = NodeMachines(CarpGroup([machine(1, 1)]), with_sync=True, sync_demote=32)
    m.start(0.0, up=[1])
    m.add_vhid(1.0, machine(1, 4))
    assert m.carp.machine(4).demote == 32
    assert m.carp.machine(4).state is CarpState.BACKUP
    m.ready_changed(2.0, True)
    assert m.carp.machine(4).demote == 0


def test_an_added_vhid_on_a_down_link_stays_init_and_demotes_the_group() -> None:
    g = running(DemoteStyle.FREEBSD)
    actions = g.add_machine(4.0, machine(1, 5), 9, up=False)
    assert g.machine(5).state is CarpState.INIT
    assert g.down_vhids == {5}
    # the masters re-advertise with the demoted skew, so the peer takes all of them over
    assert {a.vhid for a in actions if isinstance(a, Transmit)} == {1, 2}
    assert g.machine(1).effective_advskew == 240


def test_a_removed_master_bows_out_then_leaves() -> None:
    g = running()
    actions = g.remove_machine(4.0, 2)
    bow = [decode_packet(a.packet).advert for a in actions if isinstance(a, Transmit)]
    assert [(a.vhid, a.advbase, a.advskew) for a in bow] == [(2, 255, 255)]
    assert DelVip(2, g.machines[1].config.vips) not in actions
    assert any(isinstance(a, DelVip) and a.vhid == 2 for a in actions)
    assert states(actions) == [(2, CarpState.MASTER, CarpState.INIT)]
    assert set(g.machines) == {1}
    assert g.machine(1).state is CarpState.MASTER
    with pytest.raises(KeyError):
        g.machine(2)
    # its adverts are now foreign: counted as an unknown vhid, not routed
    peer = machine(2, 2)
    peer.link_up(0.0)
    pkt = next(a.packet for a in peer.force_master(0.0) if isinstance(a, Transmit))
    assert g.packet_received(5.0, pkt, 8)[0].reason.name == "BADVHID"  # type: ignore[union-attr]
    # and the same vhid may come back (an address change is delete + add)
    assert states(g.add_machine(6.0, machine(1, 2), 8)) == [(2, CarpState.INIT, CarpState.BACKUP)]


def test_removing_a_down_vhid_lifts_its_demotion_and_twice_is_refused() -> None:
    g = running(DemoteStyle.OPENBSD)
    g.add_machine(4.0, machine(1, 5), 9, up=False)
    assert g.group_demote == 1
    g.remove_machine(5.0, 5)
    assert g.group_demote == 0
    assert g.machine(1).demote == 0
    with pytest.raises(ValueError, match="twice"):
        g.add_machine(6.0, machine(1, 1))


def test_a_backup_removed_sends_nothing() -> None:
    g = CarpGroup([machine(1, 1), machine(1, 2)])
    g.link_up(0.0)
    actions = g.remove_machine(1.0, 1)
    assert not any(isinstance(a, Transmit | DelVip) for a in actions)
    assert states(actions) == [(1, CarpState.BACKUP, CarpState.INIT)]
    assert g.next_deadline() == g.machine(2).next_deadline()
