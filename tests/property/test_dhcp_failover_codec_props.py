"""Failover codec fuzzing: typed round trips, and random bytes only ever raise DecodeError."""

from __future__ import annotations

import contextlib
from dataclasses import fields
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.dhcp.failover import codec
from carpsim.dhcp.failover.codec import MESSAGE_CLASSES, StreamFramer
from carpsim.dhcp.failover.constants import FIXED_SIZE
from carpsim.errors import DecodeError

U32 = st.integers(0, 0xFFFFFFFF)


def value_for(kind: str, opt: int) -> st.SearchStrategy[object]:
    if kind == codec.U8:
        return st.integers(0, 0xFF)
    if kind == codec.U16:
        return st.integers(0, 0xFFFF)
    if kind == codec.U32:
        return U32
    if kind == codec.IP:
        return st.builds(IPv4Address, U32)
    if kind == codec.TEXT:
        return st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
    assert opt not in FIXED_SIZE
    return st.binary(max_size=40)


@st.composite
def messages(draw: st.DrawFn) -> codec.Message:
    cls = draw(st.sampled_from(list(MESSAGE_CLASSES.values())))
    kw: dict[str, object] = {"time": draw(U32), "xid": draw(U32)}
    for name, opt, kind in cls.OPTIONS:
        kw[name] = draw(st.none() | value_for(kind, opt))
    return cls(**kw)  # type: ignore[arg-type]


@settings(max_examples=400)
@given(messages())
def test_round_trip(msg: codec.Message) -> None:
    data = codec.encode(msg)
    assert codec.decode(data) == msg
    assert codec.encode(codec.decode(data)) == data
    assert {f.name for f in fields(msg)} >= {"time", "xid"}


@settings(max_examples=200)
@given(st.lists(messages(), min_size=1, max_size=8), st.lists(st.integers(1, 64), max_size=30))
def test_framer_reassembles_any_segmentation(msgs: list[codec.Message], cuts: list[int]) -> None:
    stream = b"".join(codec.encode(m) for m in msgs)
    framer = StreamFramer()
    got: list[codec.Message] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        out, err = framer.feed(stream[pos : pos + cut])
        assert err is None
        got += out
        pos += cut
        if pos >= len(stream):
            break
    got += framer.feed(stream[pos:])[0]
    assert got == msgs


@settings(max_examples=800)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode(data)


@settings(max_examples=300)
@given(st.binary(min_size=2, max_size=400), st.sampled_from(list(range(1, 13))))
def test_random_bodies_after_a_valid_header(body: bytes, mtype: int) -> None:
    data = (12 + len(body)).to_bytes(2, "big") + bytes([mtype, 12]) + b"\x00" * 8 + body
    try:
        msg = codec.decode(data)
    except DecodeError:
        return
    assert int(msg.TYPE) == mtype


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=100), max_size=20))
def test_framer_on_garbage_never_crashes_and_stays_bounded(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    for chunk in chunks:
        _msgs, err = framer.feed(chunk)
        assert framer.buffered < 2048
        if err is not None:
            assert framer.feed(b"\x00" * 20) == ([], err)
            break
