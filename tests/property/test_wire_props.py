"""The pure byte codecs in carpsim.wire: random bytes only raise DecodeError, and round trips.

pcap/pcapng reader, GARP/Ethernet framing and the ctnetlink message codec. Each decoder meets the
bytes a hostile file or a confused kernel could hand it; the only exception allowed out is
`DecodeError` (the reason is what gets counted).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carpsim.errors import DecodeError
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.wire import ctnetlink as nl
from carpsim.wire.garp import ETH_P_ARP, garp_frame, mac_bytes
from carpsim.wire.pcap import (
    ETHERTYPE_ARP,
    LINKTYPE_ETHERNET,
    Frame,
    PcapError,
    gratuitous_arp_ip,
    network_payload,
    read_frames,
)

_T = TypeVar("_T")
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)
_PCAPNG_SHB = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)


def _reason(decode: Callable[[_T], object], arg: _T) -> str | None:
    """None if `decode(arg)` returns; the DecodeError reason if it raises one (else: fails)."""
    try:
        decode(arg)
    except DecodeError as exc:
        return exc.reason
    return None


def _all_frames(blob: bytes) -> list[Frame]:
    return list(read_frames(blob))


def _pcap(frames: list[tuple[int, int, bytes]]) -> bytes:
    """A classic little-endian microsecond pcap file (a test-side writer, to check the reader)."""
    out = bytearray(_PCAP_HEADER)
    for sec, usec, data in frames:
        out += struct.pack("<IIII", sec, usec, len(data), len(data)) + data
    return bytes(out)


# ---------------------------------------------------------------- pcap / pcapng


@given(st.binary(max_size=400))
def test_pcap_random_bytes_only_raise_decode_error(blob: bytes) -> None:
    try:
        frames = list(read_frames(blob))
    except DecodeError:
        return
    assert all(isinstance(f, Frame) for f in frames)


@given(st.binary(max_size=300))
def test_pcap_random_bodies_after_a_valid_header_only_raise_decode_error(body: bytes) -> None:
    for header in (_PCAP_HEADER, _PCAPNG_SHB):
        assert _reason(_all_frames, header + body) in {None, "badpcap"}


@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999), st.binary(max_size=80)),
        max_size=6,
    )
)
def test_pcap_round_trip_through_a_minimal_writer(frames: list[tuple[int, int, bytes]]) -> None:
    got = list(read_frames(_pcap(frames)))
    assert [(f.linktype, f.data) for f in got] == [(LINKTYPE_ETHERNET, d) for _, _, d in frames]
    for f, (sec, usec, _) in zip(got, frames, strict=True):
        assert f.time == pytest.approx(sec + usec / 1e6)


def test_truncated_pcapng_block_is_a_pcap_error_not_a_struct_error() -> None:
    # An interface description block of the minimum length has no room for its link type.
    idb = struct.pack("<III", 1, 12, 12)
    with pytest.raises(PcapError, match="malformed capture"):
        list(read_frames(_PCAPNG_SHB + idb))


@given(st.integers(0, 300), st.binary(max_size=100))
def test_network_payload_and_arp_parsing_never_raise(linktype: int, data: bytes) -> None:
    payload = network_payload(Frame(0.0, linktype, data))
    if payload is not None:
        gratuitous_arp_ip(payload[1])
    gratuitous_arp_ip(data)


# ---------------------------------------------------------------- GARP framing


@given(st.text(max_size=24))
def test_mac_parser_random_text_only_raises_decode_error(text: str) -> None:
    reason = _reason(mac_bytes, text)
    assert reason in {None, "badmac"}
    if reason is None:
        mac = mac_bytes(text)
        assert len(mac) == 6
        assert mac_bytes(":".join(f"{b:02x}" for b in mac)) == mac


@given(st.binary(min_size=6, max_size=6), st.integers(1, 2**32 - 2))
def test_garp_round_trip_through_the_capture_parser(mac: bytes, vip_int: int) -> None:
    vip = IPv4Address(vip_int)
    frame = garp_frame(mac, vip)
    assert mac_bytes(":".join(f"{b:02x}" for b in mac)) == mac
    assert frame[:6] == b"\xff" * 6
    assert frame[6:12] == mac
    payload = network_payload(Frame(0.0, LINKTYPE_ETHERNET, frame))
    assert payload is not None
    ethertype, arp = payload
    assert ethertype == ETHERTYPE_ARP == ETH_P_ARP
    assert arp[8:14] == mac
    assert gratuitous_arp_ip(arp) == str(vip)


# ---------------------------------------------------------------- ctnetlink


@given(st.binary(max_size=300))
def test_ctnetlink_random_bytes_only_raise_decode_error(blob: bytes) -> None:
    try:
        messages = list(nl.split_messages(blob))
    except DecodeError:
        return
    decoders: list[Callable[[memoryview], object]] = [
        nl.decode_key,
        nl.decode_record,
        nl.decode_stats_entries,
    ]
    for msg in messages:
        _reason(nl.error_code, msg)
        for decode in decoders:
            _reason(decode, msg.payload)


@given(st.binary(max_size=200))
def test_ctnetlink_random_attributes_only_raise_decode_error(body: bytes) -> None:
    payload = memoryview(struct.pack("!BBH", nl.AF_INET, 0, 0) + body)
    decoders: list[Callable[[memoryview], object]] = [
        nl.decode_key,
        nl.decode_record,
        nl.decode_stats_entries,
    ]
    for decode in decoders:
        reason = _reason(decode, payload)
        assert reason in {None, "badlen", "badtuple", "badattr", "badstats"}


@st.composite
def flow_keys(draw: st.DrawFn) -> FlowKey:
    proto = draw(st.sampled_from([nl.IPPROTO_TCP, nl.IPPROTO_UDP, nl.IPPROTO_ICMP, 47, 132]))
    alen = 4 if proto == nl.IPPROTO_ICMP else draw(st.sampled_from([4, 16]))
    addr = st.binary(min_size=alen, max_size=alen)
    if proto == 47:  # no ports on the wire: a GRE key is addresses only
        sport = dport = 0
    else:
        sport, dport = draw(u16), draw(u16)
    return FlowKey(proto, draw(addr), sport, draw(addr), dport, draw(u16))


@st.composite
def records(draw: st.DrawFn) -> StateRecord:
    key = draw(flow_keys())
    return StateRecord(
        key=key,
        tcp_state=draw(st.sampled_from(TcpState)) if key.proto == nl.IPPROTO_TCP else TcpState.NONE,
        timeout=draw(u32),
        status=draw(u32),
        mark=draw(u32),
    )


def _only(blob: bytes) -> nl.NlMessage:
    messages = list(nl.split_messages(blob))
    assert len(messages) == 1
    return messages[0]


@given(flow_keys(), u32)
def test_ctnetlink_key_round_trip(key: FlowKey, seq: int) -> None:
    for blob in (nl.delete_message(key, seq), nl.get_message(key, seq)):
        msg = _only(blob)
        assert msg.seq == seq
        assert nl.decode_key(msg.payload) == key


@given(records(), u32)
def test_ctnetlink_create_and_update_round_trip(record: StateRecord, seq: int) -> None:
    want_status = (record.status & nl.IPS_SYNCABLE) | nl.IPS_CONFIRMED
    for blob in (nl.create_message(record, seq), nl.update_message(record, seq)):
        msg = _only(blob)
        assert msg.msg_type == nl.MSG_NEW
        got = nl.decode_record(msg.payload)
        assert got.key == record.key
        assert got.tcp_state == record.tcp_state
        assert got.timeout == max(1, record.timeout)
        assert got.status == want_status
        assert got.mark == record.mark
        # No NAT in the record: the reply tuple is the plain inverse, which decodes as no NAT.
        assert got.nat_src is None
        assert got.nat_dst is None
