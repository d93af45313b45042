"""The failover codec against a real ISC dhcpd 4.4 pair's TCP streams, plus unit rules."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.dhcp.failover import codec
from carpsim.dhcp.failover.codec import (
    BndAck,
    BndUpd,
    Connect,
    ConnectAck,
    State,
    StreamFramer,
)
from carpsim.dhcp.failover.constants import FailoverState, MessageType
from carpsim.errors import DecodeError
from carpsim.wire.pcap import network_payload, read_frames

PCAP = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd" / "failover-only.pcap"
PRIMARY, SECONDARY = "192.168.110.2", "192.168.110.3"


def tcp_streams() -> dict[tuple[str, int, str, int], list[tuple[int, bytes]]]:
    """Per direction: (frame number, payload) in sequence order, checked contiguous."""
    streams: dict[tuple[str, int, str, int], list[tuple[int, int, bytes]]] = {}
    for number, frame in enumerate(read_frames(PCAP.read_bytes()), 1):
        l3 = network_payload(frame)
        assert l3 is not None
        ip = l3[1]
        ihl, total = (ip[0] & 15) * 4, struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack_from(">HHI", tcp)
        payload = tcp[(tcp[12] >> 4) * 4 :]
        key = (str(IPv4Address(ip[12:16])), sport, str(IPv4Address(ip[16:20])), dport)
        streams.setdefault(key, []).append((seq, number, payload))
    out: dict[tuple[str, int, str, int], list[tuple[int, bytes]]] = {}
    for key, segs in streams.items():
        segs.sort()
        for (seq, _n, data), (nxt, _m, _d) in itertools.pairwise(segs):
            assert seq + len(data) == nxt, f"gap in {key}"
        out[key] = [(n, d) for _s, n, d in segs]
    return out


def raw_messages(stream: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Cut a reassembled stream on the length field, noting the frame each message ends in."""
    buf, ends = b"", []
    for number, data in stream:
        buf += data
        ends.append((len(buf), number))
    out, pos = [], 0
    while pos < len(buf):
        length = struct.unpack_from(">H", buf, pos)[0]
        frame = next(n for end, n in ends if end >= pos + length)
        out.append((frame, buf[pos : pos + length]))
        pos += length
    assert pos == len(buf)
    return out


STREAMS = tcp_streams()
ALL = [(key, frame, raw) for key, s in STREAMS.items() for frame, raw in raw_messages(s)]


def test_capture_has_five_connections_both_ways() -> None:
    assert len(STREAMS) == 10
    assert sum(1 for k in STREAMS if k[3] == 520 and k[0] == PRIMARY) == 4
    assert sum(1 for k in STREAMS if k[3] == 519 and k[0] == SECONDARY) == 1


def test_every_message_decodes_and_reencodes_bit_exact() -> None:
    assert len(ALL) == 898
    for _key, frame, raw in ALL:
        msg = codec.decode(raw)
        assert codec.encode(msg) == raw, (frame, msg)


def test_message_counts_match_the_capture() -> None:
    counts = Counter(codec.decode(raw).name for _k, _f, raw in ALL)
    assert counts == {
        "BNDUPD": 410, "BNDACK": 410, "CONTACT": 27, "STATE": 29, "CONNECT": 5,
        "CONNECTACK": 5, "UPDREQALL": 5, "UPDDONE": 5, "UPDREQ": 2,
    }  # fmt: skip
    # The tshark summary: every CONNECT from the primary, every CONNECTACK from the secondary.
    for key, _f, raw in ALL:
        kind = codec.decode(raw).TYPE
        if kind is MessageType.CONNECT:
            assert key[0] == PRIMARY
        if kind is MessageType.CONNECTACK:
            assert key[0] == SECONDARY


# tshark 4.0.17's names, with its 7/9 swap undone (dhcpd's logs prove 7 = UPDREQALL).
TSHARK_NAMES = {
    "Connect": "CONNECT", "Connect acknowledge": "CONNECTACK", "State": "STATE",
    "Update request": "UPDREQALL", "Update request all": "UPDREQ", "Update done": "UPDDONE",
    "Binding update": "BNDUPD", "Binding acknowledge": "BNDACK", "Contact": "CONTACT",
}  # fmt: skip


def test_each_frame_agrees_with_tsharks_summary() -> None:
    """tshark's Info column names the last message of each frame, with its xid."""
    summary = (PCAP.parent / "failover-only.tshark.txt").read_text().splitlines()
    last: dict[int, codec.Message] = {}
    for _key, frame, raw in ALL:
        last[frame] = codec.decode(raw)
    assert len(summary) == len(last) == 128
    for line in summary:
        number = int(line.split()[0])
        info = line.split("DHCPFO ", 1)[1].split(" ", 1)[1]
        name, xid = info.rsplit(" xid: ", 1)
        msg = last[number]
        assert (msg.name, msg.xid) == (TSHARK_NAMES[name], int(xid, 16)), line


