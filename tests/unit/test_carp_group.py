"""CarpGroup: decode once, route by vhid, demote the whole group on link loss."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CarpState, DropReason
from carpsim.protocol.events import Action, AdvertAccepted, CountDrop, Transmit
from carpsim.protocol.group import CarpGroup, DemoteStyle
from carpsim.protocol.machine import CarpMachine
from carpsim.sim.scenarios import lan_config


def group(node: int, skew: int, style: DemoteStyle = DemoteStyle.OPENBSD) -> CarpGroup:
    machines = [
        CarpMachine(lan_config(node, vhid=v, advskew=skew), random.Random(node * 10 + v))
        for v in (1, 2, 3)
    ]
    return CarpGroup(machines, demote_style=style)


def transmits(actions: list[Action]) -> list[bytes]:
    return [a.packet for a in actions if isinstance(a, Transmit)]


def master_group(style: DemoteStyle = DemoteStyle.OPENBSD) -> CarpGroup:
    g = group(1, 0, style)
    g.link_up(0.0)
    assert g.next_deadline() == 3.0
    g.on_timer(3.0)
    assert all(m.state is CarpState.MASTER for m in g.machines.values())
    return g


def test_routing_and_drops() -> None:
    sender = master_group()
    receiver = group(2, 100)
    receiver.link_up(0.0)
    adverts = transmits(sender.on_timer(4.0))
    assert len(adverts) == 3
    for data in adverts:
        actions = receiver.packet_received(4.0, data)
        assert not any(isinstance(a, CountDrop) for a in actions)
    assert receiver.next_deadline() == 4.0 + 3 + 100 / 256
    lone = CarpGroup([CarpMachine(lan_config(2, vhid=1), random.Random(0))])
    assert lone.packet_received(4.0, adverts[1]) == [CountDrop(None, DropReason.BADVHID, "vhid 2")]
    assert receiver.packet_received(4.0, adverts[0][:30])[0].reason == DropReason.BADLEN  # type: ignore[union-attr]
    bad_ttl = bytearray(adverts[0])
    bad_ttl[8] = 1
    assert receiver.packet_received(4.0, bytes(bad_ttl)) == [
        CountDrop(None, DropReason.BADTTL, "ttl 1 != 255")
    ]


def test_own_adverts_are_dropped_before_decoding_and_counted_apart() -> None:
    g = master_group()
    own = transmits(g.on_timer(4.0))
    assert all(g.packet_received(4.0, data) == [] for data in own)
    assert g.rx_own == 3
    # Not a drop reason: heard back, our adverts are neither malformed nor a peer's.
    truncated_own = own[0][:25]
    assert g.packet_received(4.0, truncated_own) == []
    assert g.rx_own == 4


def test_a_vhid_served_on_another_interface_is_badif() -> None:
    sender = master_group()
    receiver = group(2, 100)
    receiver.bind_interfaces({1: 7, 2: 7, 3: 9})
    receiver.link_up(0.0)
    adverts = {decode_packet(d).advert.vhid: d for d in transmits(sender.on_timer(4.0))}
    assert receiver.packet_received(4.0, adverts[3], 7) == [
        CountDrop(3, DropReason.BADIF, "on ifindex 7")
    ]
    assert receiver.machine(3).last_advert_at is None  # it never reached the machine
    assert not any(isinstance(a, CountDrop) for a in receiver.packet_received(4.0, adverts[3], 9))
    assert receiver.machine(3).last_advert_at == 4.0
    accepted = receiver.packet_received(4.0, adverts[1], 7)
    assert isinstance(accepted[0], AdvertAccepted)  # vhid 1 is served on ifindex 7


def test_openbsd_group_demotion_is_one_per_down_vhid() -> None:
    g = master_group()
    actions = g.link_down(5.0, [3])
    sent = [decode_packet(p).advert for p in transmits(actions)]
    assert sorted((a.vhid, a.demote) for a in sent) == [(1, 1), (2, 1)]
    assert g.machine(3).state is CarpState.INIT
    g.link_down(5.5, [2])
    assert g.machine(1).demote == 2
    g.set_demote(6.0, 10)
    assert g.machine(1).demote == 12
    g.link_up(7.0, [2, 3])
    assert g.machine(1).demote == 10
    assert g.machine(3).state is CarpState.BACKUP


def test_freebsd_group_demotion_raises_advskew_to_240() -> None:
    g = master_group(DemoteStyle.FREEBSD)
    sent = [decode_packet(p).advert for p in transmits(g.link_down(5.0, [3]))]
    assert sorted((a.vhid, a.advskew, a.demote) for a in sent) == [(1, 240, 0), (2, 240, 0)]
    g.link_up(6.0, [3])
    assert g.machine(1).effective_advskew == 0


def test_shutdown_bows_out_every_master() -> None:
    g = master_group()
    bows = [decode_packet(p).advert for p in transmits(g.shutdown(5.0))]
    assert [(a.vhid, a.advbase, a.advskew) for a in bows] == [
        (1, 255, 255),
        (2, 255, 255),
        (3, 255, 255),
    ]
    assert g.next_deadline() is None


def test_duplicate_vhids_and_unknown_vhids_are_rejected() -> None:
    m = CarpMachine(lan_config(1), random.Random(0))
    with pytest.raises(ValueError, match="twice"):
        CarpGroup([m, CarpMachine(lan_config(2), random.Random(1))])
    with pytest.raises(KeyError):
        CarpGroup([m]).link_down(0.0, [9])


def test_configured_demote_survives_a_link_flap() -> None:
    machines = [
        CarpMachine(replace(lan_config(1, vhid=v), demote=4), random.Random(v)) for v in (1, 2)
    ]
    g = CarpGroup(machines)
    assert g.group_demote == 4
    g.link_up(0.0)
    g.link_down(1.0, [2])
    assert g.machine(1).demote == 5
    g.link_up(2.0, [2])
    assert g.machine(1).demote == 4
