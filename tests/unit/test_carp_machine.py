"""CarpMachine rules (BSD ip_carp.c, ucarp), driven directly with exact times."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, ip_interface

import pytest

from carpsim.protocol.codec import (
    CarpPacket,
    build_advert,
    compute_hmac,
    decode_packet,
    encode_packet,
)
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CarpState, DropReason, MasterDownFormula
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
from carpsim.protocol.machine import TRANSITIONS, CarpMachine
from carpsim.protocol.transitions import CarpInput

VIP = ip_interface("192.168.110.254/24")
PW = b"K33p_It_S3cr3t!"


def make(skew: int = 0, *, seed: int = 0, **kw: object) -> CarpMachine:
    config = CarpConfig(
        vhid=1,
        vips=(VIP,),
        srcip=IPv4Address(f"192.168.110.{10 + skew % 200}"),
        password=PW,
        advskew=skew,
        **kw,  # type: ignore[arg-type]
    )
    return CarpMachine(config, random.Random(seed))


def peer_advert(
    *,
    advbase: int = 1,
    advskew: int = 0,
    demote: int = 0,
    counter: bytes = b"peer-ctr",
    password: bytes = PW,
    vhid: int = 1,
) -> CarpPacket:
    body = build_advert(
        vhid=vhid,
        advbase=advbase,
        advskew=advskew,
        demote=demote,
        counter=counter,
        md=compute_hmac(password, vhid, [VIP], counter),
    )
    return decode_packet(
        encode_packet(
            src=IPv4Address("192.168.110.99"),
            dst=IPv4Address("224.0.0.18"),
            ip_id=7,
            advert_bytes=body,
        )
    )


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def to_master(m: CarpMachine) -> float:
    m.link_up(0.0)
    deadline = m.next_deadline()
    assert deadline is not None
    m.on_timer(deadline)
    assert m.state is CarpState.MASTER
    return deadline


def test_the_table_covers_every_state_and_input() -> None:
    assert {(s, i) for s in CarpState for i in CarpInput} == set(TRANSITIONS)


def test_timers_follow_the_formulas() -> None:
    assert make(100).master_down_interval == 3 + 100 / 256
    assert make(100).advert_interval == 1 + 100 / 256
    ob = make(100, master_down_formula=MasterDownFormula.OPENBSD)
    assert ob.master_down_interval == 3 * (1 + 100 / 256)
    sub = make(3, advbase=0, master_down_formula=MasterDownFormula.OPENBSD)
    assert sub.advert_interval == 3 / 256
    assert sub.master_down_interval == 9 / 256
    assert make(100, deadratio=5).master_down_interval == 5 + 100 / 256


def test_startup_has_no_direct_init_to_master() -> None:
    m = make()
    assert m.on_timer(100.0) == []
    assert m.force_master(1.0) == []
    assert m.state is CarpState.INIT
    assert m.next_deadline() is None
    assert m.link_up(10.0) == [StateChanged(1, CarpState.INIT, CarpState.BACKUP, "link_up")]
    assert m.next_deadline() == 13.0
    assert m.on_timer(12.999) == []


def test_new_master_order_and_delayed_garp() -> None:
    m = make()
    m.link_up(0.0)
    actions = m.on_timer(3.0)
    assert kinds(actions) == ["AddVip", "Transmit", "SendGarp", "StateChanged"]
    assert actions[-1] == StateChanged(1, CarpState.BACKUP, CarpState.MASTER, "master_down")
    assert m.next_deadline() == 4.0
    assert kinds(m.on_timer(4.0)) == ["Transmit"]
    assert kinds(m.on_timer(5.0)) == ["Transmit", "SendGarp"]
    assert kinds(m.on_timer(6.0)) == ["Transmit"]


def test_transmitted_advert_is_wire_exact_and_uses_a_constant_cookie() -> None:
    m = make(20, demote=3)
    start = to_master(m)
    assert start == 3 + 20 / 256
    packets = []
    for expected in (start + 1 + 20 / 256, start + 2 * (1 + 20 / 256)):
        assert m.next_deadline() == expected
        packets += [a.packet for a in m.on_timer(expected) if isinstance(a, Transmit)]
    assert len(packets) == 2
    decoded = [decode_packet(p) for p in packets]
    for pkt in decoded:
        assert (pkt.ttl, pkt.tos, pkt.dst) == (255, 0x10, IPv4Address("224.0.0.18"))
        assert (pkt.advert.advskew, pkt.advert.demote, pkt.advert.advbase) == (20, 3, 1)
        assert pkt.advert.counter == m.counter_cookie
    assert packets[0][20:] == packets[1][20:]  # same cookie, same md


def test_master_steps_down_on_tie_and_ignores_slower() -> None:
    m = make(50)
    start = to_master(m)
    assert kinds(m.packet_received(start + 0.1, peer_advert(advskew=51))) == ["AdvertAccepted"]
    assert m.state is CarpState.MASTER
    actions = m.packet_received(start + 0.2, peer_advert(advskew=50))
    assert kinds(actions) == ["AdvertAccepted", "StateChanged", "DelVip"]
    assert actions[1] == StateChanged(1, CarpState.MASTER, CarpState.BACKUP, "preferred_master")
    assert m.next_deadline() == start + 0.2 + m.master_down_interval


def test_openbsd_demote_byte_beats_intervals() -> None:
    m = make(0)
    start = to_master(m)
    # A slower peer with a lower demote count wins (dp < dm).
    m.set_demote(start, 2)
    assert m.packet_received(start + 0.1, peer_advert(advskew=200, demote=1))[1:] == [
        StateChanged(1, CarpState.MASTER, CarpState.BACKUP, "preferred_master"),
        DelVip(1, (VIP,)),
    ]
    # A faster peer with a higher demote count does not take over a master.
    m2 = make(100)
    start2 = to_master(m2)
    assert kinds(m2.packet_received(start2 + 0.1, peer_advert(advskew=0, demote=1))) == [
        "AdvertAccepted"
    ]


def test_backup_rules_in_order() -> None:
    # 1. preempt and slower master -> takeover
    p = make(0, preempt=True)
    p.link_up(0.0)
    assert kinds(p.packet_received(1.0, peer_advert(advskew=100)))[1:] == [
        "AddVip",
        "Transmit",
        "SendGarp",
        "StateChanged",
    ]
    # without preempt: restart master-down
    n = make(0)
    n.link_up(0.0)
    assert kinds(n.packet_received(1.0, peer_advert(advskew=100))) == ["AdvertAccepted"]
    assert n.next_deadline() == 4.0
    # 2. a demoted master is taken over whatever the preempt setting
    d = make(100)
    d.link_up(0.0)
    actions = d.packet_received(1.0, peer_advert(advskew=0, demote=1))
    assert actions[-1] == StateChanged(1, CarpState.BACKUP, CarpState.MASTER, "peer_demoted")
    # 3. bow-out: the sender will time out anyway
    b = make(100)
    b.link_up(0.0)
    actions = b.packet_received(1.0, peer_advert(advbase=255, advskew=255))
    assert actions[-1] == StateChanged(1, CarpState.BACKUP, CarpState.MASTER, "peer_will_time_out")
    # ... but not with advbase 0 (OpenBSD disables the shortcut)
    z = make(3, advbase=0, master_down_formula=MasterDownFormula.OPENBSD)
    z.link_up(0.0)
    assert kinds(z.packet_received(0.01, peer_advert(advbase=255, advskew=255))) == [
        "AdvertAccepted"
    ]


def test_drops_badvhid_badauth_loop() -> None:
    m = make()
    m.link_up(0.0)
    assert m.packet_received(1.0, peer_advert(vhid=2)) == [
        CountDrop(1, DropReason.BADVHID, "vhid 2")
    ]
    wrong_pw = peer_advert(password=b"other")
    assert kinds(m.packet_received(1.0, wrong_pw)) == ["CountDrop"]
    assert m.packet_received(1.0, wrong_pw)[0].reason == DropReason.BADAUTH  # type: ignore[union-attr]
    own = peer_advert(counter=m.counter_cookie)
    assert m.packet_received(1.0, own) == [CountDrop(1, DropReason.LOOP, "our own counter cookie")]
    assert m.next_deadline() == 3.0  # none of them restarted the timer
    assert m.last_advert_at is None


def test_peer_counter_is_never_checked_for_monotonicity() -> None:
    m = make(100)
    m.link_up(0.0)
    for t, ctr in ((1.0, b"\x00" * 7 + b"\x09"), (2.0, b"\x00" * 8), (3.0, b"\x00" * 8)):
        assert kinds(m.packet_received(t, peer_advert(counter=ctr))) == ["AdvertAccepted"]
    assert m.state is CarpState.BACKUP
    assert m.last_advert_at == 3.0
    assert m.last_advert_src == "192.168.110.99"


def test_demotion_changes_make_a_master_advertise_at_once() -> None:
    m = make(10)
    start = to_master(m)
    actions = m.set_demote(start + 0.5, 4)
    assert kinds(actions) == ["Transmit"]
    assert decode_packet(actions[0].packet).advert.demote == 4  # type: ignore[union-attr]
    assert m.next_deadline() == start + 0.5 + m.advert_interval
    assert m.set_demote(start + 0.6, 4) == []
    actions = m.set_skew_demotion(start + 0.7, 240)
    assert decode_packet(actions[0].packet).advert.advskew == 240  # type: ignore[union-attr]
    assert m.advert_interval == 1 + 240 / 256
    m.set_skew_demotion(start + 0.8, 1000)
    assert m.effective_advskew == 240
    high = make(254)
    high.set_skew_demotion(0.0, 10)
    assert high.effective_advskew == 254  # demotion never improves a node


def test_shutdown_bows_out_only_from_master() -> None:
    m = make()
    start = to_master(m)
    actions = m.shutdown(start + 0.5)
    assert kinds(actions) == ["Transmit", "StateChanged", "DelVip"]
    bow = decode_packet(actions[0].packet).advert  # type: ignore[union-attr]
    assert (bow.advbase, bow.advskew) == (255, 255)
    assert m.state is CarpState.INIT
    assert m.next_deadline() is None
    backup = make()
    backup.link_up(0.0)
    assert kinds(backup.shutdown(1.0)) == ["StateChanged"]


def test_link_down_and_forced_states() -> None:
    m = make()
    start = to_master(m)
    assert m.link_down(start + 1) == [
        StateChanged(1, CarpState.MASTER, CarpState.INIT, "link_down"),
        DelVip(1, (VIP,)),
    ]
    assert m.link_down(start + 2) == []
    m.link_up(10.0)
    forced = m.force_master(10.5)
    assert [forced[0], forced[-1]] == [
        AddVip(1, (VIP,)),
        StateChanged(1, CarpState.BACKUP, CarpState.MASTER, "forced_master"),
    ]
    assert kinds(m.force_backup(11.0)) == ["StateChanged", "DelVip"]
    assert m.next_deadline() == 14.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cookie_comes_from_the_injected_rng(seed: int) -> None:
    assert make(seed=seed).counter_cookie == make(seed=seed).counter_cookie
    assert make(seed=seed).counter_cookie != make(seed=seed + 10).counter_cookie


def test_advert_accepted_reports_the_peer() -> None:
    m = make(100)
    m.link_up(0.0)
    assert m.packet_received(1.0, peer_advert(advskew=7, demote=2))[0] == AdvertAccepted(
        1, "192.168.110.99", 1, 7, 2
    )
    assert not any(isinstance(a, SendGarp) for a in m.packet_received(1.5, peer_advert()))
