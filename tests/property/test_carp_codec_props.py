"""Hypothesis: CARP encode/decode round-trips, and arbitrary bytes only raise DecodeError."""

from __future__ import annotations

import contextlib
import random
from ipaddress import IPv4Address, ip_interface

from hypothesis import given
from hypothesis import strategies as st

from carpsim.cli.describe import describe_vrrp
from carpsim.errors import DecodeError
from carpsim.protocol.codec import (
    CarpAuth,
    build_advert,
    compute_hmac,
    decode_advert,
    decode_packet,
    encode_packet,
)
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.events import CountDrop
from carpsim.protocol.group import CarpGroup
from carpsim.protocol.machine import CarpMachine

ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(
    vhid=st.integers(1, 255),
    advbase=st.integers(0, 255),
    advskew=st.integers(0, 255),
    demote=st.integers(0, 255),
    counter=st.binary(min_size=8, max_size=8),
    password=st.binary(max_size=19),
    vips=st.lists(ipv4, min_size=1, max_size=4),
    src=ipv4,
    dst=ipv4,
    ip_id=st.integers(0, 0xFFFF),
)
def test_encode_decode_round_trip(
    vhid: int,
    advbase: int,
    advskew: int,
    demote: int,
    counter: bytes,
    password: bytes,
    vips: list[IPv4Address],
    src: IPv4Address,
    dst: IPv4Address,
    ip_id: int,
) -> None:
    body = build_advert(
        vhid=vhid,
        advbase=advbase,
        advskew=advskew,
        demote=demote,
        counter=counter,
        md=compute_hmac(password, vhid, vips, counter),
    )
    assert len(body) == 36
    pkt = decode_packet(encode_packet(src=src, dst=dst, ip_id=ip_id, advert_bytes=body))
    adv = pkt.advert
    assert (pkt.src, pkt.dst, pkt.ip_id, pkt.ttl, pkt.tos) == (src, dst, ip_id, 255, 0x10)
    assert (adv.version, adv.type, adv.authlen) == (2, 1, 7)
    assert (adv.vhid, adv.advbase, adv.advskew, adv.demote) == (vhid, advbase, advskew, demote)
    assert adv.counter == counter
    assert pkt.carp_bytes == body
    assert decode_advert(body) == adv
    assert CarpAuth(password, vhid, list(reversed(vips))).verify(counter, adv.md)


@given(st.binary(max_size=120))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    for decode in (decode_packet, decode_advert):
        with contextlib.suppress(DecodeError):
            decode(data)
    describe_vrrp(data)


@given(st.binary(min_size=56, max_size=80), st.integers(0, 55), st.integers(0, 255))
def test_mutated_ip_packets_only_raise_decode_error(data: bytes, pos: int, value: int) -> None:
    header = bytes.fromhex("4510003800004000ff700000c0a86efbe0000012")
    mutated = bytearray(header + data[20:])
    mutated[pos] = value
    with contextlib.suppress(DecodeError):
        decode_packet(bytes(mutated))


@given(st.binary(max_size=100))
def test_group_turns_garbage_into_count_drop(data: bytes) -> None:
    config = CarpConfig(vhid=1, vips=(ip_interface("10.0.0.1/24"),), srcip=IPv4Address("10.0.0.2"))
    group = CarpGroup([CarpMachine(config, random.Random(0))])
    group.link_up(0.0)
    actions = group.packet_received(1.0, data)
    assert all(isinstance(a, CountDrop) for a in actions)
