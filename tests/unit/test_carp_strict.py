"""CARP strict mode: the whole advert authenticated, replays refused per source (issue 14).

Default mode is the protocol's: its HMAC leaves advskew/advbase/demote and freshness open, so a
captured advert, rewritten to a better skew, makes a master step down (shown first, as the
documented limit). Strict mode refuses the rewrite and the replay.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, ip_interface

from carpsim.protocol.codec import CarpPacket, carp_checksum, decode_packet
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CarpState, DropReason
from carpsim.protocol.events import Action, AdvertAccepted, CountDrop, Transmit
from carpsim.protocol.machine import CarpMachine

VIP = ip_interface("192.168.110.254/24")
PW = b"K33p_It_S3cr3t!"


def make(skew: int, *, strict: bool, seed: int, host: int) -> CarpMachine:
    config = CarpConfig(
        vhid=1,
        vips=(VIP,),
        srcip=IPv4Address(f"192.168.110.{host}"),
        password=PW,
        advskew=skew,
        preempt=True,
        strict=strict,
    )
    return CarpMachine(config, random.Random(seed))


def adverts(actions: list[Action]) -> list[bytes]:
    return [a.packet for a in actions if isinstance(a, Transmit)]


def master(m: CarpMachine) -> tuple[float, bytes]:
    m.link_up(0.0)
    deadline = m.next_deadline()
    assert deadline is not None
    (pkt,) = adverts(m.on_timer(deadline))
    assert m.state is CarpState.MASTER
    return deadline, pkt


def rewrite_skew(packet: bytes, skew: int) -> CarpPacket:
    raw = bytearray(packet)
    raw[22] = skew  # IPv4 header (20) + type/version, vhid, then advskew
    raw[26:28] = b"\0\0"
    raw[26:28] = carp_checksum(bytes(raw[20:56])).to_bytes(2, "big")
    return decode_packet(bytes(raw))


def state(m: CarpMachine) -> CarpState:
    return m.state  # (read through a call: mypy would narrow the property between asserts)


def reasons(out: list[Action]) -> list[DropReason]:
    return [a.reason for a in out if isinstance(a, CountDrop)]


def test_default_mode_obeys_a_rewritten_advert() -> None:
    # The documented limit of the protocol's HMAC (docs/security.md).
    a = make(100, strict=False, seed=1, host=10)
    b = make(200, strict=False, seed=2, host=11)
    _t, pkt = master(a)
    tb, _ = master(b)
    out = b.packet_received(tb + 0.1, rewrite_skew(pkt, 0))
    assert any(isinstance(x, AdvertAccepted) for x in out)
    assert state(b) is CarpState.BACKUP  # a better-looking advert: the master stepped down


def test_strict_mode_refuses_rewrites_and_replays_and_accepts_restarts() -> None:
    a = make(100, strict=True, seed=1, host=10)
    b = make(200, strict=True, seed=2, host=11)
    _t, pkt = master(a)
    tb, _ = master(b)
    assert reasons(b.packet_received(tb + 0.1, rewrite_skew(pkt, 0))) == [DropReason.BADAUTH]
    assert state(b) is CarpState.MASTER
    # the genuine advert (skew 100 < 200, preempt): accepted once, then a replay
    genuine = decode_packet(pkt)
    out = b.packet_received(tb + 0.2, genuine)
    assert any(isinstance(x, AdvertAccepted) for x in out)
    assert state(b) is CarpState.BACKUP
    assert reasons(b.packet_received(tb + 0.3, genuine)) == [DropReason.REPLAY]
    # a's next advert moves the counter on
    deadline = a.next_deadline()
    assert deadline is not None
    (nxt,) = adverts(a.on_timer(deadline))
    assert any(
        isinstance(x, AdvertAccepted) for x in b.packet_received(tb + 1.2, decode_packet(nxt))
    )
    # a restarted a (new incarnation) is accepted from its first advert; the old life is not
    a2 = make(100, strict=True, seed=7, host=10)
    _t2, fresh = master(a2)
    assert any(
        isinstance(x, AdvertAccepted) for x in b.packet_received(tb + 2, decode_packet(fresh))
    )
    assert reasons(b.packet_received(tb + 3, decode_packet(nxt))) == [DropReason.REPLAY]


def test_strict_and_default_nodes_refuse_each_other() -> None:
    s = make(100, strict=True, seed=1, host=10)
    d = make(200, strict=False, seed=2, host=11)
    _t, spkt = master(s)
    td, dpkt = master(d)
    assert reasons(d.packet_received(td + 0.1, decode_packet(spkt))) == [DropReason.BADAUTH]
    assert reasons(s.packet_received(td + 0.1, decode_packet(dpkt))) == [DropReason.BADAUTH]
