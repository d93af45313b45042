"""DHCP codec fuzzing: random bytes only raise DecodeError; typed messages round-trip."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.dhcp import codec
from carpsim.dhcp.codec import DhcpMessage, decode, encode
from carpsim.errors import DecodeError

addrs = st.integers(0, 2**32 - 1).map(IPv4Address)
option_codes = st.integers(1, 254).filter(lambda c: c != 52)


@st.composite
def messages(draw: st.DrawFn) -> DhcpMessage:
    codes = draw(st.lists(option_codes, unique=True, max_size=12))
    opts = tuple((c, draw(st.binary(max_size=600))) for c in codes)
    opts = tuple((c, v[:1] if c == 53 else v) for c, v in opts if c != 53 or v)
    return DhcpMessage(
        op=draw(st.sampled_from([1, 2])),
        xid=draw(st.integers(0, 2**32 - 1)),
        chaddr=draw(st.binary(max_size=16)),
        htype=draw(st.integers(0, 255)),
        hops=draw(st.integers(0, 255)),
        secs=draw(st.integers(0, 65535)),
        flags=draw(st.integers(0, 65535)),
        ciaddr=draw(addrs),
        yiaddr=draw(addrs),
        siaddr=draw(addrs),
        giaddr=draw(addrs),
        sname=draw(st.binary(max_size=64)).rstrip(b"\0"),
        file=draw(st.binary(max_size=128)).rstrip(b"\0"),
        options=opts,
    )


@given(messages())
@settings(max_examples=300)
def test_round_trip(msg: DhcpMessage) -> None:
    assert decode(encode(msg)) == msg


@given(messages(), st.integers(300, 1500))
@settings(max_examples=200)
def test_round_trip_with_overload(msg: DhcpMessage, max_size: int) -> None:
    msg = DhcpMessage(**{**msg.__dict__, "sname": b"", "file": b""})
    try:
        wire = encode(msg, max_size=max_size)
    except ValueError:
        return  # does not fit even with overload: refused, not truncated
    assert decode(wire) == msg


@given(st.binary(max_size=1200))
@settings(max_examples=500)
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@given(messages(), st.data())
@settings(max_examples=300)
def test_mutated_messages_only_raise_decode_error(msg: DhcpMessage, data: st.DataObject) -> None:
    wire = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(codec.HEADER_LEN - 20, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(DecodeError):
        decode(bytes(wire[:cut]))
