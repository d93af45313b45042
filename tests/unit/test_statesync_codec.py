"""pfsync v5 codec: exact byte layout of the 1400 state, frame structure, every decode reason."""

from __future__ import annotations

import struct

import pytest

from carpsim.cli.describe import describe_frame
from carpsim.errors import DecodeError
from carpsim.statesync import codec
from carpsim.statesync.codec import (
    BulkStatus,
    Clear,
    CompressedUpdate,
    Frame,
    NackRange,
    RawRecord,
    Section,
    SeqHeader,
    StateRef,
    decode_frame,
    encode_frame,
    pack_state,
    unpack_state,
)
from carpsim.statesync.constants import Act, BusStatus, PfTcpLevel, SyncDropReason
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

CLIENT = bytes([192, 168, 110, 10])
SERVER = bytes([203, 0, 113, 10])
WAN_VIP = bytes([192, 168, 100, 254])

REC = StateRecord(
    key=FlowKey(6, CLIENT, 40000, SERVER, 443, zone=3),
    creatorid=0x0A0B0C0D,
    id=0x1122334455667788,
    nat_src=(WAN_VIP, 61000),
    tcp_state=TcpState.ESTABLISHED,
    timeout=431999,
    status=0x19E,
    mark=7,
    packets=((5 << 32) | 9, 11),
    bytes_=(1000, (1 << 40) + 3),
)


def test_state_1400_byte_layout() -> None:
    b = pack_state(REC)
    assert len(b) == 277
    assert b[0:8] == (0x1122334455667788).to_bytes(8, "big")
    assert b[8:24] == bytes(16)  # ifname: floating state
    # key[0] = wire side (after SNAT): addr[0], addr[1], port[0], port[1]
    assert b[24:28] == WAN_VIP
    assert b[28:40] == bytes(12)
    assert b[40:44] == SERVER
    assert struct.unpack("!HH", b[56:60]) == (61000, 443)
    # key[1] = stack side (original tuple)
    assert b[60:64] == CLIENT
    assert b[76:80] == SERVER
    assert struct.unpack("!HH", b[92:96]) == (40000, 443)
    # peers: state byte at +24, scrub_flag 0 at +3 (pf ignores ts_mod: our status / mark)
    assert (b[96 + 24], b[128 + 24]) == (PfTcpLevel.ESTABLISHED, PfTcpLevel.ESTABLISHED)
    assert b[96 + 3] == 0
    assert struct.unpack("!I", b[100:104]) == (0x19E,)
    assert struct.unpack("!I", b[132:136]) == (7,)
    assert struct.unpack("!III", b[176:188]) == (0xFFFFFFFF,) * 3  # rule/anchor/nat_rule: none
    assert struct.unpack("!II", b[188:196]) == (0, 431999)  # creation, expire
    assert struct.unpack("!IIII", b[196:212]) == (5, 9, 0, 11)  # 64-bit counters as hi/lo
    assert struct.unpack("!I", b[228:232]) == (0x0A0B0C0D,)
    assert (b[232], b[233], b[234]) == (2, 6, 2)  # AF_INET, TCP, PF_OUT (NATed outbound)
    assert b[239] == 2  # PFTM_TCP_ESTABLISHED
    assert struct.unpack("!i", b[250:254]) == (3,)  # zone in rtableid


def test_state_roundtrip_ipv4_and_ipv6() -> None:
    assert unpack_state(pack_state(REC)) == REC
    v6 = StateRecord(
        key=FlowKey(17, bytes(range(16)), 53, bytes(range(16, 32)), 5353),
        creatorid=1,
        id=2,
        nat_dst=(bytes(range(32, 48)), 53),
        timeout=30,
    )
    b = pack_state(v6)
    assert b[232] == 28  # FreeBSD AF_INET6
    assert b[234] == 1  # PF_IN: no source NAT
    assert unpack_state(b) == v6


def test_every_tcp_state_survives_the_peer_mapping() -> None:
    for st in TcpState:
        rec = StateRecord(key=REC.key, creatorid=1, id=1, tcp_state=st)
        assert unpack_state(pack_state(rec)).tcp_state is st


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        (PfTcpLevel.ESTABLISHED, PfTcpLevel.FIN_WAIT_2, TcpState.CLOSE_WAIT),
        (PfTcpLevel.FIN_WAIT_2, PfTcpLevel.LAST_ACK, TcpState.LAST_ACK),
        (PfTcpLevel.TIME_WAIT, PfTcpLevel.CLOSED, TcpState.TIME_WAIT),
        (PfTcpLevel.SYN_SENT, PfTcpLevel.LISTEN, TcpState.SYN_SENT),
        (PfTcpLevel.PROXY_SRC, PfTcpLevel.CLOSED, TcpState.ESTABLISHED),
        (PfTcpLevel.CLOSING, PfTcpLevel.ESTABLISHED, TcpState.FIN_WAIT),
    ],
)
def test_foreign_peer_pairs_map_to_a_plausible_state(
    src: int, dst: int, expected: TcpState
) -> None:
    assert codec.peers_to_tcp(src, dst) is expected


