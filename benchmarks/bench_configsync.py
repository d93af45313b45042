"""Config sync latency: an edit on the master until the rule is active in the backup's kernel.

    sudo .venv/bin/python benchmarks/bench_configsync.py [--edits 100]

Two node namespaces joined by a SYNC veth (172.16.1.5/30, .6), each with the reference config
(tests/vectors/config) and its ruleset loaded. Per edit: the master adds one filter rule
(`ConfigSyncService.change`: validate, write the file, load its own ruleset, then push: version
check, ``restore_config_section``); the backup merges, writes its file and loads the new ruleset
with ``nft -f``. The clock stops when ``nft list`` in the backup's namespace shows the new rule,
which the synchronous push already guarantees; the poll is the independent check.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from carpsim.config import render
from carpsim.config.model import Action
from carpsim.configsync import apply
from carpsim.net import netns
from carpsim.net.conntrack import run_in_netns
from carpsim.runtime import configsync_service as svc

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "config"


def nft(ns: str, text: str) -> None:
    subprocess.run(netns.exec_argv(ns, ["nft", "-f", "-"]), input=text, text=True, check=True)


def service(tmp: Path, n: int, ns: str) -> svc.ConfigSyncService:
    path = tmp / f"node{n}.toml"
    path.write_text((VECTORS / f"reference-node{n}.toml").read_text())
    store = svc.ConfigStore.load(path)

    def applier(plan: apply.ApplyPlan) -> None:
        if plan.nftables is not None:
            nft(ns, plan.nftables)

    nft(ns, render(store.current))
    s = svc.ConfigSyncService(store, applier, state_dir=tmp / f"tls{n}", timeout=10.0)
    run_in_netns(ns, s.start)
    return s


def run(edits: int) -> dict[str, Any]:
    tag = secrets.token_hex(2)
    a, b = f"cfgbench-{tag}-1", f"cfgbench-{tag}-2"
    lat: list[float] = []
    try:
        netns.create(a)
        netns.create(b)
        subprocess.run(
            ["ip", "link", "add", "sync", "netns", a, "type", "veth", "peer", "sync", "netns", b],
            check=True,
        )
        for ns, addr in ((a, "172.16.1.5/30"), (b, "172.16.1.6/30")):
            netns.run(ns, ["ip", "addr", "add", addr, "dev", "sync"])
            netns.run(ns, ["ip", "link", "set", "sync", "up"])
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            master, backup = service(tmp, 1, a), service(tmp, 2, b)
            try:
                template = master.store.current.filter.rules[2]  # "new flows from lan": forward
                for i in range(edits):
                    cfg = master.store.current
                    rule = replace(template, action=Action.BLOCK,
                                   descr=f"bench edit {i}", tracker=900000 + i)  # fmt: skip
                    new = replace(cfg, filter=replace(cfg.filter, rules=(rule, *cfg.filter.rules)))
                    t0 = time.perf_counter()
                    run_in_netns(a, functools.partial(master.change, new, f"bench {i}"))
                    if master.status()["result"] != "ok":
                        raise RuntimeError(f"sync failed: {master.status()}")
                    listing = ["nft", "list", "chain", "ip", "carpsim", "forward"]
                    deadline = t0 + 10
                    while f"bench edit {i}" not in netns.run(b, listing).stdout:
                        if time.perf_counter() > deadline:
                            raise RuntimeError(f"edit {i} never reached the backup's kernel")
                        time.sleep(0.001)
                    lat.append(time.perf_counter() - t0)
                ok = master.status()["syncs_ok"]
            finally:
                master.stop()
                backup.stop()
    finally:
        netns.remove(a)
        netns.remove(b)
    q = statistics.quantiles(lat, n=100)
    return {
        "edits": edits, "syncs_ok": ok, "p50_ms": round(statistics.median(lat) * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1), "max_ms": round(max(lat) * 1000, 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--edits", type=int, default=100)
    print(json.dumps(run(p.parse_args().edits)))


if __name__ == "__main__":
    main()
