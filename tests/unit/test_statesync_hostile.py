"""Single forged or careless frames on the SYNC link (issue 14): none may do lasting harm.

Each test is one finding: before the fix it failed (a forged XSEQ silenced the stream, a forged
ACK emptied the resend queue, one DEL_C deleted live local states, a lone BUS END made a
waiting node ready, repeated bulk requests restarted the bulk once per record ...).
"""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from carpsim.errors import ConfigError
from carpsim.net.sync_io import source_refusal
from carpsim.runtime.node_config import load as load_node_config
from carpsim.runtime.nodeconfig import parse_statesync
from carpsim.statesync.codec import (
    BulkStatus,
    Frame,
    NackRange,
    Section,
    SeqHeader,
    StateRef,
    decode_frame,
    encode_frame,
)
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import Act, BusStatus, SyncDropReason
from carpsim.statesync.events import Action, CountDrop, InstallStates, RemoveStates, Transmit
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.statesync.reliability import ReliableReceiver, ReliableSender
from carpsim.statesync.replicator import Replicator
from carpsim.statesync.serial import seq_diff, seq_lt, seq_next

PEER_EPOCH = 0x51515151
PEER_CID = 2
ME = 0xA1
M = 0xFFFFFFFF


def key(i: int, zone: int = 0) -> FlowKey:
    return FlowKey(6, bytes([10, 1, i >> 8 & 255, i & 255]), 40000, bytes([10, 9, 0, 1]), 443, zone)


def peer_frame(
    seq: int, *secs: Section, oldest: int = 1, ack: int = 0, ack_epoch: int = 0
) -> bytes:
    hdr = Section(Act.XSEQ, (SeqHeader(PEER_EPOCH, seq, oldest, ack_epoch, ack),))
    return encode_frame(Frame((hdr, *secs)))


def drops(out: list[Action]) -> list[SyncDropReason]:
    return [a.reason for a in out if isinstance(a, CountDrop)]


def installed(out: list[Action]) -> list[StateRecord]:
    return [r for a in out if isinstance(a, InstallStates) for r in a.records]


def ready_node(**kw: object) -> Replicator:
    r = Replicator(ReplicatorConfig(creatorid=ME, **kw), random.Random(1))  # type: ignore[arg-type]
    r.started(0.0)
    bus = tuple(BulkStatus(PEER_CID, 0, s) for s in BusStatus)
    r.frame_received(0.01, peer_frame(1, Section(Act.BUS, bus)))
    assert r.ready
    return r


def peer_ins(i: int, **kw: object) -> Section:
    rec = StateRecord(key(i), PEER_CID, 100 + i, tcp_state=TcpState.ESTABLISHED, timeout=60)
    return Section(Act.INS, (replace(rec, **kw),))  # type: ignore[arg-type]


# ---------------------------------------------------------------- serial numbers


def test_serial_arithmetic_wraps_and_skips_zero() -> None:
    assert seq_next(M) == 1
    assert seq_next(M - 1, 3) == 2
    assert seq_next(1, -1) == M
    assert seq_lt(M, 1)
    assert seq_lt(M - 5, 3)
    assert not seq_lt(3, M - 5)
    assert seq_diff(2, M) == 3  # (the skipped 0 is counted: harmless for windows)


def test_sender_and_receiver_carry_on_across_the_wrap() -> None:
    s = ReliableSender(epoch=5, capacity=10, first_seq=M - 1)
    seqs = [s.push(b"x", 0.0, 0.25) for _ in range(4)]
    assert seqs == [M - 1, M, 1, 2]
    assert s.on_ack(5, 1, 0.0, 0.25) == 3  # M-1, M, 1: cumulative across the wrap
    assert s.oldest == 2

    r = ReliableReceiver(window=16)
    f = [Frame((Section(Act.BUS, ()),)) for _ in range(4)]
    r.accept(SeqHeader(7, M - 1, M - 1, 0, 0), f[0], 0.0, 0.05)
    assert r.accept(SeqHeader(7, 2, M - 1, 0, 0), f[3], 0.0, 0.05)[0] == []
    assert r.gaps(10) == [NackRange(M, M), NackRange(1, 1)]
    assert r.accept(SeqHeader(7, M, M - 1, 0, 0), f[1], 0.0, 0.05)[0] == [f[1]]
    assert r.accept(SeqHeader(7, 1, M - 1, 0, 0), f[2], 0.0, 0.05)[0] == [f[2], f[3]]
    assert r.ack == 2


