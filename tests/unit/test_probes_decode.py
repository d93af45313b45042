"""The advert capture's frame decoder goes through the CARP codec (no second decoder)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, ip_address

from carpsim.lab.probes import Advert, decode_advert
from carpsim.protocol.codec import build_advert, compute_hmac, encode_packet, ipv4_header_checksum

MACS = bytes.fromhex("01005e000012") + bytes.fromhex("00005e000101")
SRC, DST = IPv4Address("192.168.110.251"), IPv4Address("224.0.0.18")


def eth(ip: bytes) -> bytes:
    return MACS + b"\x08\x00" + ip


def carp_frame(advbase: int, advskew: int, ttl: int = 255) -> bytes:
    counter = b"\x01" * 8
    md = compute_hmac(b"pw", 3, [ip_address("192.168.110.254")], counter)
    body = build_advert(vhid=3, advbase=advbase, advskew=advskew, demote=0, counter=counter, md=md)
    return eth(encode_packet(src=SRC, dst=DST, ip_id=1, advert_bytes=body, ttl=ttl))


def vrrp_frame(payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 255, 112, 0,
                       SRC.packed, DST.packed)  # fmt: skip
    cksum = ipv4_header_checksum(head)
    return eth(head[:10] + cksum.to_bytes(2, "big") + head[12:] + payload)


def test_carp_advert_fields_and_interval() -> None:
    adv = decode_advert(carp_frame(1, 100), 5.0, "lan0")
    assert adv == Advert(
        5.0, "lan0", "00:00:5e:00:01:01", str(SRC), str(DST), "carp", 3,
        advbase=1, advskew=100, interval=1 + 100 / 256,
    )  # fmt: skip
    sub = decode_advert(carp_frame(0, 0), 0.0, "lan0")
    assert sub is not None
    assert sub.interval == 1 / 256


def test_a_rewritten_ttl_is_still_an_advert_on_the_wire() -> None:
    adv = decode_advert(carp_frame(1, 0, ttl=64), 0.0, "lan0")
    assert adv is not None
    assert adv.kind == "carp"


def test_vrrp_v2_and_v3() -> None:
    v2 = bytes([0x21, 9, 150, 1, 0, 2, 0, 0]) + bytes([192, 168, 110, 254]) + bytes(8)
    adv2 = decode_advert(vrrp_frame(v2), 0.0, "lan0")
    assert adv2 is not None
    assert (adv2.kind, adv2.vhid, adv2.priority, adv2.interval) == ("vrrp2", 9, 150, 2.0)
    v3 = bytes([0x31, 4, 200, 1]) + (100).to_bytes(2, "big") + bytes(2) + bytes([10, 0, 0, 1])
    adv3 = decode_advert(vrrp_frame(v3), 0.0, "lan0")
    assert adv3 is not None
    assert (adv3.kind, adv3.vhid, adv3.priority, adv3.interval) == ("vrrp3", 4, 200, 1.0)


def test_anything_else_is_none() -> None:
    assert decode_advert(MACS + b"\x86\xdd" + bytes(60), 0.0, "lan0") is None
    assert decode_advert(carp_frame(1, 0)[:30], 0.0, "lan0") is None
    assert decode_advert(b"", 0.0, "lan0") is None
