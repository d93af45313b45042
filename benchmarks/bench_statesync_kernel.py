"""State sync end to end: real `carpsim node` daemons, kernel conntrack tables, a sync link.

    sudo .venv/bin/python benchmarks/bench_statesync_kernel.py [--states 50000] [--rate 1000]

Topology (all in namespaces created and removed here): a switch namespace with two bridges
(lan, sync) and two node namespaces; each node runs `carpsim node` with CARP on lan and
[statesync] on the sync /30, unicast to the other.

(a) Bulk: node2 holds N injected conntrack entries (KernelConntrackTable.apply_many, so they
    reach node2's daemon through the same NEW-event path as real flows); node1's daemon starts.
    Measured: daemon start -> node1's *kernel* holds N entries (polled), and the BulkCompleted
    duration node1 reports.
(b) Latency: entries are injected on node2 at `rate`/s for `seconds` (batches every 10 ms, each
    stamped with its send time); a subscriber on node1's conntrack NEW events stamps their arrival
    in node1's kernel. Reported p50/p99/max of the difference.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from carpsim.net import netns
from carpsim.net.conntrack import KernelConntrackTable, enable_events, run_in_netns
from carpsim.runtime.control import query
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

PASSWORD = "K33p_It_S3cr3t!"


def sh(ns: str, *argv: str) -> None:
    netns.run(ns, list(argv), check=True)


def config(tmp: Path, name: str, last: int, skew: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[node]
name = "{name}"
control = "{tmp / (name + ".sock")}"

[carp]
password = "{PASSWORD}"
advbase = 1
advskew = {skew}

[[vhid]]
vhid = 9
interface = "lan"
srcip = "10.61.0.{last}"
vips = ["10.61.0.254/24"]

[statesync]
interface = "sync"
peer = "172.16.61.{3 - last}"
bulk_retry_interval = 0.5
bulk_max_tries = 2
""")
    return path