# ---------------------------------------------------------------- XSEQ / ACK / NACK


def test_forged_oldest_does_not_silence_the_stream() -> None:
    for forged in (M, 2 + (1 << 31) - 2):
        r = ready_node()
        out = r.frame_received(0.1, peer_frame(0, oldest=forged))
        # the real peer: seq 1 acknowledged, so its oldest is 2
        out += r.frame_received(0.2, peer_frame(2, peer_ins(1), oldest=2))
        assert [x.key for x in installed(out)] == [key(1)], hex(forged)
        out = r.frame_received(0.3, peer_frame(3, peer_ins(2), oldest=2))
        assert [x.key for x in installed(out)] == [key(2)]


def _unacked_node() -> Replicator:
    r = ready_node()
    r.local_inserted(0.02, StateRecord(key(9), tcp_state=TcpState.ESTABLISHED, timeout=60))
    r.on_timer(0.2)  # the flush: one sequenced frame in the resend queue
    assert len(r.transport.sender) == 1
    return r


def test_forged_ack_and_nack_do_not_empty_the_resend_queue() -> None:
    r = _unacked_node()
    # 0xFFFFFFFF is serially just before seq 1: an old ACK, nothing to release
    r.frame_received(0.3, peer_frame(0, ack_epoch=r.epoch, ack=M))
    assert len(r.transport.sender) == 1
    out = r.frame_received(0.3, peer_frame(0, ack_epoch=r.epoch, ack=1 << 30))
    assert SyncDropReason.BADACK in drops(out)
    assert len(r.transport.sender) == 1
    nack = Section(Act.XNACK, (NackRange(5, 9),))
    out = r.frame_received(0.4, peer_frame(0, nack, ack_epoch=r.epoch, ack=0))
    assert SyncDropReason.BADNACK in drops(out)
    assert len(r.transport.sender) == 1
    # the true ACK still releases it
    r.frame_received(0.5, peer_frame(0, ack_epoch=r.epoch, ack=r.transport.sender.oldest))
    assert len(r.transport.sender) == 0


def test_frames_beyond_the_reorder_bytes_are_not_held() -> None:
    r = ready_node(reorder_window_bytes=4000)
    out: list[Action] = []
    for seq in range(3, 40):  # seq 2 lost: everything else waits
        out += r.frame_received(0.1, peer_frame(seq, peer_ins(seq)))
    assert r.transport.receiver.held_bytes <= 4000
    assert 0 < len(r.transport.receiver.held) < 37
    assert SyncDropReason.WINDOW in drops(out)


# ---------------------------------------------------------------- records


def test_peer_delete_of_a_state_only_we_drive_is_refused() -> None:
    r = _unacked_node()
    mine = r.table.get(key(9))
    assert mine is not None
    out = r.frame_received(0.3, peer_frame(2, Section(Act.DEL_C, (StateRef(ME, mine.id),))))
    assert not [a for a in out if isinstance(a, RemoveStates)]
    assert r.table.get(key(9)) == mine
    assert SyncDropReason.NOTYOURS in drops(out)


def test_lone_bus_end_does_not_make_a_waiting_node_ready() -> None:
    r = Replicator(ReplicatorConfig(creatorid=ME), random.Random(1))
    r.started(0.0)
    end = Section(Act.BUS, (BulkStatus(PEER_CID, 0, BusStatus.END),))
    out = r.frame_received(0.01, peer_frame(1, end))
    assert not r.ready
    assert SyncDropReason.BADBUS in drops(out)
    start = Section(Act.BUS, (BulkStatus(PEER_CID, 0, BusStatus.START),))
    r.frame_received(0.02, peer_frame(2, start))
    r.frame_received(0.03, peer_frame(3, end))
    assert r.ready


