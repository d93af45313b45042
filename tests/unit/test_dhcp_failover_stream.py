"""Failover messages out of the real capture's TCP segments (`carpsim decode`'s view)."""

from __future__ import annotations

import random
import struct
from collections import Counter
from pathlib import Path

from carpsim.dhcp.failover.stream import FailoverStreams
from carpsim.wire.pcap import network_payload, read_frames

PCAP = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd" / "failover-only.pcap"


def packets() -> list[tuple[float, bytes]]:
    out = []
    for frame in read_frames(PCAP.read_bytes()):
        l3 = network_payload(frame)
        assert l3 is not None
        out.append((frame.time, l3[1]))
    return out


def test_every_message_of_the_capture_comes_out() -> None:
    streams = FailoverStreams()
    records = [r for t, p in packets() for r in streams.packet(t, p)]
    assert len(records) == 898
    assert not [r for r in records if "error" in r]
    kinds = Counter(r["type"] for r in records)
    assert kinds["BNDUPD"] == kinds["BNDACK"] == 410
    first = records[0]
    assert first["kind"] == "dhcp-failover"
    assert (first["type"], first["src"], first["dst"][-4:]) == ("CONNECT", first["src"], ":520")
    states = [r for r in records if r["type"] == "STATE"]
    assert states[0]["server_state"] == "recover"
    upd = next(r for r in records if r["type"] == "BNDUPD" and r["binding_status"] == "active")
    assert upd["assigned_ip"].startswith("192.168.110.")


def split_segment(ip: bytes, at: int) -> list[bytes]:
    """Cut one IPv4/TCP packet's payload in two packets at byte `at` of the payload."""
    ip = ip[: struct.unpack_from(">H", ip, 2)[0]]  # without any link-layer padding
    ihl = (ip[0] & 15) * 4
    tcp_off = (ip[ihl + 12] >> 4) * 4
    head, tcp_head = ip[:ihl], ip[ihl : ihl + tcp_off]
    payload = ip[ihl + tcp_off :]
    seq = struct.unpack_from(">I", tcp_head, 4)[0]
    out = []
    for part, s in ((payload[:at], seq), (payload[at:], seq + at)):
        th = tcp_head[:4] + struct.pack(">I", s & 0xFFFFFFFF) + tcp_head[8:]
        total = len(head) + len(th) + len(part)
        out.append(head[:2] + struct.pack(">H", total) + head[4:] + th + part)
    return out


def test_reordered_split_and_retransmitted_segments_give_the_same_messages() -> None:
    pkts = packets()
    baseline = [(r["type"], r["xid"]) for t, p in pkts for r in FailoverStreams().packet(t, p)]
    rng = random.Random(4)
    mangled: list[tuple[float, bytes]] = []
    started: set[bytes] = set()
    for t, p in pkts:
        parts = split_segment(p, rng.randint(1, 9)) if len(p) > 80 else [p]
        ends = p[12:20] + p[(p[0] & 15) * 4 : (p[0] & 15) * 4 + 4]
        # Without a SYN in the capture a direction starts at its first segment, so only
        # later ones are reordered.
        if ends in started and rng.random() < 0.3:
            parts = parts[::-1]  # the second half first
        started.add(ends)
        mangled += [(t, x) for x in parts]
        if rng.random() < 0.2:
            mangled.append((t, parts[0]))  # a retransmission
    streams = FailoverStreams()
    got = [(r["type"], r["xid"]) for t, p in mangled for r in streams.packet(t, p)]
    assert sorted(got) == sorted(baseline)
    assert len(got) == len(baseline)


def test_carpsim_decode_lists_failover_messages() -> None:
    from carpsim.cli.decode import decode_capture, render_table  # noqa: PLC0415

    records = decode_capture(PCAP)
    fo = [r for r in records if r.get("kind") == "dhcp-failover"]
    assert len(fo) == 898
    assert fo[0]["type"] == "CONNECT"
    assert isinstance(fo[0]["time"], float)
    assert fo[0]["sender_time"] == int(fo[0]["time"])
    table = render_table(records)
    assert "BNDUPD xid" in table
    assert "binding_status=backup" in table
