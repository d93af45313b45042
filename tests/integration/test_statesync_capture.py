"""The shipped Lua dissector on a capture of real replication traffic from the lab.

The reference lab replicates 30 NATed TCP streams; node2 is then power-cycled so it pulls a bulk
update from node1. tcpdump on the SYNC bridge records everything both daemons send; tshark with
`carpsim/dissectors/pfsync.lua` must decode every frame as pfsync v5 (no malformed packet),
show the sections the protocol promises (the XSEQ reliability header, full state records,
BUS start/end around the bulk), and agree with the daemons' own counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from carpsim.lab import nodes
from carpsim.lab.session import Lab
from carpsim.net import netns
from carpsim.statesync.constants import Act, BusStatus

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]

LUA = Path(__file__).resolve().parents[2] / "carpsim" / "dissectors" / "pfsync.lua"
TOOL = str(Path(__file__).with_name("statesync_streams.py"))
SERVER = "203.0.113.10"
PORT = 5202
STREAMS = 30
NODE1, NODE2 = "172.16.1.5", "172.16.1.6"


def _sync(lab: Lab, node: str) -> dict[str, Any]:
    st = nodes.query_status(lab.paths, node)
    assert st is not None, f"{node} does not answer"
    sync: dict[str, Any] = st["statesync"]
    return sync


def _streams_open(out: Path) -> bool:
    try:
        s = json.loads(out.read_text())
    except (FileNotFoundError, ValueError):
        return False
    return bool(s["opened"] == STREAMS and min(s["bytes"]) > 0)


def _tshark(cap: Path, *args: str) -> list[list[str]]:
    res = subprocess.run(
        ["tshark", "-X", f"lua_script:{LUA}", "-r", str(cap), *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "Lua" not in res.stderr, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines() if line]


def listening(lab: Lab, host: str, port: int) -> bool:
    """A TCP socket in `host`'s namespace listens on `port` (the test server is ready)."""
    res = lab.run(host, ["ss", "-Hltn", f"sport = :{port}"])
    return res.returncode == 0 and bool(res.stdout.strip())


def test_lua_dissector_decodes_real_replication(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    assert shutil.which("tshark"), "make setup installs tshark"
    assert shutil.which("tcpdump"), "make setup installs tcpdump"
    cap = tmp_path / "sync.pcap"
    out = tmp_path / "streams.json"
    lab = Lab.create("reference", prefix=netns.unique_prefix("sc"))
    try:
        lab.up(timeout=15.0)
        dump = netns.popen(
            lab.namespace_of("sw"),
            ["tcpdump", "-i", "sync", "-U", "--immediate-mode", "-n", "-w", str(cap),
             "ip proto 240"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert dump.stderr is not None
        assert "listening" in dump.stderr.readline().decode()
        sent_before = {n: _sync(lab, n)["frames"]["tx"] for n in ("node1", "node2")}

        netns.popen(
            lab.namespace_of("server"),
            [sys.executable, TOOL, "serve", str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: listening(lab, "server", PORT), 10.0, what="the stream server")
        netns.popen(
            lab.namespace_of("client1"),
            [sys.executable, TOOL, "client", SERVER, str(PORT), str(STREAMS), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _streams_open(out), 15.0, what="30 streams flowing")
        wait_for(
            lambda: _sync(lab, "node2")["states"]["peer"] >= STREAMS,
            10.0,
            what="node2 holding node1's states",
        )

        lab.kill("node2")
        lab.start("node2")
        wait_for(
            lambda: (
                (s := nodes.query_status(lab.paths, "node2")) is not None
                and s["statesync"]["ready"]
                and s["statesync"]["bulk"]["count"] >= 1
            ),
            15.0,
            what="node2's bulk update",
        )
        time.sleep(1.5)  # let acks and a refresh round cross
        bulk = _sync(lab, "node2")["bulk"]
        sent_after = {n: _sync(lab, n)["frames"]["tx"] for n in ("node1", "node2")}
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        sent_late = {n: _sync(lab, n)["frames"]["tx"] for n in ("node1", "node2")}
    finally:
        lab.down()

    rows = _tshark(
        cap,
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "pfsync.version",
        "-e",
        "pfsync.action",
        "-e",
        "pfsync.count",
        "-e",
        "pfsync.bus.status",
    )
    assert len(rows) > 20
    assert not _tshark(cap, "-Y", "_ws.malformed || _ws.expert.severity >= error")
    assert {r[1] for r in rows} == {"PFSYNC"}
    assert {r[2] for r in rows} == {"5"}

    per_source = Counter(r[0] for r in rows)
    # node1 ran throughout: the capture holds the frames its daemon says it sent (bounded by
    # its counter read just before and just after tcpdump stopped).
    sent = sent_after["node1"] - sent_before["node1"]
    assert sent <= per_source[NODE1] <= sent_late["node1"] - sent_before["node1"]
    # node2 was restarted (its counter started again from zero): at least its new frames.
    assert per_source[NODE2] >= sent_after["node2"]

    actions: Counter[int] = Counter()
    records: Counter[int] = Counter()
    bus: list[tuple[str, int]] = []
    for src, _proto, _ver, acts, counts, statuses in rows:
        for act, count in zip(acts.split(","), counts.split(","), strict=True):
            actions[int(act)] += 1
            records[int(act)] += int(count)
        bus += [(src, int(s)) for s in statuses.split(",") if s]
    assert actions[Act.XSEQ] == len(rows)  # every frame between carpsim nodes is sequenced
    assert actions[Act.EOF] == len(rows)
    assert records[Act.INS] + records[Act.UPD] >= STREAMS + bulk["last_states"]
    assert (NODE1, BusStatus.START) in bus
    assert (NODE1, BusStatus.END) in bus
    assert bulk["last_states"] >= STREAMS