def test_out_of_range_zone_is_dropped_before_the_kernel() -> None:
    r = ready_node()
    out = r.frame_received(0.1, peer_frame(2, peer_ins(1, key=key(1, zone=70000))))
    assert installed(out) == []
    assert SyncDropReason.BADFIELD in drops(out)
    # pf's "no routing table" (-1) is zone 0
    raw = bytearray(peer_frame(3, peer_ins(2)))
    at = raw.index(bytes(4), len(raw) - 277 - 4 + 250)
    raw[at : at + 4] = b"\xff\xff\xff\xff"
    (rec,) = [i for s in decode_frame(bytes(raw)).sections if s.action == Act.INS for i in s.items]
    assert isinstance(rec, StateRecord)
    assert rec.key.zone == 0


def test_echo_lists_stay_bounded_under_a_stream_of_updates() -> None:
    r = ready_node()
    for n in range(2000):
        r.frame_received(0.1 + n * 1e-4, peer_frame(2 + n, peer_ins(1, timeout=n)))
    assert r.flows.echoes.entries() <= r.config.echoes_per_key
    assert r.flows.echoes.overflow > 0


# ---------------------------------------------------------------- bulk requests


def test_a_frame_of_bulk_requests_costs_one_bulk() -> None:
    r = ready_node()
    states = [StateRecord(key(i), tcp_state=TcpState.ESTABLISHED, timeout=60) for i in range(20000)]
    r.local_snapshot(0.02, states)
    flood = Section(Act.UPD_REQ, tuple(StateRef(0, 0) for _ in range(90)))
    bytes_in = 0
    out: list[Action] = []
    now = 0.5
    for _ in range(2):  # two flood frames within bulk_min_interval
        data = peer_frame(0, flood)
        bytes_in += len(data)
        out += r.frame_received(now, data)
        now += 0.3
    while now < 0.5 + r.config.bulk_min_interval - 0.01:
        out += r.on_timer(now)
        now += 0.02
    starts = [
        b
        for a in out
        if isinstance(a, Transmit)
        for s in decode_frame(a.data).sections
        if s.action == Act.BUS
        for b in s.items
        if isinstance(b, BulkStatus) and b.status is BusStatus.START
    ]
    assert len(starts) == 1
    assert r.stats["bulk_requests_coalesced"] == 1
    bytes_out = sum(len(a.data) for a in out if isinstance(a, Transmit))
    # one bulk of the table at most, whatever the number of requests in the frames
    assert bytes_out <= (20000 // r.config.states_per_frame() + 2) * r.config.mtu


# ---------------------------------------------------------------- who may speak


def test_only_the_configured_peer_or_the_sync_subnet_may_speak() -> None:
    own = frozenset({IPv4Address("172.16.9.1").packed})
    nets = (IPv4Network("172.16.9.0/24"),)
    peer = IPv4Address("172.16.9.2")
    a = IPv4Address
    assert source_refusal(peer.packed, peer, own, nets) is None
    assert source_refusal(a("172.16.9.3").packed, peer, own, nets) is SyncDropReason.BADPEER
    assert source_refusal(a("172.16.9.1").packed, peer, own, nets) is SyncDropReason.LOOP
    assert source_refusal(a("172.16.9.3").packed, None, own, nets) is None
    assert source_refusal(a("10.0.0.3").packed, None, own, nets) is SyncDropReason.BADPEER
    assert source_refusal(a("172.16.9.255").packed, None, own, nets) is SyncDropReason.BADPEER


# ---------------------------------------------------------------- keyed sync

KEY = b"correct horse battery staple"


def keyed(key: bytes | None = KEY, seed: int = 1, **kw: object) -> Replicator:
    cfg = ReplicatorConfig(creatorid=ME + seed, key=key, **kw)  # type: ignore[arg-type]
    return Replicator(cfg, random.Random(seed))


def transmits(out: list[Action]) -> list[bytes]:
    return [a.data for a in out if isinstance(a, Transmit)]


def test_keyed_peers_authenticate_and_refuse_forgeries_and_replays() -> None:
    a, b = keyed(seed=1), keyed(seed=2)
    (req,) = transmits(a.started(0.0))
    assert Act.XAUTH in [s.action for s in decode_frame(req).sections]
    out = b.frame_received(0.01, req)  # b serves the bulk a asked for
    assert not drops(out)
    assert any(isinstance(x, Transmit) for x in out)
    assert drops(b.frame_received(0.02, req)) == [SyncDropReason.REPLAY]
    forged = bytearray(req)
    forged[30] ^= 1
    assert drops(b.frame_received(0.03, bytes(forged))) == [SyncDropReason.BADAUTH]
    wrong = keyed(key=b"another key of sixteen", seed=3)
    (other,) = transmits(wrong.started(0.0))
    assert drops(b.frame_received(0.04, other)) == [SyncDropReason.BADAUTH]
    plain = Replicator(ReplicatorConfig(creatorid=7), random.Random(4))
    (bare,) = transmits(plain.started(0.0))
    assert drops(b.frame_received(0.05, bare)) == [SyncDropReason.BADAUTH]
    # ...and a keyed frame's extension is only skipped by an unkeyed node (pf would reject
    # the unknown action: keyed clusters are carpsim-only)
    assert SyncDropReason.BADAUTH not in drops(plain.frame_received(0.06, req))


def test_a_keyed_bulk_completes() -> None:
    a, b = keyed(seed=1), keyed(seed=2)
    states = [StateRecord(key(i), tcp_state=TcpState.ESTABLISHED, timeout=60) for i in range(50)]
    b.started(0.0)
    b.local_snapshot(0.0, states)
    wire = transmits(a.started(0.0))
    now = 0.0
    for _ in range(200):
        now += 0.01
        back: list[bytes] = []
        for data in wire:
            back += transmits(b.frame_received(now, data))
        wire = []
        for data in back:
            wire += transmits(a.frame_received(now, data))
        wire += transmits(a.on_timer(now))
        for data in transmits(b.on_timer(now)):
            wire_b = transmits(a.frame_received(now, data))
            wire += wire_b
        if a.ready:
            break
    assert a.ready
    assert {r.key for r in a.table} >= {s.key for s in states}


def test_without_a_key_frames_stay_plain_pfsync() -> None:
    plain = Replicator(ReplicatorConfig(creatorid=7), random.Random(4))
    assert plain.config.frame_budget() == ReplicatorConfig(creatorid=7, key=KEY).frame_budget() + 36
    (req,) = transmits(plain.started(0.0))
    assert [s.action for s in decode_frame(req).sections] == [Act.XSEQ, Act.UPD_REQ]
    assert "correct" not in repr(ReplicatorConfig(creatorid=7, key=KEY))


def test_the_sync_key_is_validated_and_never_echoed() -> None:
    cfg = parse_statesync({"interface": "sync0", "key": KEY.decode()}, "n1")
    assert cfg is not None
    assert cfg.replicator.key == KEY
    assert KEY.decode() not in repr(cfg)
    with pytest.raises(ConfigError) as exc:
        parse_statesync({"interface": "sync0", "key": "short-secret"}, "n1")
    assert exc.value.field == "statesync.key"
    assert "short-secret" not in str(exc.value)


def test_the_sync_key_goes_through_the_node_config_loader(tmp_path: Path) -> None:
    toml = """
[node]
name = "node1"
[[vhid]]
vhid = 1
interface = "lan"
srcip = "192.168.110.251"
vips = ["192.168.110.254/24"]
password = "pw"
[statesync]
interface = "sync"
peer = "172.16.1.6"
key = "%s"
"""
    path = tmp_path / "node.toml"
    path.write_text(toml % KEY.decode())
    node, config = load_node_config(path)
    assert node.sync is not None
    assert node.sync.replicator.key == KEY
    assert KEY.decode() not in repr(config)
    path.write_text(toml % "too-short")
    with pytest.raises(ConfigError) as exc:
        load_node_config(path)
    assert exc.value.field == "statesync.key"
    assert "too-short" not in str(exc.value)
