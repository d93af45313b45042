"""Fuzz targets: every carpsim codec and config loader, with a seed corpus for each.

A target is a seed corpus (valid inputs built with carpsim's own encoders and the vendored
captures), a mutator (benchmarks/fuzz_mutators.py) and a runner that pushes one input through
the code under test. The runner may raise only `DecodeError` or `ConfigError`; anything else is
a finding. Runners that check an invariant of their own (the TCP reassembler's byte bound)
raise `AssertionError` when it breaks. benchmarks/fuzz_soak.py runs them; the bounded CI
profile is tests/property/test_fuzz_profile.py.
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import random
import shutil
import struct
import tempfile
import tomllib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fuzz_mutators import mutate_bytes, mutate_text, mutate_tree

from carpsim.cli.decode import decode_stream
from carpsim.cli.describe import describe_frame, describe_vrrp
from carpsim.config import loader as config_loader
from carpsim.config import pfsense_xml
from carpsim.configsync import policy as sync_policy
from carpsim.dhcp import codec as dhcp_codec
from carpsim.dhcp import leasefile
from carpsim.dhcp.describe import describe as describe_dhcp
from carpsim.errors import DecodeError
from carpsim.lab import topology
from carpsim.protocol import codec as carp_codec
from carpsim.runtime import nodeconfig
from carpsim.statesync import codec as sync_codec
from carpsim.statesync.constants import Act, BusStatus
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.web import config as web_config
from carpsim.wire import ctnetlink as nl
from carpsim.wire.garp import garp_frame, mac_bytes
from carpsim.wire.pcap import ETHERTYPE_IPV4, gratuitous_arp_ip, network_payload, read_frames
from carpsim.wire.tcpstream import Direction, parse_ipv4, parse_tcp

failover_codec: Any
try:  # written concurrently: the soak covers it as soon as the checkout has it
    failover_codec = importlib.import_module("carpsim.dhcp.failover.codec")
except ImportError:
    failover_codec = None

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


# ---------------------------------------------------------------- seeds


def _frames(path: Path, limit: int = 40) -> list[tuple[int, bytes]]:

    out = []
    for frame in read_frames(path.read_bytes()):
        payload = network_payload(frame)
        if payload is not None:
            out.append(payload)
        if len(out) >= limit:
            break
    return out


def _vector_packets(proto: int | None = None) -> list[bytes]:

    out = []
    for path in sorted(VECTORS.rglob("*.pcap")):
        for etype, data in _frames(path):
            if etype == ETHERTYPE_IPV4 and (proto is None or data[9] == proto):
                out.append(data)
    return out


def seeds_carp() -> list[bytes]:
    spec = bytes.fromhex(
        "451000386f454000ff70218a0a630001e0000012"
        "2107000700012594f0d9c981862b6e8b2b4d7d9e2db89f1467abdb5c31927894183d8f25"
    )
    vrrp = spec[:20] + bytes.fromhex("21056401000100000a0000010000000000000000")
    return [spec, vrrp, *_vector_packets(112)[:8]]


def _state(i: int) -> Any:

    key = FlowKey(6, bytes([192, 168, 110, i]), 40000 + i, bytes([203, 0, 113, 10]), 80)
    return StateRecord(
        key,
        creatorid=1,
        id=i,
        nat_src=(bytes([192, 168, 100, 254]), 61000),
        tcp_state=TcpState.ESTABLISHED,
        timeout=3600,
    )


def seeds_pfsync() -> list[bytes]:

    sections = [
        sync_codec.Section(Act.INS, (_state(1), _state(2))),
        sync_codec.Section(Act.UPD, (_state(3),)),
        sync_codec.Section(
            Act.UPD_C, (sync_codec.CompressedUpdate(1, 5, TcpState.ESTABLISHED, 60),)
        ),
        sync_codec.Section(Act.DEL_C, (sync_codec.StateRef(1, 5), sync_codec.StateRef(2, 6))),
        sync_codec.Section(Act.UPD_REQ, (sync_codec.StateRef(0, 0),)),
        sync_codec.Section(Act.CLR, (sync_codec.Clear(7, "sync"),)),
        sync_codec.Section(Act.BUS, (sync_codec.BulkStatus(7, 100, BusStatus.START),)),
        sync_codec.Section(Act.XNACK, (sync_codec.NackRange(3, 9),)),
    ]
    xseq = sync_codec.Section(Act.XSEQ, (sync_codec.SeqHeader(9, 4, 1, 8, 3),))
    frames = [sync_codec.encode_frame(sync_codec.Frame((s,))) for s in sections]
    frames.append(sync_codec.encode_frame(sync_codec.Frame((xseq, *sections[:4]))))
    # The same frames inside IPv4 (protocol 240, TTL 255), for the packet-level decoder.
    wrapped = []
    for frame in frames[:4]:
        total = 20 + len(frame)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 255, 240, 0,
                             bytes([172, 16, 1, 5]), bytes([172, 16, 1, 6]))  # fmt: skip
        wrapped.append(header + frame)
    return frames + wrapped


def _pcapng(frames: list[tuple[int, bytes]], linktype: int = 101) -> bytes:

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 65535) + struct.pack("<HHB3x", 9, 1, 6))
    for i, (_, data) in enumerate(frames):
        out += block(6, struct.pack("<IIIII", 0, 0, i, len(data), len(data)) + data)
    return out


def _pcap(packets: list[bytes], linktype: int = 101) -> bytes:

    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
    for i, pkt in enumerate(packets):
        out += struct.pack("<IIII", i, 0, len(pkt), len(pkt)) + pkt
    return bytes(out)


def seeds_pcap() -> list[bytes]:

    out = []
    for path in sorted(VECTORS.rglob("*.pcap")):
        frames = _frames(path, 4)
        out.append(_pcap([d for _, d in frames]))
        out.append(_pcapng(frames))
    garp = garp_frame(b"\x00\x00\x5e\x00\x01\x01", IPv4Address("10.0.0.1"))
    out.append(_pcap([garp], linktype=1))
    return out


def seeds_decode() -> list[bytes]:

    packets = seeds_carp()[:3] + seeds_pfsync()[:2] + _vector_packets(17)[:4]
    garp = garp_frame(b"\x00\x00\x5e\x00\x01\x07", IPv4Address("10.99.0.100"))
    eth = [b"\xff" * 6 + b"\x00" * 6 + b"\x08\x00" + p for p in packets]
    return [_pcap(packets), _pcap([garp, *eth], linktype=1), *seeds_pcap()[:2]]


def seeds_ctnetlink() -> list[bytes]:

    rec = _state(9)
    return [
        nl.create_message(rec, 1),
        nl.update_message(rec, 2),
        nl.delete_message(rec.key, 3),
        nl.get_message(rec.key, 4),
        nl.dump_message(5),
        nl.stats_message(6),
        nl.create_message(rec, 1) + nl.delete_message(rec.key, 3),
    ]


def seeds_dhcp() -> list[bytes]:
    packets = []
    for ip in _vector_packets(17):
        ihl = (ip[0] & 0x0F) * 4
        packets.append(ip[ihl + 8 :])
    return packets


def seeds_leases() -> list[str]:
    return [(VECTORS / "isc-dhcpd" / "sample.leases").read_text()]


NODE_TOML = """\
[node]
name = "node1"
control = "/run/carpsim/fz.sock"
metrics_port = 0
metrics_address = "127.0.0.1"
neutral = false

