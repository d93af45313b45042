"""Idle CPU of a carpsim node with three VHIDs at advbase 1, read from /proc/PID/stat."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from carpsim.lab.probes import AdvertCapture, cpu_seconds

from .contenders import PASSWORD, Daemon, spawn
from .topology import PREFIXLEN, SUBNET, Node, Segment, segment

VHIDS = (1, 2, 3)


def _node_toml(seg: Segment, node: Node, skew: int, workdir: Path) -> Path:
    vhids = "".join(
        textwrap.dedent(f"""
        [[vhid]]
        vhid = {v}
        interface = "{node.ifname}"
        srcip = "{node.ip}"
        vips = ["{SUBNET}.{250 - v}/{PREFIXLEN}"]
        """)
        for v in VHIDS
    )
    path = workdir / f"cpu-{node.name}.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [node]
        name = "cpu-{node.name}"
        control = "{workdir / f"cpu-{node.name}.sock"}"

        [carp]
        password = "{PASSWORD}"
        advbase = 1
        advskew = {skew}
        preempt = true
        """)
        + vhids
    )
    return path


def measure(workdir: Path, seconds: float) -> dict[str, Any]:
    """CPU share (fraction of one core) of the master and the backup node over `seconds`,
    after the election has settled."""
    workdir.mkdir(parents=True, exist_ok=True)
    daemons: list[Daemon] = []
    with segment() as seg, AdvertCapture(seg.switch, [seg.a.port, seg.b.port]) as cap:
        try:
            for node, skew in ((seg.a, 0), (seg.b, 100)):
                conf = _node_toml(seg, node, skew, workdir)
                argv = [sys.executable, "-m", "carpsim", "node", "--config", str(conf)]
                daemons.append(spawn(node, argv, workdir / f"cpu-{node.name}.log"))
            time.sleep(6.0)  # master-down (3 s) plus start-up and settling
            master_vhids = {
                a.vhid for a in cap.adverts() if a.ifname == seg.a.port and a.at > time.time() - 1.5
            }
            start = {d.pid: cpu_seconds(d.pid) for d in daemons}
            t0 = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - t0
            used = {d.pid: cpu_seconds(d.pid) - start[d.pid] for d in daemons}
            adverts = [a for a in cap.adverts() if a.at > time.time() - elapsed]
        finally:
            for d in daemons:
                d.kill()
    a_pid, b_pid = (d.pid for d in daemons)
    return {
        "vhids": len(VHIDS),
        "seconds": round(elapsed, 2),
        "master_vhids_on_a": sorted(master_vhids),
        "adverts_seen": len(adverts),
        "master_share": used[a_pid] / elapsed,
        "backup_share": used[b_pid] / elapsed,
        "master_cpu_seconds": used[a_pid],
        "backup_cpu_seconds": used[b_pid],
    }