def _all_sections_frame() -> Frame:
    return Frame(
        (
            Section(Act.XSEQ, (SeqHeader(0xDEADBEEF, 7, 3, 0x01020304, 5, 2),)),
            Section(Act.XNACK, (NackRange(1, 2), NackRange(4, 4))),
            Section(Act.CLR, (Clear(9, "em0"),)),
            Section(Act.INS, (REC,)),
            Section(Act.UPD, (REC, REC)),
            Section(Act.UPD_C, (CompressedUpdate(1, 2, TcpState.FIN_WAIT, 120, 0x8, 1),)),
            Section(Act.UPD_REQ, (StateRef(0, 0),)),
            Section(Act.DEL_C, (StateRef(1, 2), StateRef(3, 4))),
            Section(Act.INS_ACK, (StateRef(5, 6),)),
            Section(Act.BUS, (BulkStatus(9, 3, BusStatus.END),)),
        ),
        bytes(range(16)),
    )


def test_frame_roundtrip_and_structure() -> None:
    frame = _all_sections_frame()
    data = encode_frame(frame)
    assert data[0] == 5
    assert struct.unpack("!H", data[2:4]) == (len(data),)
    assert data[4:20] == bytes(range(16))
    assert data[-4:] == bytes([12, 0, 0, 0])  # EOF
    assert data[20] == 0xF0  # XSEQ first
    assert data[21] == 24 // 4  # extension subheaders carry record length / 4
    assert decode_frame(data) == frame


def test_skips_1301_records_as_raw() -> None:
    raw = bytes(range(242))
    data = codec.assemble([codec.section_bytes(Act.UPD_1301, [raw])])
    assert decode_frame(data).sections == (Section(Act.UPD_1301, (RawRecord(raw),)),)


def _header(total: int, cksum: bytes) -> bytes:
    """A version-5 pfsync header claiming `total` bytes (to build malformed frames)."""
    return struct.pack("!BBH16s", 5, 0, total, cksum)


def _good() -> bytes:
    return encode_frame(Frame((Section(Act.INS, (REC,)),)))


def _with_state_byte(offset: int, value: int) -> bytes:
    data = bytearray(_good())
    data[20 + 4 + offset] = value
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x05\x00\x00", "badlen"),
        (bytes([6]) + _good()[1:], "badver"),
        (_good()[:-10], "badlen"),  # header len beyond packet
        (_header(28, bytes(16)) + bytes([99, 0, 0, 1, 0, 0, 0, 0]), "badact"),
        (_header(20, bytes(16)), "noeof"),
        (_header(24, bytes(16)) + bytes([13, 0, 0, 1]), "badlen"),
        (_with_state_byte(232, 7), "badaf"),
        (_with_state_byte(234, 0), "baddir"),
        (_with_state_byte(96 + 24, 13), "badstate"),
        (_with_state_byte(239, 22), "badtimeout"),
        (
            codec.assemble([codec.section_bytes(Act.BUS, [struct.pack("!IIB3x", 1, 0, 3)])]),
            "badbus",
        ),
        (
            codec.assemble([codec.section_bytes(Act.XSEQ, [bytes(24), bytes(24)])]),
            "badext",
        ),
        (
            codec.assemble(
                [
                    codec.section_bytes(Act.DEL_C, [bytes(12)]),
                    codec.section_bytes(Act.XSEQ, [bytes(24)]),
                ]
            ),
            "badext",
        ),
        (codec.assemble([codec.encode_nacks([NackRange(5, 4)])]), "badext"),
    ],
)
def test_decode_errors_carry_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_frame(data)
    assert exc.value.reason == reason


def test_every_single_byte_mutation_decodes_or_raises_decode_error() -> None:
    good = encode_frame(_all_sections_frame())
    outcomes = set()
    for i in range(len(good)):
        for val in (0x00, 0xFF, good[i] ^ 0x01):
            data = good[:i] + bytes([val]) + good[i + 1 :]
            try:
                decode_frame(data)
                outcomes.add("ok")
            except DecodeError as exc:
                outcomes.add(exc.reason)
    assert "ok" in outcomes
    assert {"badver", "badact", "badlen"} <= outcomes