def test_first_bring_up_sequence_and_sizes() -> None:
    first_p = next(v for k, v in STREAMS.items() if k[0] == PRIMARY)
    first_s = next(v for k, v in STREAMS.items() if k[0] == SECONDARY)
    p = raw_messages(first_p)
    s = raw_messages(first_s)
    connect = codec.decode(p[0][1])
    assert isinstance(connect, Connect)
    assert (p[0][0], len(p[0][1])) == (1, 110)
    assert connect.relationship_name == "dhcp_lan"
    assert (connect.max_unacked, connect.receive_timer, connect.mclt) == (10, 10, 30)
    assert connect.vendor_class == "isc-4.4.3-P1"
    assert (connect.protocol_version, connect.tls_request) == (1, 0)
    assert connect.hba == b"\xff" * 16 + b"\x00" * 16
    # Frame 2: CONNECTACK (66) + STATE (30) in one segment.
    assert [(f, codec.decode(r).name, len(r)) for f, r in s[:2]] == [
        (2, "CONNECTACK", 66),
        (2, "STATE", 30),
    ]
    state = codec.decode(s[1][1])
    assert isinstance(state, State)
    assert (state.server_state, state.server_flags) == (FailoverState.RECOVER, 1)
    # Frame 3: STATE (startup flag) + STATE + UPDREQALL.
    assert [(f, codec.decode(r).name) for f, r in p[1:4]] == [
        (3, "STATE"), (3, "STATE"), (3, "UPDREQALL"),
    ]  # fmt: skip
    assert [codec.decode(r).server_flags for _f, r in p[1:3]] == [1, 0]  # type: ignore[attr-defined]


def test_bndupd_and_bndack_shapes() -> None:
    sizes = Counter((codec.decode(r).name, len(r)) for _k, _f, r in ALL)
    assert sizes[("BNDACK", 20)] > 0
    assert sizes[("BNDACK", 82)] > 0
    assert sizes[("CONTACT", 12)] == 27
    actives = [codec.decode(r) for _k, f, r in ALL if f == 39 and codec.decode(r).name == "BNDUPD"]
    assert len(actives) == 1
    upd = actives[0]
    assert isinstance(upd, BndUpd)
    assert upd.binding_status == 2
    assert upd.chaddr == b"\x01\x02\x00\x00\x00\x01\x02"
    assert upd.lease_expiration is not None
    assert upd.potential_expiration is not None
    assert upd.lease_expiration - upd.time == 30  # capped at MCLT
    assert upd.potential_expiration - upd.time == 600 + 15
    assert len(codec.encode(upd)) == 68
    rejects = [
        codec.decode(r) for _k, _f, r in ALL if len(r) == 82 and codec.decode(r).name == "BNDACK"
    ]
    assert all(isinstance(m, BndAck) and m.reject_reason == 16 for m in rejects)
    assert len(rejects) == 102


def test_framer_matches_segment_by_segment_and_byte_by_byte() -> None:
    for stream in STREAMS.values():
        expected = [codec.decode(r) for _f, r in raw_messages(stream)]
        framer = StreamFramer()
        got = []
        for _n, data in stream:
            msgs, err = framer.feed(data)
            assert err is None
            got += msgs
            assert framer.buffered < 2048
        assert got == expected
        framer = StreamFramer()
        one: list[codec.Message] = []
        for byte in b"".join(d for _n, d in stream)[:3000]:
            msgs, err = framer.feed(bytes([byte]))
            assert err is None
            one += msgs
        assert one == expected[: len(one)]
        assert len(one) >= 1


def header(length: int, mtype: int, offset: int = 12) -> bytes:
    return struct.pack(">HBBII", length, mtype, offset, 0, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (header(11, 11)[:11], "truncated"),
        (header(11, 11) + b"\x00", "short_length"),
        (struct.pack(">H", 2049) + b"\x00" * 2047, "long_length"),
        (header(12, 13), "bad_type"),
        (header(12, 0), "bad_type"),
        (header(12, 11, offset=8), "bad_offset"),
        (header(15, 10) + b"\x00\x18\x00", "truncated_option"),
        (header(17, 10) + b"\x00\x18\x00\x02\x06", "truncated_option"),
        (header(22, 10) + b"\x00\x18\x00\x01\x02" + b"\x00\x18\x00\x01\x02", "duplicate_option"),
        (header(18, 10) + b"\x00\x18\x00\x02\x02\x00", "bad_option_length"),
        (header(20, 3) + b"\x00\x02\x00\x04\x0a\x00\x00", "bad_length"),
    ],
)
def test_isc_receive_rules(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == reason


def test_unknown_and_foreign_options_are_skipped() -> None:
    # option 200 (unknown) and option 15 MCLT (not used by STATE) around a server-state.
    body = b"\x00\xc8\x00\x03abc" + b"\x00\x0f\x00\x04\x00\x00\x00\x1e" + b"\x00\x18\x00\x01\x02"
    msg = codec.decode(header(12 + len(body), 10) + body)
    assert msg == State(time=0, xid=1, server_state=2)


def test_payload_offset_beyond_12_is_skipped() -> None:
    body = b"\xee\xee" + b"\x00\x18\x00\x01\x04"
    msg = codec.decode(header(12 + len(body), 10, offset=14) + body)
    assert isinstance(msg, State)
    assert msg.server_state == 4


def test_bad_length_poisons_the_stream() -> None:
    framer = StreamFramer()
    good = codec.encode(ConnectAck(time=5, xid=9, relationship_name="x"))
    msgs, err = framer.feed(good + b"\x00\x05" + b"\x00" * 20)
    assert len(msgs) == 1
    assert err is not None
    assert err.reason == "short_length"
    again, err2 = framer.feed(good)
    assert again == []
    assert err2 is err
