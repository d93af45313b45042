"""CARP codec against hand-computed vectors and the real ucarp captures in tests/vectors/ucarp."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from pathlib import Path

import pytest

from carpsim.cli.describe import describe_vrrp
from carpsim.errors import DecodeError
from carpsim.protocol.codec import (
    CarpAuth,
    build_advert,
    carp_checksum,
    compute_hmac,
    decode_advert,
    decode_packet,
    encode_packet,
    hmac_prefix,
    ip_protocol,
)
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import DropReason
from carpsim.protocol.events import CountDrop
from carpsim.protocol.machine import CarpMachine
from carpsim.wire.pcap import ETHERTYPE_IPV4, network_payload, read_frames

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
UCARP_PASSWORD = b"K33p_It_S3cr3t!"
UCARP_VIP = ip_address("192.168.110.254")

# Computed with Python's hmac per BSD ip_carp.c; the third reproduces a real ucarp advert.
# (password, vhid, vips, counter, advskew, hmac message, md, 36-byte header)
SPEC_VECTORS = [
    (
        b"secret", 1, ["192.168.1.10"], "0000000000000001", 0,
        "020101c0a8010a0000000000000001",
        "d416757ca2aa34518968346969c5ceedd5a1a470",
        "2101000700014dcf0000000000000001d416757ca2aa34518968346969c5ceedd5a1a470",
    ),
    (
        b"secret", 1, ["10.0.0.2", "10.0.0.1"], "0123456789abcdef", 100,
        "0201010a0000010a0000020123456789abcdef",
        "96a61e4185e7e72f72a9c4e9b3cc7313c800d3d1",
        "210164070001c08b0123456789abcdef96a61e4185e7e72f72a9c4e9b3cc7313c800d3d1",
    ),
    (
        b"secret", 7, ["10.99.0.100"], "f0d9c981862b6e8b", 0,
        "0201070a630064f0d9c981862b6e8b",
        "2b4d7d9e2db89f1467abdb5c31927894183d8f25",
        "2107000700012594f0d9c981862b6e8b2b4d7d9e2db89f1467abdb5c31927894183d8f25",
    ),
]  # fmt: skip
UCARP_WIRE = bytes.fromhex(
    "451000386f454000ff70218a0a630001e0000012"
    "2107000700012594f0d9c981862b6e8b2b4d7d9e2db89f1467abdb5c31927894183d8f25"
)


@pytest.mark.parametrize("vec", SPEC_VECTORS, ids=["one-vip", "two-vips-sorted", "ucarp-lab"])
def test_spec_vectors_bit_for_bit(
    vec: tuple[bytes, int, list[str], str, int, str, str, str],
) -> None:
    password, vhid, vips, counter_hex, skew, msg, md, header = vec
    addrs = [ip_address(v) for v in vips]
    counter = bytes.fromhex(counter_hex)
    assert (hmac_prefix(vhid, addrs) + counter).hex() == msg
    assert compute_hmac(password, vhid, addrs, counter).hex() == md
    assert CarpAuth(password, vhid, addrs).sign(counter).hex() == md
    advert = build_advert(
        vhid=vhid,
        advbase=1,
        advskew=skew,
        demote=0,
        counter=counter,
        md=compute_hmac(password, vhid, addrs, counter),
    )
    assert advert.hex() == header


def test_ucarp_reference_packet_reencodes_exactly() -> None:
    advert = build_advert(
        vhid=7,
        advbase=1,
        advskew=0,
        demote=0,
        counter=bytes.fromhex("f0d9c981862b6e8b"),
        md=compute_hmac(
            b"secret", 7, [ip_address("10.99.0.100")], bytes.fromhex("f0d9c981862b6e8b")
        ),
    )
    packet = encode_packet(
        src=IPv4Address("10.99.0.1"),
        dst=IPv4Address("224.0.0.18"),
        ip_id=0x6F45,
        advert_bytes=advert,
    )
    assert packet == UCARP_WIRE
    pkt = decode_packet(packet)
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.tos, pkt.ip_id) == (
        IPv4Address("10.99.0.1"),
        IPv4Address("224.0.0.18"),
        255,
        0x10,
        0x6F45,
    )
    adv = pkt.advert
    assert (adv.version, adv.type, adv.vhid, adv.advskew, adv.authlen) == (2, 1, 7, 0, 7)
    assert (adv.demote, adv.advbase, adv.checksum) == (0, 1, 0x2594)
    assert adv.interval == 1.0
    assert pkt.carp_bytes == UCARP_WIRE[20:]


def test_password_is_truncated_to_19_bytes_like_bsd() -> None:
    counter = bytes(8)
    vips = [ip_address("10.0.0.1")]
    long_pw = b"A" * 19 + b"tail-that-bsd-drops"
    assert compute_hmac(long_pw, 1, vips, counter) == compute_hmac(b"A" * 19, 1, vips, counter)


def test_ipv6_link_local_variants() -> None:
    v4 = ip_address("10.0.0.1")
    ll = ip_address("fe80::1")
    glob = ip_address("2001:db8::1")
    assert isinstance(ll, IPv6Address)
    prefix = hmac_prefix(3, [glob, ll, v4])
    assert prefix == b"\x02\x01\x03" + v4.packed + glob.packed
    with_ll = hmac_prefix(3, [glob, ll, v4], include_link_local=True)
    assert with_ll == b"\x02\x01\x03" + v4.packed + glob.packed + ll.packed  # memcmp order
    counter = bytes(range(8))
    auth = CarpAuth(b"pw", 3, [ip_interface("fe80::1/64"), glob, v4])
    freebsd_md = compute_hmac(b"pw", 3, [ll, glob, v4], counter, include_link_local=True)
    assert auth.verify(counter, auth.sign(counter))
    assert auth.verify(counter, freebsd_md)
    assert not auth.verify(counter, bytes(20))


def _capture_packets(name: str) -> list[tuple[float, bytes]]:
    path = VECTORS / "ucarp" / name
    assert path.is_file(), f"vendored vector missing: {path}"
    out = []
    for frame in read_frames(path.read_bytes()):
        l3 = network_payload(frame)
        if l3 and l3[0] == ETHERTYPE_IPV4 and ip_protocol(l3[1]) == 112:
            out.append((frame.time, l3[1]))
    return out


@pytest.mark.parametrize("name", ["ucarp-steady.pcap", "ucarp-failover-kill.pcap"])
def test_every_ucarp_advert_verifies(name: str) -> None:
    packets = _capture_packets(name)
    assert len(packets) >= 4
    auth = CarpAuth(UCARP_PASSWORD, 1, [UCARP_VIP])
    for _, data in packets:
        pkt = decode_packet(data)  # checksum, ttl, version checked here
        assert pkt.advert.vhid == 1
        assert auth.verify(pkt.advert.counter, pkt.advert.md)
        assert compute_hmac(UCARP_PASSWORD, 1, [UCARP_VIP], pkt.advert.counter) == pkt.advert.md
        assert str(pkt.src) in {"192.168.110.251", "192.168.110.252"}


def test_failover_capture_shows_both_skews() -> None:
    packets = _capture_packets("ucarp-failover-kill.pcap")
    skews = {decode_packet(d).advert.advskew for _, d in packets}
    assert skews == {0, 100}


def _fix_carp_checksum(packet: bytearray) -> None:
    packet[26:28] = b"\x00\x00"
    packet[26:28] = carp_checksum(bytes(packet[20:56])).to_bytes(2, "big")


def test_one_byte_corruptions_give_the_right_reason() -> None:
    data = _capture_packets("ucarp-steady.pcap")[0][1]
    bad_ttl = bytearray(data)
    bad_ttl[8] = 64
    with pytest.raises(DecodeError) as err:
        decode_packet(bytes(bad_ttl))
    assert err.value.reason == DropReason.BADTTL

    for offset in (26, 27):
        bad_sum = bytearray(data)
        bad_sum[offset] ^= 0x01
        with pytest.raises(DecodeError) as err:
            decode_packet(bytes(bad_sum))
        assert err.value.reason == DropReason.BADSUM

    bad_ver = bytearray(data)
    bad_ver[20] = 0x11  # version 1; checksum fixed so the version check is reached
    _fix_carp_checksum(bad_ver)
    with pytest.raises(DecodeError) as err:
        decode_packet(bytes(bad_ver))
    assert err.value.reason == DropReason.BADVER

    unfixed = bytearray(data)
    unfixed[20] = 0x11  # OpenBSD checks the checksum before the version
    with pytest.raises(DecodeError) as err:
        decode_packet(bytes(unfixed))
    assert err.value.reason == DropReason.BADSUM

    with pytest.raises(DecodeError) as err:
        decode_packet(data[:40])
    assert err.value.reason == DropReason.BADLEN


def test_corrupt_md_is_badauth_in_the_machine() -> None:
    data = _capture_packets("ucarp-steady.pcap")[0][1]
    config = CarpConfig(
        vhid=1,
        vips=(ip_interface("192.168.110.254/24"),),
        srcip=IPv4Address("192.168.110.252"),
        password=UCARP_PASSWORD,
        advskew=100,
    )
    machine = CarpMachine(config, random.Random(0))
    machine.link_up(0.0)
    assert not any(
        isinstance(a, CountDrop) for a in machine.packet_received(0.5, decode_packet(data))
    )
    for offset in range(36, 56):
        bad = bytearray(data)
        bad[offset] ^= 0x80
        _fix_carp_checksum(bad)
        actions = machine.packet_received(1.0, decode_packet(bytes(bad)))
        assert actions == [CountDrop(1, DropReason.BADAUTH, "from 192.168.110.251")]


def test_vrrp_is_not_carp_and_not_badver() -> None:
    # VRRPv2, one address, auth none: 20 bytes of payload starting 0x21 like CARP.
    vrrp2 = bytes.fromhex("21 05 64 01 00 01 0000 c0a80a01 0000000000000000".replace(" ", ""))
    vrrp3 = bytes.fromhex("31 05 64 01 0064 0000 c0a80a01".replace(" ", ""))
    for payload, version in ((vrrp2, 2), (vrrp3, 3)):
        packet = _ip_wrap(payload)
        with pytest.raises(DecodeError) as err:
            decode_packet(packet)
        assert err.value.reason == DropReason.NOT_CARP
        info = describe_vrrp(packet)
        assert info is not None
        assert (info["type"], info["version"], info["vrid"], info["priority"]) == (
            "vrrp",
            version,
            5,
            100,
        )
        assert info["addresses"] == ["192.168.10.1"]
    with pytest.raises(DecodeError) as err:
        decode_advert(vrrp3 + bytes(30))
    assert err.value.reason == DropReason.NOT_CARP
    assert describe_vrrp(UCARP_WIRE) is None


def test_truncated_carp_advert_is_badlen_not_vrrp() -> None:
    # A CARP advert cut short still carries authlen 7 in byte 3; it is a damaged advert.
    carp = UCARP_WIRE[20:]
    for cut in (4, 20, 35):
        with pytest.raises(DecodeError) as err:
            decode_packet(_ip_wrap(carp[:cut]))
        assert err.value.reason == DropReason.BADLEN, cut
    with pytest.raises(DecodeError) as err:
        decode_packet(_ip_wrap(carp[:3]))
    assert err.value.reason == DropReason.BADLEN


def test_other_ip_protocols_are_not_carp() -> None:
    packet = bytearray(UCARP_WIRE)
    packet[9] = 240  # pfsync
    with pytest.raises(DecodeError) as err:
        decode_packet(bytes(packet))
    assert err.value.reason == DropReason.NOT_CARP
    assert ip_protocol(bytes(packet)) == 240


def _ip_wrap(payload: bytes) -> bytes:
    return encode_packet(
        src=IPv4Address("192.168.10.2"),
        dst=IPv4Address("224.0.0.18"),
        ip_id=1,
        advert_bytes=payload,
    )


def test_bow_out_interval() -> None:
    advert = build_advert(
        vhid=1,
        advbase=255,
        advskew=255,
        demote=0,
        counter=bytes(8),
        md=compute_hmac(b"", 1, [UCARP_VIP], bytes(8)),
    )
    decoded = decode_advert(advert)
    assert decoded.is_bow_out
    assert decoded.interval == 255 + 255 / 256
