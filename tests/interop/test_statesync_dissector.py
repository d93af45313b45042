"""The shipped Lua dissector decodes frames our codec and replicator produce (real tshark)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from carpsim.sim.sync_pair import SyncPair
from carpsim.statesync.codec import (
    BulkStatus,
    Frame,
    NackRange,
    Section,
    SeqHeader,
    StateRef,
    encode_frame,
)
from carpsim.statesync.constants import Act, BusStatus
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

pytestmark = pytest.mark.interop

LUA = Path(__file__).resolve().parents[2] / "carpsim" / "dissectors" / "pfsync.lua"
REC = StateRecord(
    FlowKey(6, bytes([192, 168, 110, 10]), 40000, bytes([203, 0, 113, 10]), 443),
    creatorid=0xA1,
    id=0x1122334455667788,
    nat_src=(bytes([192, 168, 100, 254]), 61000),
    tcp_state=TcpState.ESTABLISHED,
    timeout=300,
)


def tshark_fields(pcap: Path, *fields: str) -> list[list[str]]:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not installed")
    cmd = [tshark, "-X", f"lua_script:{LUA}", "-r", str(pcap), "-T", "fields"]
    for name in fields:
        cmd += ["-e", name]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    assert "Lua" not in res.stderr, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def write(pcap: Path, payloads: list[bytes]) -> None:
    wrpcap(str(pcap), [
        Ether() / IP(src="172.16.1.5", dst="224.0.0.240", ttl=255, proto=240) / Raw(p)
        for p in payloads
    ])  # fmt: skip


def test_handcrafted_frame_fields(tmp_path: Path) -> None:
    frame = Frame((
        Section(Act.XSEQ, (SeqHeader(0xCAFE, 7, 3, 0xBEEF, 5, 2),)),
        Section(Act.XNACK, (NackRange(1, 2), NackRange(4, 6))),
        Section(Act.UPD, (REC,)),
        Section(Act.DEL_C, (StateRef(0xA1, 9),)),
        Section(Act.BUS, (BulkStatus(0xA1, 3, BusStatus.END),)),
    ))  # fmt: skip
    pcap = tmp_path / "one.pcap"
    write(pcap, [encode_frame(frame)])
    (row,) = tshark_fields(
        pcap, "pfsync.version", "pfsync.action", "pfsync.count", "pfsync.state.id",
        "pfsync.state.src", "pfsync.state.wire_src", "pfsync.state.wire_sport",
        "pfsync.state.src_level", "pfsync.state.expire", "pfsync.xseq.seq", "pfsync.xseq.ack",
        "pfsync.xnack.first", "pfsync.xnack.last", "pfsync.ref.id", "pfsync.bus.status",
        "_ws.col.Protocol",
    )  # fmt: skip
    assert row == [
        "5", "240,241,14,7,10,12", "1,2,1,1,1,0", "0x1122334455667788", "192.168.110.10",
        "192.168.100.254", "61000", "4", "300", "7", "5", "1,4", "2,6", "0x0000000000000009",
        "2", "PFSYNC",
    ]  # fmt: skip


def test_replicator_traffic_decodes(tmp_path: Path) -> None:
    pair = SyncPair(4)
    sent: list[bytes] = []
    original = pair.link.send

    def capture(now: float, sender: str, data: bytes) -> None:
        sent.append(data)
        original(now, sender, data)

    pair.link.send = capture  # type: ignore[method-assign]
    pair.start(0)
    for i in range(12):
        key = FlowKey(6, bytes([192, 168, 110, 20 + i]), 50000 + i, bytes([203, 0, 113, 10]), 80)
        pair.local_insert(0, StateRecord(key, tcp_state=TcpState.SYN_SENT, timeout=120))
    pair.run_for(1.0)
    pair.start(1)
    pair.run_for(3.0)
    assert pair.members[1].ready
    pcap = tmp_path / "live.pcap"
    write(pcap, sent)
    rows = tshark_fields(pcap, "pfsync.version", "pfsync.xseq.epoch", "pfsync.action")
    assert len(rows) == len(sent)
    assert all(r[0] == "5" for r in rows)
    actions = ",".join(r[2] for r in rows).split(",")
    assert {"5", "10", "13", "14", "240", "12"} <= set(actions)  # UPD_REQ BUS INS UPD XSEQ EOF