[carp]
password = "K33p_It_S3cr3t!"
advbase = 1
advskew = 0
preempt = true
master_down_formula = "freebsd"
demote = 0

[[vhid]]
vhid = 1
interface = "lan"
srcip = "192.168.110.251"
vips = ["192.168.110.254/24"]

[[vhid]]
vhid = 2
interface = "wan"
srcip = "10.0.0.2"
vips = ["10.0.0.10/24"]
peer = "10.0.0.3"
advskew = 100

[statesync]
interface = "sync"
peer = "172.16.1.6"
demote = 32
reliable = true
mtu = 1500
flush_interval = 0.1

[web]
enabled = true
listen = "127.0.0.1:8080"
"""


def seeds_node_text() -> list[str]:
    return [NODE_TOML]


def _toml_trees(texts: list[str]) -> list[Any]:

    return [tomllib.loads(t) for t in texts]


def seeds_topology_text() -> list[str]:
    folder = resources.files("carpsim.lab") / "topologies"
    return sorted(p.read_text() for p in folder.iterdir() if p.name.endswith(".toml"))


def seeds_mac() -> list[str]:
    return ["00:00:5e:00:01:01", "aa:bb:cc:dd:ee:ff", "0:1:2:3:4:5"]


def seeds_tcp() -> list[bytes]:
    # A program for the reassembler: 7-byte ops (seq delta, flags, length) over a byte stream.
    return [bytes([0, 0, 0, 0, 2, 0, 0]) + bytes([0, 0, 0, 1, 0, 0, 5]) + b"hello", bytes(21)]


# ---------------------------------------------------------------- runners


def run_carp(data: bytes) -> None:
    with suppress(DecodeError):
        carp_codec.decode_packet(data, check_ttl=False, check_sum=False)
    with suppress(DecodeError):
        carp_codec.decode_packet(data)
    describe_vrrp(data)
    with suppress(DecodeError):
        carp_codec.decode_advert(data[20:])


def run_pfsync(data: bytes) -> None:

    describe_frame(data)
    with suppress(DecodeError):
        sync_codec.decode_packet(data)
    sync_codec.decode_frame(data)


def run_pcap(data: bytes) -> None:

    for frame in read_frames(data):
        payload = network_payload(frame)
        if payload is not None:
            gratuitous_arp_ip(payload[1])


def run_decode(data: bytes) -> None:

    for password in (None, b"secret"):
        records = decode_stream(io.BytesIO(data), password=password)
        json.dumps(records)


def run_ctnetlink(data: bytes) -> None:

    for msg in nl.split_messages(data):
        for fn in (nl.decode_key, nl.decode_record, nl.decode_stats_entries):
            with suppress(DecodeError):
                fn(msg.payload)
        with suppress(DecodeError):
            nl.error_code(msg)


def run_dhcp(data: bytes) -> None:

    msg = dhcp_codec.decode(data)
    json.dumps(describe_dhcp(msg))
    _ = (msg.message_type, msg.client_key, msg.parameter_request_list)


def run_leases(text: str) -> None:

    leasefile.parse(text)


def run_mac(text: str) -> None:

    mac_bytes(text)


def run_tcp(data: bytes) -> None:

    with suppress(DecodeError):
        parse_tcp(parse_ipv4(data).payload)
    with suppress(DecodeError):
        parse_tcp(data)
    d = Direction(max_held_bytes=512, max_held_segments=8)
    pos, seq, delivered = 0, 0, 0
    while pos + 7 <= len(data):
        delta = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        flags, size = data[pos + 4], int.from_bytes(data[pos + 5 : pos + 7], "big") % 300
        pos += 7
        seq = (seq + delta) % (1 << 32)
        chunk, pos = data[pos : pos + size], pos + size
        delivered += sum(len(c.data) for c in d.segment(seq, flags, chunk))
        if d.held_bytes > 512:
            raise AssertionError(f"held {d.held_bytes} bytes over the 512-byte bound")
    d.finish()
    if d.held_bytes:
        raise AssertionError("bytes still held after finish()")


# One private directory per process: two soaks (or test workers) never share the file.
_TMP = Path(tempfile.mkdtemp(prefix="carpsim-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def run_node_text(text: str) -> None:

    path = _TMP / "node.toml"
    path.write_text(text, errors="surrogateescape")
    nodeconfig.load(path)


def run_node_tree(tree: Any) -> None:

    nodeconfig.parse(tree)


def run_topology_text(text: str) -> None:

    topology.loads(text)


def run_topology_tree(tree: Any) -> None:

    topology.parse(tree)


def run_web_tree(tree: Any) -> None:

    web_config.parse(tree.get("web") if isinstance(tree, dict) else tree)
    web_config.parse_listen(tree.get("listen") if isinstance(tree, dict) else tree)


def run_failover(data: bytes) -> None:
    assert failover_codec is not None
    with suppress(DecodeError):
        msg = failover_codec.decode(data)
        json.dumps(failover_codec.describe(msg), default=str)
    framer = failover_codec.StreamFramer()
    step = max(1, len(data) // 3)
    for i in range(0, len(data), step):
        _msgs, err = framer.feed(data[i : i + step])
        if err is not None:
            break


def seeds_failover() -> list[bytes]:
    assert failover_codec is not None
    out = [
        failover_codec.encode(cls(time=1, xid=2)) for cls in failover_codec.MESSAGE_CLASSES.values()
    ]
    return [*out, b"".join(out)]


def seeds_config_text() -> list[str]:
    return [p.read_text() for p in sorted((VECTORS / "config").glob("*.toml"))]


def seeds_pfsense_xml() -> list[bytes]:
    return [p.read_bytes() for p in sorted((VECTORS / "pfsense").glob("*.xml"))]


def _local_config() -> Any:
    return config_loader.loads(seeds_config_text()[1])


def seeds_sync_payload() -> list[Any]:
    # What the master would push (restore_config_section), made JSON-able for the tree mutator.
    master = config_loader.loads(seeds_config_text()[0])
    payload = sync_policy.build_payload(master)
    return [json.loads(json.dumps(payload, default=str))] if payload else [{}]


def run_config_text(text: str) -> None:
    config_loader.loads(text)


def run_config_tree(tree: Any) -> None:
    config_loader.parse(tree)


def run_pfsense_xml(data: bytes) -> None:
    pfsense_xml.import_xml(data)


_LOCAL: list[Any] = []


def run_sync_receive(tree: Any) -> None:
    if not _LOCAL:
        _LOCAL.append(_local_config())
    sync_policy.receive(_LOCAL[0], tree, "192.168.110.251")


@dataclass(frozen=True)
class Target:
    name: str
    seeds: Callable[[], list[Any]]
    mutate: Callable[[random.Random, Any, list[Any]], Any]
    run: Callable[[Any], object]


def targets() -> list[Target]:
    out = [
        Target("carp.codec", seeds_carp, mutate_bytes, run_carp),
        Target("statesync.codec", seeds_pfsync, mutate_bytes, run_pfsync),
        Target("wire.pcap", seeds_pcap, mutate_bytes, run_pcap),
        Target("wire.ctnetlink", seeds_ctnetlink, mutate_bytes, run_ctnetlink),
        Target("wire.garp.mac", seeds_mac, mutate_text, run_mac),
        Target("wire.tcpstream", seeds_tcp, mutate_bytes, run_tcp),
        Target("dhcp.codec", seeds_dhcp, mutate_bytes, run_dhcp),
        Target("dhcp.leasefile", seeds_leases, mutate_text, run_leases),
        Target("cli.decode", seeds_decode, mutate_bytes, run_decode),
        Target("nodeconfig.load", seeds_node_text, mutate_text, run_node_text),
        Target(
            "nodeconfig.parse",
            lambda: _toml_trees(seeds_node_text()),
            mutate_tree,
            run_node_tree,
        ),
        Target("topology.loads", seeds_topology_text, mutate_text, run_topology_text),
        Target(
            "topology.parse",
            lambda: _toml_trees(seeds_topology_text()),
            mutate_tree,
            run_topology_tree,
        ),
        Target(
            "web.config",
            lambda: [{"web": {"enabled": True, "listen": "127.0.0.1:8080"}}],
            mutate_tree,
            run_web_tree,
        ),
    ]
    out += [
        Target("config.loads", seeds_config_text, mutate_text, run_config_text),
        Target(
            "config.parse",
            lambda: _toml_trees(seeds_config_text()),
            mutate_tree,
            run_config_tree,
        ),
        Target("config.pfsense_xml", seeds_pfsense_xml, mutate_bytes, run_pfsense_xml),
        Target("configsync.receive", seeds_sync_payload, mutate_tree, run_sync_receive),
    ]
    if failover_codec is not None:
        out.append(Target("dhcp.failover", seeds_failover, mutate_bytes, run_failover))
    return out