def test_describe_frame_strips_an_ipv4_header_and_reports_errors() -> None:
    payload = encode_frame(_all_sections_frame())
    ip = (
        bytes([0x45, 0, 0, 0, 0, 0, 0x40, 0, 255, 240, 0, 0])
        + bytes([172, 16, 1, 5])
        + bytes([224, 0, 0, 240])
    )
    d = describe_frame(ip + payload)
    assert d["protocol"] == "pfsync"
    sections = d["sections"]
    assert isinstance(sections, list)
    assert [s["action"] for s in sections][:4] == ["XSEQ", "XNACK", "CLR", "INS"]
    ins = sections[3]["items"][0]
    assert ins["src"] == "192.168.110.10:40000"
    assert ins["nat_src"] == "192.168.100.254:61000"
    assert ins["tcp_state"] == "ESTABLISHED"
    assert describe_frame(b"\x06" + payload[1:]) == {
        "protocol": "pfsync",
        "error": "badver",
        "detail": "version 6",
    }


def _ipv4(
    payload: bytes, *, ttl: int = 255, proto: int = 240, ihl: int = 5, total: int = 0
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0x10,
        total or max(20, 4 * ihl) + len(payload),
        1,
        0x4000,
        ttl,
        proto,
        0,
        bytes([172, 16, 1, 5]),
        bytes([224, 0, 0, 240]),
    )
    return header + bytes(max(0, 4 * ihl - 20)) + payload


def test_decode_packet_strips_the_ip_header_and_options() -> None:
    payload = _good()
    pkt = codec.decode_packet(_ipv4(payload))
    assert pkt.payload == payload
    assert pkt.src == bytes([172, 16, 1, 5])
    assert pkt.dst == bytes([224, 0, 0, 240])
    assert codec.decode_packet(_ipv4(payload, ihl=6)).payload == payload


@pytest.mark.parametrize(
    ("packet", "reason", "detail"),
    [
        (bytes(19), "badlen", "19-byte packet"),
        (b"\x65" + _ipv4(b"x")[1:], "badver", "IP version 6"),
        (_ipv4(b"", ihl=4), "badlen", "IPv4 ihl 16 total length 20, got 20"),
        (_ipv4(b"abc", total=40), "badlen", "IPv4 ihl 20 total length 40, got 23"),
        (_ipv4(b"abc", proto=112), "badproto", "IP protocol 112"),
        (_ipv4(b"abc", ttl=64), "badttl", "ttl 64 from 172.16.1.5"),
    ],
)
def test_decode_packet_reasons(packet: bytes, reason: str, detail: str) -> None:
    with pytest.raises(DecodeError) as exc:
        codec.decode_packet(packet)
    assert exc.value.reason == reason
    assert exc.value.detail == detail
    assert SyncDropReason(exc.value.reason) == reason  # every reason is one enum's member


def test_decode_packet_ttl_check_can_be_skipped_for_captures() -> None:
    assert codec.decode_packet(_ipv4(b"abc", ttl=1), check_ttl=False).payload == b"abc"


def test_pack_frames_fills_to_the_budget_and_keeps_group_order() -> None:
    refs = codec.encode_refs([(1, i) for i in range(1, 8)])
    states = [pack_state(REC)] * 3
    budget = 4 + 12 * 7 + 4 + 276  # the 7 refs fit, a state after them does not (by 1 byte)
    bodies = codec.pack_frames([(Act.DEL_C, refs), (Act.INS, states)], budget)
    assert all(len(b) <= budget for b in bodies)
    frames = [decode_frame(codec.assemble([b])) for b in bodies]
    got = [[(s.action, len(s.items)) for s in f.sections] for f in frames]
    assert got == [[(Act.DEL_C, 7)], [(Act.INS, 1)], [(Act.INS, 1)], [(Act.INS, 1)]]
    assert frames[0].sections[0].items == tuple(StateRef(1, i) for i in range(1, 8))
    bigger = codec.pack_frames([(Act.DEL_C, refs), (Act.INS, states)], budget + 1)
    assert [len(decode_frame(codec.assemble([b])).sections) for b in bigger] == [2, 1, 1]


def test_encoders_round_trip_through_the_decoder() -> None:
    hdr = SeqHeader(7, 9, 3, 11, 8, 0x02)
    body = [
        codec.encode_seq(hdr),
        codec.encode_nacks([NackRange(1, 2), NackRange(5, 5)]),
        codec.encode_bus(0xA1, 3, BusStatus.END),
    ]
    frame = decode_frame(codec.assemble(body))
    assert frame.sections == (
        Section(Act.XSEQ, (hdr,)),
        Section(Act.XNACK, (NackRange(1, 2), NackRange(5, 5))),
        Section(Act.BUS, (BulkStatus(0xA1, 3, BusStatus.END),)),
    )
