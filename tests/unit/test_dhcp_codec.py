"""DHCP codec: the real dhcpd/dhclient capture, RFC 3396 long options, overload, bad input."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.dhcp import codec
from carpsim.dhcp import options as o
from carpsim.dhcp.codec import DhcpMessage, decode, encode
from carpsim.errors import DecodeError
from carpsim.wire.pcap import network_payload, read_frames

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd"
MAC_A = bytes.fromhex("020000000102")


def capture_messages() -> list[DhcpMessage]:
    out = []
    for frame in read_frames((VECTORS / "dhcp-primary-side.pcap").read_bytes()):
        net = network_payload(frame)
        assert net is not None
        _, ip = net
        ihl = (ip[0] & 0x0F) * 4
        assert ip[9] == 17
        out.append(decode(ip[ihl + 8 :]))
    return out


def test_every_packet_of_the_real_capture_decodes() -> None:
    msgs = capture_messages()
    assert len(msgs) == 12
    kinds = [m.message_type for m in msgs]
    T = o.MessageType
    assert kinds[:6] == [T.DISCOVER, T.OFFER, T.REQUEST, T.ACK, T.REQUEST, T.ACK]
    offer, ack = msgs[1], msgs[3]
    assert offer.op == codec.BOOTREPLY
    assert offer.chaddr == MAC_A
    assert offer.yiaddr == IPv4Address("192.168.110.150")
    assert ack.server_id == IPv4Address("192.168.110.2")
    assert o.ips(ack.opt(o.ROUTER) or b"") == (IPv4Address("192.168.110.254"),)
    assert o.ips(ack.opt(o.DNS_SERVERS) or b"") == (IPv4Address("192.168.110.254"),)
    assert ack.lease_time == 30  # capped at MCLT by the failover rule
    assert not offer.broadcast
    # The renewal (frame 5) is unicast from the bound address with ciaddr set, no server id.
    renew = msgs[4]
    assert renew.ciaddr == IPv4Address("192.168.110.150")
    assert renew.server_id is None
    assert msgs[0].parameter_request_list  # dhclient asks for mask, routers, DNS ...


def test_capture_round_trips_byte_for_byte_up_to_padding() -> None:
    for frame in read_frames((VECTORS / "dhcp-primary-side.pcap").read_bytes()):
        net = network_payload(frame)
        assert net is not None
        ip = net[1]
        raw = ip[(ip[0] & 0x0F) * 4 + 8 :]
        msg = decode(raw)
        again = encode(msg, pad_to=len(raw))
        assert decode(again) == msg
        assert again == raw.rstrip(b"\0") + bytes(len(raw) - len(raw.rstrip(b"\0")))


def base(**kw: object) -> DhcpMessage:
    fields: dict[str, object] = {"op": 1, "xid": 7, "chaddr": MAC_A}
    fields.update(kw)
    return DhcpMessage(**fields)  # type: ignore[arg-type]


def test_long_option_is_split_and_joined() -> None:
    value = bytes(range(256)) * 2  # 512 bytes: three instances on the wire
    msg = base(options=((o.MESSAGE_TYPE, b"\x01"), (o.VENDOR_CLASS, value)))
    wire = encode(msg)
    assert wire.count(bytes((o.VENDOR_CLASS, 255))) >= 2
    assert decode(wire).opt(o.VENDOR_CLASS) == value


def test_instances_of_one_option_concatenate_in_rfc3396_order() -> None:
    # Options field, then file, then sname (RFC 3396 §7), all carrying pieces of option 43.
    file = bytes((43, 2)) + b"cd" + bytes((o.END,))
    sname = bytes((43, 2)) + b"ef" + bytes((o.END,))
    msg = base(sname=sname, file=file)
    raw = bytearray(encode(msg))
    opts = bytes((o.OVERLOAD, 1, 3, 43, 2)) + b"ab" + bytes((o.PAD, o.PAD, o.END))
    raw[codec.MIN_LEN :] = opts
    got = decode(bytes(raw))
    assert got.opt(43) == b"abcdef"
    assert got.sname == b""
    assert got.file == b""
    assert got.opt(o.OVERLOAD) is None


def test_encode_overloads_when_max_size_is_small() -> None:
    opts = tuple((200 + i, bytes([i]) * 40) for i in range(5))
    msg = base(options=((o.MESSAGE_TYPE, b"\x02"), *opts))
    wire = encode(msg, max_size=28 + codec.MIN_LEN + 120)
    assert len(wire) <= 28 + codec.MIN_LEN + 120 + codec.FILE_LEN + codec.SNAME_LEN
    assert wire[codec.MIN_LEN : codec.MIN_LEN + 3] == bytes((o.OVERLOAD, 1, 3)) or wire[
        codec.MIN_LEN : codec.MIN_LEN + 3
    ] == bytes((o.OVERLOAD, 1, 1))
    assert decode(wire) == msg


def test_relay_agent_option_is_kept_verbatim() -> None:
    agent = bytes((1, 4)) + b"port" + bytes((2, 3)) + b"sw1"
    msg = base(options=((o.MESSAGE_TYPE, b"\x01"), (o.RELAY_AGENT, agent)))
    assert decode(encode(msg)).relay_agent == agent


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:100], "short"),
        (lambda b: b"\x03" + b[1:], "badop"),
        (lambda b: b[:2] + b"\x20" + b[3:], "badhlen"),
        (lambda b: b[:236] + b"\x00\x00\x00\x00" + b[240:], "badcookie"),
        (lambda b: b[:240] + bytes((12, 50)) + b"ab", "badopt"),
        (lambda b: b[:240] + bytes((12,)), "badopt"),
        (lambda b: b[:240] + bytes((53, 2, 1, 1, 255)), "badtype"),
        (lambda b: b[:240] + bytes((52, 1, 9, 255)), "badopt"),
        (lambda b: b + bytes(codec.MAX_LEN), "long"),
    ],
)
def test_malformed_reasons(mutate: object, reason: str) -> None:
    good = encode(base(options=((o.MESSAGE_TYPE, b"\x01"),)))
    with pytest.raises(DecodeError) as err:
        decode(mutate(good))  # type: ignore[operator]
    assert err.value.reason == reason


def test_typed_accessors_reject_bad_lengths() -> None:
    msg = base(options=((o.REQUESTED_IP, b"\x01\x02"),))
    with pytest.raises(DecodeError):
        _ = msg.requested_ip


def test_describe_for_decode_lines() -> None:
    from carpsim.dhcp.describe import describe  # noqa: PLC0415

    ack = describe(capture_messages()[3])
    assert ack["kind"] == "dhcp"
    assert ack["type"] == "ACK"
    assert ack["xid"] == 0xB36EDC7C
    assert ack["chaddr"] == "02:00:00:00:01:02"
    assert ack["yiaddr"] == "192.168.110.150"
    assert ack["router"] == ["192.168.110.254"]
    assert ack["dns"] == ["192.168.110.254"]
    assert ack["server_id"] == "192.168.110.2"
    assert ack["lease_time"] == 30
    odd = describe(base(options=((o.ROUTER, b"\x01\x02\x03"),)))
    assert odd["type"] == "BOOTREQUEST"
    assert odd["malformed"] == ["router"]
