"""TCP reassembly for `carpsim decode`: order by sequence number, bounded, gaps made explicit."""

from __future__ import annotations

import contextlib
import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.errors import DecodeError
from carpsim.wire.tcpstream import (
    FIN,
    RST,
    SEQ_MOD,
    SYN,
    Chunk,
    Direction,
    FlowTable,
    TcpSegment,
    parse_ipv4,
    parse_tcp,
    seq_diff,
)

ISN = 1000


def cut(stream: bytes, sizes: list[int], isn: int = ISN) -> list[tuple[int, bytes]]:
    """(seq, payload) segments of `stream` after a SYN at `isn`."""
    out, pos = [], 0
    for size in sizes:
        if pos >= len(stream):
            break
        out.append(((isn + 1 + pos) % SEQ_MOD, stream[pos : pos + size]))
        pos += size
    if pos < len(stream):
        out.append(((isn + 1 + pos) % SEQ_MOD, stream[pos:]))
    return out


def run(d: Direction, segs: list[tuple[int, bytes]], isn: int = ISN) -> list[Chunk]:
    chunks = d.segment(isn, SYN, b"")
    for seq, data in segs:
        chunks += d.segment(seq, 0, data)
    return chunks + d.finish()


def joined(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def test_seq_diff_wraps() -> None:
    assert seq_diff(5, 0xFFFFFFFB) == 10
    assert seq_diff(0xFFFFFFFB, 5) == -10
    assert seq_diff(7, 7) == 0


def test_in_order_segments_are_one_chunk() -> None:
    d = Direction()
    chunks = run(d, cut(b"abcdefghij", [3, 3, 3]))
    assert chunks == [
        Chunk(b"abc", False),
        Chunk(b"def", False),
        Chunk(b"ghi", False),
        Chunk(b"j", False),
    ]
    assert not d.counts["gap"]


def test_out_of_order_and_retransmitted_segments_are_put_back_in_order() -> None:
    segs = cut(b"0123456789", [2, 2, 2, 2])
    shuffled = [segs[2], segs[0], segs[0], segs[4], segs[1], segs[3], segs[2]]
    d = Direction()
    chunks = run(d, shuffled)
    assert joined(chunks) == b"0123456789"
    assert not any(c.resync for c in chunks)
    assert d.counts["retransmit"] == 2
    assert d.counts["out_of_order"] >= 2


def test_overlapping_segment_is_trimmed() -> None:
    d = Direction()
    chunks = run(d, [(ISN + 1, b"abcd"), (ISN + 3, b"cdef")])
    assert joined(chunks) == b"abcdef"
    assert d.counts["overlap"] == 1


def test_sequence_numbers_wrap_modulo_2_32() -> None:
    isn = SEQ_MOD - 3
    d = Direction()
    chunks = run(d, cut(b"wrap-around!", [2, 2, 2], isn=isn), isn=isn)
    assert joined(chunks) == b"wrap-around!"


def test_a_hole_is_given_up_at_the_end_and_the_rest_marked_resync() -> None:
    segs = cut(b"aaaabbbbcccc", [4, 4, 4])
    d = Direction()
    chunks = run(d, [segs[0], segs[2]])
    assert chunks == [Chunk(b"aaaa", False), Chunk(b"cccc", True)]
    assert d.counts["gap"] == 1


def test_a_full_hold_buffer_gives_up_the_hole_instead_of_growing() -> None:
    d = Direction(max_held_bytes=100)
    d.segment(ISN, SYN, b"")
    out: list[Chunk] = []
    # Segment 0 never arrives; 30 segments of 10 bytes behind it overflow the 100-byte hold.
    for i in range(1, 31):
        out += d.segment(ISN + 1 + 10 * i, 0, bytes([i]) * 10)
        assert d.held_bytes <= 100
    out += d.finish()
    assert joined(out) == b"".join(bytes([i]) * 10 for i in range(1, 31))
    assert out[0].resync
    assert d.counts["gap"] == 1


def test_many_tiny_segments_are_bounded_by_count_too() -> None:
    d = Direction(max_held_segments=8)
    d.segment(ISN, SYN, b"")
    for i in range(1, 100):
        d.segment(ISN + 1 + 2 * i, 0, b"x")  # every other byte missing: nothing ever joins
        assert len(d._held) <= 8
    assert d.counts["gap"] > 0


def test_midstream_start_is_a_resync_and_fin_closes() -> None:
    d = Direction()
    first = d.segment(5000, 0, b"hello")
    assert first == [Chunk(b"hello", True)]
    assert d.counts["midstream"] == 1
    assert d.segment(5005, FIN, b" world") == [Chunk(b" world", False)]
    assert d.closed
    assert d.segment(5011, 0, b"late") == []
    assert d.counts["after_close"] == 1


def test_rst_closes_and_a_new_syn_restarts_with_resync() -> None:
    d = Direction()
    d.segment(ISN, SYN, b"")
    d.segment(ISN + 1, 0, b"one")
    d.segment(ISN + 4, RST, b"")
    assert d.closed
    d.segment(77, SYN, b"")
    assert d.segment(78, 0, b"two") == [Chunk(b"two", True)]
    assert d.counts["restart"] == 1


def test_retransmitted_syn_is_ignored() -> None:
    d = Direction()
    d.segment(ISN, SYN, b"")
    d.segment(ISN + 1, 0, b"abc")
    assert d.segment(ISN, SYN, b"") == []
    assert d.segment(ISN + 4, 0, b"def") == [Chunk(b"def", False)]


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=600),
    st.lists(st.integers(1, 40), min_size=1, max_size=60),
    st.integers(0, SEQ_MOD - 1),
    st.randoms(use_true_random=False),
    st.floats(0, 0.5),
)
def test_any_order_any_duplication_no_loss_gives_the_stream_back(
    stream: bytes, sizes: list[int], isn: int, rnd: random.Random, dup: float
) -> None:
    segs = cut(stream, sizes, isn)
    feed = segs + [s for s in segs if rnd.random() < dup]
    rnd.shuffle(feed)
    d = Direction()
    chunks = run(d, feed, isn)
    assert joined(chunks) == stream
    assert not any(c.resync for c in chunks)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=600),
    st.lists(st.integers(1, 40), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.integers(16, 200),
)
def test_with_loss_every_chunk_is_a_true_slice_in_order(
    stream: bytes, sizes: list[int], rnd: random.Random, bound: int
) -> None:
    segs = cut(stream, sizes)
    kept = [s for s in segs if rnd.random() < 0.7]
    rnd.shuffle(kept)
    d = Direction(max_held_bytes=bound)
    chunks = run(d, kept)
    pos = 0
    for i, chunk in enumerate(chunks):
        at = stream.find(chunk.data, pos)
        assert at >= 0
        # Bytes may only be skipped where the chunk says so.
        assert at == pos or chunk.resync or i == 0
        pos = at + len(chunk.data)
    assert d.held_bytes == 0