def flows(n: int, base: int = 0) -> list[StateRecord]:
    out = []
    for j in range(n):
        i = base + j
        src = bytes((10, 61, 1 + i // 60000, 1 + (i // 240) % 250))
        out.append(
            StateRecord(
                FlowKey(6, src, 1024 + i % 60000, bytes((10, 62, 0, 1)), 443),
                tcp_state=TcpState.ESTABLISHED,
                timeout=3600,
            )
        )
    return out


def sync_status(sock: Path) -> dict[str, Any] | None:
    try:
        st: dict[str, Any] = query(str(sock), {"cmd": "status"}, timeout=2.0)["statesync"]
    except (OSError, ValueError, KeyError):
        return None
    return st


def wait(pred: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def build(prefix: str) -> tuple[str, str, str]:
    sw, n1, n2 = f"{prefix}sw", f"{prefix}n1", f"{prefix}n2"
    for ns in (sw, n1, n2):
        netns.create(ns)
    for br in ("lan", "sync"):
        sh(sw, "ip", "link", "add", br, "type", "bridge")
        sh(sw, "ip", "link", "set", br, "up")
    for last, ns in ((1, n1), (2, n2)):
        for br, addr in (("lan", f"10.61.0.{last}/24"), ("sync", f"172.16.61.{last}/30")):
            port = f"{br[0]}{last}"
            sh(sw, "ip", "link", "add", port, "type", "veth", "peer", "name", br, "netns", ns)
            sh(sw, "ip", "link", "set", port, "master", br, "up")
            sh(ns, "ip", "addr", "add", addr, "dev", br)
            sh(ns, "ip", "link", "set", br, "up")
        sh(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_max=400000")
        enable_events(ns)
    return sw, n1, n2


def count(ns: str) -> int:
    return run_in_netns(ns, lambda: len(KernelConntrackTable()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--states", type=int, default=50_000)
    ap.add_argument("--rate", type=int, default=1000, help="new flows per second in (b)")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    netns.require_root()
    prefix = netns.unique_prefix("bsk")
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"states": args.states}
    with TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            _sw, n1, n2 = build(prefix)
            log2 = open(tmp / "n2.log", "wb")  # noqa: SIM115 - lives as long as the daemon
            procs.append(
                netns.popen(
                    n2,
                    [
                        sys.executable,
                        "-m",
                        "carpsim",
                        "node",
                        "--config",
                        str(config(tmp, "node2", 2, 100)),
                    ],
                    stdout=log2,
                    stderr=subprocess.STDOUT,
                )
            )
            wait(lambda: (s := sync_status(tmp / "node2.sock")) and s["ready"], 15, "node2")
            with KernelConntrackTable(netns=n2) as t2:
                res = t2.apply_many(flows(args.states))
            assert res.created == args.states, res
            wait(
                lambda: (
                    (s := sync_status(tmp / "node2.sock")) and s["states"]["mirror"] >= args.states
                ),
                30,
                "node2 mirror",
            )
            # (a) bulk
            start = time.monotonic()
            log1 = open(tmp / "n1.log", "wb")  # noqa: SIM115
            procs.append(
                netns.popen(
                    n1,
                    [
                        sys.executable,
                        "-m",
                        "carpsim",
                        "node",
                        "--config",
                        str(config(tmp, "node1", 1, 0)),
                    ],
                    stdout=log1,
                    stderr=subprocess.STDOUT,
                )
            )
            wait(lambda: count(n1) >= args.states, 60, "node1 kernel full", interval=0.05)
            result["bulk_kernel_s"] = round(time.monotonic() - start, 3)
            s1 = wait(
                lambda: (s := sync_status(tmp / "node1.sock")) and s["bulk"]["count"] and s,
                10,
                "node1 bulk",
            )
            result["bulk_reported_s"] = s1["bulk"]["last_duration_s"]
            result["bulk_states"] = s1["bulk"]["last_states"]
            result["bulk_gave_up"] = s1["bulk"]["gave_up"]
            s2 = sync_status(tmp / "node2.sock") or {}
            result["served_s"] = s2.get("bulk", {}).get("last_served_duration_s")
            result["node2_resends"] = s2.get("replicator", {}).get("resends")
            result["node2_tx_errors"] = s2.get("tx_errors")
            time.sleep(1.0)
            # (b) latency
            result.update(latency(n1, n2, args.rate, args.seconds, args.states))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
            netns.remove_all(prefix)
    print(json.dumps(result, indent=1))
    return 0


def latency(n1: str, n2: str, rate: int, seconds: float, base: int) -> dict[str, Any]:
    sent: dict[FlowKey, float] = {}
    seen: dict[FlowKey, float] = {}
    stop = threading.Event()
    sub = KernelConntrackTable(netns=n1)
    sub.subscribe()
    sub.read_events(max_reads=100_000)

    def listen() -> None:
        fd = sub.fileno()
        while not stop.is_set():
            if select.select([fd], [], [], 0.1)[0]:
                now = time.monotonic()
                for kind, item in sub.read_events(max_reads=1000):
                    if kind == "new" and isinstance(item, StateRecord):
                        seen.setdefault(item.key, now)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    total = int(rate * seconds)
    per_tick = max(1, rate // 100)
    recs = flows(total, base + 100_000)
    with KernelConntrackTable(netns=n2) as t2:
        t0 = time.monotonic()
        for i in range(0, total, per_tick):
            target = t0 + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            batch = recs[i : i + per_tick]
            at = time.monotonic()
            t2.apply_many(batch)
            for r in batch:
                sent[r.key] = at
    end = time.monotonic() + 5.0
    while len(seen) < total and time.monotonic() < end:
        time.sleep(0.05)
    stop.set()
    th.join()
    sub.close()
    lat = sorted(seen[k] - sent[k] for k in sent if k in seen)
    if not lat:
        return {"latency_missing": total}
    return {
        "latency_flows": total,
        "latency_arrived": len(lat),
        "latency_p50_ms": round(statistics.median(lat) * 1000, 1),
        "latency_p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1),
        "latency_max_ms": round(lat[-1] * 1000, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
