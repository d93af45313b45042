"""Config sync latency: an edit on the master until the rule is active in the backup's kernel.

    sudo .venv/bin/python benchmarks/bench_configsync.py [--edits 100]

The reference lab (network namespaces, unique prefix, always torn down) with its two real
``carpsim node`` daemons: node1 pushes to node2's SYNC address, as the lab configures hasync.
Per edit, the clock starts before the ``add-rule`` request on node1's control socket (what
``carpsim lab config node1 add-rule`` sends): node1 validates, writes its file, loads its own
ruleset, answers, and pushes in a thread (version check, ``restore_config_section``); node2
merges, writes its file and loads the new ruleset with ``nft -f``. The clock stops when
``nft list chain`` in node2's namespace shows the new rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from carpsim.lab.session import Lab
from carpsim.net import netns
from carpsim.runtime import control

LISTING = ["nft", "list", "chain", "ip", "carpsim", "forward"]


def run(edits: int) -> dict[str, Any]:
    lab = Lab.create("reference", prefix=netns.unique_prefix("cfb"))
    lat: list[float] = []
    try:
        lab.up()
        master = str(lab.paths.control("node1"))
        backup_ns = lab.namespace_of("node2")
        for i in range(edits):
            rule = {"interface": "lan", "action": "block", "protocol": "tcp",
                    "source": "lan net", "destination": f"198.51.100.{i % 250 + 1}",
                    "destination_port": str(10000 + i), "descr": f"bench edit {i}"}  # fmt: skip
            t0 = time.perf_counter()
            reply = control.query(
                master, {"cmd": "config", "op": "add-rule", "args": {"rule": rule, "position": 0}},
                timeout=30,
            )  # fmt: skip
            if not reply.get("ok"):
                raise RuntimeError(f"edit {i} refused: {reply}")
            deadline = t0 + 10
            while f"bench edit {i}" not in netns.run(backup_ns, LISTING).stdout:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"edit {i} never reached the backup's kernel")
                time.sleep(0.001)
            lat.append(time.perf_counter() - t0)
        status = control.query(master, {"cmd": "status"})["configsync"]
    finally:
        lab.down()
    q = statistics.quantiles(lat, n=100)
    return {
        "edits": edits, "syncs_ok": status["syncs_ok"], "syncs_failed": status["syncs_failed"],
        "p50_ms": round(statistics.median(lat) * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--edits", type=int, default=100)
    print(json.dumps(run(p.parse_args().edits)))


if __name__ == "__main__":
    main()
