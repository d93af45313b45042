"""A VHID updated by a config change keeps its state: no flap, no takeover (issue 11)."""

from __future__ import annotations

import dataclasses
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
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import StateChanged, Transmit
from carpsim.protocol.machine import CarpMachine

VIP = ip_interface("192.168.110.254/24")
PW = b"K33p_It_S3cr3t!"


def make(skew: int) -> CarpMachine:
    config = CarpConfig(vhid=1, vips=(VIP,), srcip=IPv4Address("192.168.110.10"), password=PW,
                        advskew=skew)  # fmt: skip
    return CarpMachine(config, random.Random(0))


def peer_advert(password: bytes = PW) -> CarpPacket:
    counter = b"peer-ctr"
    body = build_advert(vhid=1, advbase=1, advskew=0, demote=0, counter=counter,
                        md=compute_hmac(password, 1, [VIP], counter))  # fmt: skip
    src, dst = IPv4Address("192.168.110.99"), IPv4Address("224.0.0.18")
    return decode_packet(encode_packet(src=src, dst=dst, ip_id=7, advert_bytes=body))


def to_master(m: CarpMachine) -> float:
    m.link_up(0.0)
    deadline = m.next_deadline()
    assert deadline is not None
    m.on_timer(deadline)
    assert m.state is CarpState.MASTER
    return deadline


def test_master_keeps_mastership_and_advertises_the_new_skew_at_once() -> None:
    m = make(0)
    start = to_master(m)
    actions = m.reconfigure(start + 0.2, dataclasses.replace(m.config, advskew=10))
    assert [type(a) for a in actions] == [Transmit]
    sent = actions[0]
    assert isinstance(sent, Transmit)
    assert decode_packet(sent.packet).advert.advskew == 10
    assert m.state is CarpState.MASTER
    assert m.advert_interval == 1 + 10 / 256


def test_backup_stays_backup_and_uses_the_new_password() -> None:
    m = make(100)
    m.link_up(0.0)
    m.packet_received(0.1, peer_advert())
    assert m.state is CarpState.BACKUP
    deadline = m.next_deadline()
    actions = m.reconfigure(0.2, dataclasses.replace(m.config, advskew=110, password=b"new-pw"))
    assert not any(isinstance(a, StateChanged) for a in actions)
    assert m.state is CarpState.BACKUP
    assert m.next_deadline() == deadline  # the running wait is not restarted
    # the old password is now refused, the new one accepted
    assert [type(a).__name__ for a in m.packet_received(0.3, peer_advert())] == ["CountDrop"]
    m.packet_received(0.4, peer_advert(password=b"new-pw"))
    assert m.state is CarpState.BACKUP
    assert m.master_down_interval == 3 + 110 / 256


def test_addresses_cannot_change_in_place() -> None:
    m = make(0)
    with pytest.raises(ValueError, match="addresses"):
        m.reconfigure(0.0, dataclasses.replace(m.config, vhid=2))