def test_flow_table_bounds_the_number_of_flows() -> None:
    table = FlowTable(max_flows=2)
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    seg = TcpSegment(519, 40000, 1, 0, b"x")
    assert table.segment((a, 1, b, 519), seg) == [Chunk(b"x", True)]
    assert table.segment((a, 2, b, 519), seg) is not None
    assert table.segment((a, 3, b, 519), seg) is None
    assert table.counts["too_many_flows"] == 1


def _ip_tcp(payload: bytes, *, flags_frag: int = 0, data_off: int = 5) -> bytes:
    tcp = (
        (40000).to_bytes(2, "big")
        + (519).to_bytes(2, "big")
        + (123).to_bytes(4, "big")
        + bytes(4)
        + bytes([data_off << 4, 0x18])
        + bytes(6)
        + bytes(4 * (data_off - 5))
        + payload
    )
    total = 20 + len(tcp)
    ip = bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(2) + flags_frag.to_bytes(2, "big")
    ip += bytes([64, 6, 0, 0]) + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return ip + tcp + b"trailer-padding"


def test_parse_ipv4_and_tcp() -> None:
    pkt = parse_ipv4(_ip_tcp(b"msg", data_off=6))
    assert (str(pkt.src), str(pkt.dst), pkt.proto, pkt.fragment) == (
        "10.0.0.1",
        "10.0.0.2",
        6,
        False,
    )
    seg = parse_tcp(pkt.payload)
    assert (seg.sport, seg.dport, seg.seq, seg.payload) == (40000, 519, 123, b"msg")
    assert parse_ipv4(_ip_tcp(b"m", flags_frag=0x2000)).fragment
    with pytest.raises(DecodeError):
        parse_tcp(bytes(12) + b"\xf0" + bytes(7))  # 60-byte header claimed in 20 bytes


@given(st.binary(max_size=80))
def test_header_parsers_only_raise_decode_error(data: bytes) -> None:
    for parse in (parse_ipv4, parse_tcp):
        with contextlib.suppress(DecodeError):
            parse(data)


def test_closed_flows_make_room_for_new_ones() -> None:
    table = FlowTable(max_flows=2)
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    for port in range(1000, 1010):  # a peer reconnecting again and again
        key = (a, port, b, 519)
        assert table.segment(key, TcpSegment(port, 519, 5, SYN, b"")) == []
        chunks = table.segment(key, TcpSegment(port, 519, 6, FIN, b"hi"))
        assert chunks == [Chunk(b"hi", False)]
    assert len(table.flows) <= 2
    assert table.counts["evicted"] == 8
    assert table.counts["too_many_flows"] == 0
