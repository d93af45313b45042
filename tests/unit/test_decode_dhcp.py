"""`carpsim decode` shows DHCP: the real ISC dhcpd capture, line by line, JSON and text."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from carpsim.cli import main
from carpsim.dhcp import codec
from carpsim.dhcp import options as o

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd" / "dhcp-primary-side.pcap"
VIP = "192.168.110.254"


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["decode", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_every_dhcp_message_of_the_dhcpd_capture_is_a_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = _json(capsys, str(VECTOR))
    assert {r["kind"] for r in records} == {"dhcp"}
    assert [r["type"] for r in records] == [
        "DISCOVER", "OFFER", "REQUEST", "ACK", "REQUEST", "ACK",
        "DISCOVER", "REQUEST", "DISCOVER", "REQUEST", "DISCOVER", "REQUEST",
    ]  # fmt: skip
    first = records[:6]
    assert {r["xid"] for r in first} == {0xB36EDC7C}
    assert {r["chaddr"] for r in first} == {"02:00:00:00:01:02"}
    offer, ack = records[1], records[3]
    for reply in (offer, ack):
        # The seed's point: router and DNS are the VIP, never a node's own address.
        assert reply["router"] == [VIP]
        assert reply["dns"] == [VIP]
        assert reply["yiaddr"] == "192.168.110.150"
        assert reply["server_id"] == "192.168.110.2"
        assert (reply["src"], reply["sport"], reply["dport"]) == ("192.168.110.2", 67, 68)
    assert offer["lease_time"] == 30  # capped at the MCLT before the peer has acknowledged
    discover = records[0]
    assert (discover["src"], discover["dst"]) == ("0.0.0.0", "255.255.255.255")
    assert discover["router"] == []
    assert discover["dns"] == []
    renewal = records[4]
    assert renewal["ciaddr"] == "192.168.110.150"
    assert records[7]["requested"] == "192.168.110.149"


def test_text_lines_name_type_xid_and_the_router(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(VECTOR)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13  # header + 12 messages
    offer = lines[2]
    assert " dhcp " in offer
    assert "OFFER" in offer
    assert "xid 0xb36edc7c" in offer
    assert "yiaddr 192.168.110.150" in offer
    assert f"router {VIP}" in offer
    assert f"dns {VIP}" in offer


def _udp_pcap(path: Path, payloads: list[tuple[int, int, bytes]]) -> None:
    blob = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
    for sport, dport, body in payloads:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + udp  # fmt: skip
        blob += struct.pack("<IIII", 1, 0, len(ip), len(ip)) + ip
    path.write_bytes(bytes(blob))


def test_malformed_dhcp_is_listed_invalid_and_other_udp_is_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nak = codec.encode(
        codec.DhcpMessage(
            op=codec.BOOTREPLY,
            xid=7,
            chaddr=bytes(6),
            options=((o.MESSAGE_TYPE, bytes([o.MessageType.NAK])),),
        )
    )
    path = tmp_path / "udp.pcap"
    _udp_pcap(path, [(67, 68, nak), (68, 67, nak[:100]), (53, 5353, b"dns"), (67, 68, nak)])
    records = _json(capsys, str(path))
    assert [r["type"] for r in records] == ["NAK", "invalid", "NAK"]
    assert records[1]["kind"] == "dhcp"
    assert records[1]["reason"]
    assert main(["decode", str(path)]) == 0
    assert "invalid DHCP message" in capsys.readouterr().out
