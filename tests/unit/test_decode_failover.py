"""`carpsim decode` on DHCP failover: the real dhcpd capture, and the same capture damaged.

The TCP bytes are put back in order by carpsim.wire.tcpstream and cut into messages by the
failover codec's own framer; what a lost, reordered or duplicated segment does is visible.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from carpsim.cli import main
from carpsim.cli.decode import decode_capture
from carpsim.wire.pcap import network_payload, read_frames

PCAP = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd" / "failover-only.pcap"
ISC_TYPES = {
    "BNDUPD", "BNDACK", "CONNECT", "CONNECTACK", "UPDREQALL", "UPDDONE", "UPDREQ",
    "STATE", "CONTACT", "POOLREQ", "POOLRESP", "DISCONNECT",
}  # fmt: skip


def failover(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "dhcp-failover"]


def events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "dhcp-failover-stream"]


def test_every_message_of_the_dhcpd_capture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(PCAP), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    msgs = failover(records)
    assert len(msgs) == 898
    assert events(records) == []  # a capture that starts mid-connection is not a loss
    assert {m["type"] for m in msgs} <= ISC_TYPES
    kinds = Counter(m["type"] for m in msgs)
    assert kinds["BNDUPD"] == kinds["BNDACK"] == 410
    for m in msgs:
        if m["type"] in ("STATE", "CONNECT"):
            assert "server_state" in m
        if m["type"] in ("BNDUPD", "BNDACK"):
            assert m["assigned_ip"].startswith("192.168.110.")
            assert "binding_status" in m
    assert {m["server_state"] for m in msgs if m["type"] == "STATE"} >= {"recover", "normal"}
    assert {m["binding_status"] for m in msgs if m["type"] == "BNDUPD"} >= {"free", "active"}
    # Several messages per segment: one captured packet, many records with its timestamp.
    assert max(Counter(m["time"] for m in msgs).values()) > 5
    first = msgs[0]
    assert (first["type"], first["dport"], first["relationship_name"]) == (
        "CONNECT",
        520,
        "dhcp_lan",
    )
    assert first["sender_time"] == int(first["time"])


def test_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(PCAP)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 899
    assert any("BNDUPD xid" in ln and "binding_status=active" in ln for ln in lines)
    assert any("STATE xid" in ln and "server_state=normal" in ln for ln in lines)


# ---------------------------------------------------------------- damaged copies


def _records_of(path: Path) -> list[tuple[float, bytes]]:
    """(time, IPv4 packet without link padding) of every frame."""
    out = []
    for frame in read_frames(path.read_bytes()):
        l3 = network_payload(frame)
        assert l3 is not None
        out.append((frame.time, l3[1][: struct.unpack_from(">H", l3[1], 2)[0]]))
    return out


def _write(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    blob = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
    for t, ip in packets:
        sec = int(t)
        blob += struct.pack("<IIII", sec, round((t - sec) * 1e6), len(ip), len(ip)) + ip
    path.write_bytes(bytes(blob))
    return path


def _split(ip: bytes, at: int) -> list[bytes]:
    """One IPv4/TCP packet as two, its payload cut at byte `at`."""
    ihl = (ip[0] & 15) * 4
    thl = (ip[ihl + 12] >> 4) * 4
    head, tcp, payload = ip[:ihl], ip[ihl : ihl + thl], ip[ihl + thl :]
    seq = struct.unpack_from(">I", tcp, 4)[0]
    out = []
    for part, s in ((payload[:at], seq), (payload[at:], seq + at)):
        t = tcp[:4] + struct.pack(">I", s % 2**32) + tcp[8:]
        out.append(head[:2] + struct.pack(">H", ihl + thl + len(part)) + head[4:] + t + part)
    return out


PACKETS = _records_of(PCAP)
BASELINE = [(m["type"], m["xid"]) for m in failover(decode_capture(PCAP))]


def _direction(ip: bytes) -> bytes:
    ihl = (ip[0] & 15) * 4
    return ip[12:20] + ip[ihl : ihl + 4]


def test_reordered_split_and_duplicated_segments_change_nothing(tmp_path: Path) -> None:
    rng = random.Random(7)
    mangled: list[tuple[float, bytes]] = []
    seen: set[bytes] = set()
    for t, ip in PACKETS:
        parts = _split(ip, rng.randint(1, 30)) if len(ip) > 100 else [ip]
        if _direction(ip) in seen and rng.random() < 0.4:
            parts.reverse()
        seen.add(_direction(ip))
        mangled += [(t, p) for p in parts]
        if rng.random() < 0.2:
            mangled.append((t, parts[0]))  # a retransmission
    records = decode_capture(_write(tmp_path / "mangled.pcap", mangled))
    assert sorted((m["type"], m["xid"]) for m in failover(records)) == sorted(BASELINE)
    assert events(records) == []


def test_a_lost_segment_is_a_resync_and_decoding_goes_on(tmp_path: Path) -> None:
    # Drop one whole data segment in the middle: the next segment starts a message again.
    lost = len(PACKETS) // 2
    kept = PACKETS[:lost] + PACKETS[lost + 1 :]
    records = decode_capture(_write(tmp_path / "lost.pcap", kept))
    (event,) = events(records)
    assert (event["type"], event["reason"]) == ("resync", "gap")
    msgs = failover(records)
    assert 0 < len(BASELINE) - len(msgs) < 20  # only what the lost segment carried
    last_time = PACKETS[-1][0]
    assert any(m["time"] == pytest.approx(last_time) for m in msgs)


def _flow(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["src"], r["sport"], r["dst"], r["dport"])


def test_half_a_segment_lost_stops_that_direction_with_a_reason(tmp_path: Path) -> None:
    # Lose the first bytes of a segment: what is left starts inside a message.
    index = next(i for i, (_, ip) in enumerate(PACKETS) if len(ip) > 400 and i > 20)
    _head, tail = _split(PACKETS[index][1], 7)
    damaged = [*PACKETS[:index], (PACKETS[index][0], tail), *PACKETS[index + 1 :]]
    records = decode_capture(_write(tmp_path / "half.pcap", damaged))
    kinds = [(e["type"], e["reason"]) for e in events(records)]
    assert ("resync", "gap") in kinds
    assert ("stopped", "not_at_message_boundary") in kinds
    stopped = next(e for e in events(records) if e["type"] == "stopped")
    after = [
        m for m in failover(records) if _flow(m) == _flow(stopped) and m["time"] > PACKETS[index][0]
    ]
    assert after == []  # nothing made up from misaligned bytes
    other = [m for m in failover(records) if m["src"] != stopped["src"]]
    assert other, "the other direction is unaffected"
    later = [
        m for m in failover(records) if m["time"] > PACKETS[index][0] and m["type"] == "CONNECT"
    ]
    assert later, "the next connection between the peers decodes again"
