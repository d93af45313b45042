"""Lab soak: `carpsim lab unsinkable --cycles N` on a private lab, judged on broken streams.

    sudo python benchmarks/soak_unsinkable.py --cycles 100 [--settle 6] [--streams 4]
        [--sync-fault] [--out benchmarks/results/soak]

Brings up a reference lab under a fresh prefix (``soak<hex>-``), optionally puts the issue's
fault on the SYNC link for the whole run (``--sync-fault``: 20 % loss, 10 ms delay, 50 ms
jitter, 10 % reordering, 5 % duplication, through `carpsim lab impair node1:sync`), runs the
unsinkable protocol for N kill/failback cycles (Force Off node1, node2 takes over, node1
powers on and fails back) with ICMP and TCP probes, and always tears the lab down. Pass: zero
broken TCP streams (reset or stalled past the phase) over every phase and no FAILURE verdict.
Writes OUT.json (the whole unsinkable result plus the soak summary) and OUT.md (a table).
Exit 0 on pass, 1 on fail. Not for CI: N=100 with the default settle takes ~20 minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from carpsim.lab import impair, unsinkable
from carpsim.lab.session import Lab
from carpsim.net import netns

SYNC_FAULT = impair.ImpairSpec(
    loss=20, delay=0.01, jitter=0.05, reorder=0.1, duplicate=0.05, seed=14
)


def _say(line: str) -> None:
    print(f"  {line}", flush=True)


def summarize(result: dict[str, Any], wall_s: float, sync_fault: bool) -> dict[str, Any]:
    broken: list[dict[str, Any]] = []
    takeovers: list[float] = []
    stalls: list[float] = []
    for cycle in result.get("cycles", []):
        for kind in ("failover", "failback"):
            phase = cycle[kind]
            tcp = phase.get("tcp", {})
            broken += [{"cycle": cycle["cycle"], "phase": kind, **b} for b in tcp.get("broken", [])]
            if tcp.get("max_stall_ms") is not None:
                stalls.append(float(tcp["max_stall_ms"]))
            if kind == "failover":
                takeovers += [float(ms) for ms in phase.get("takeover_ms", {}).values() if ms]
    passed = not broken and result.get("verdict") != "FAILURE"
    return {
        "pass": passed,
        "cycles": len(result.get("cycles", [])),
        "verdict": result.get("verdict"),
        "broken_streams": len(broken),
        "broken": broken[:50],
        "sync_fault": (vars(SYNC_FAULT) if sync_fault else None),
        "takeover_ms": _spread(takeovers),
        "max_stall_ms": _spread(stalls),
        "ping": result.get("failover", {}).get("ping"),
        "wall_s": round(wall_s, 1),
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def markdown(summary: dict[str, Any]) -> str:
    def cell(spread: dict[str, float] | None) -> str:
        return "-" if spread is None else f"{spread['min']} / {spread['median']} / {spread['max']}"

    fault = "SYNC: 20 % loss, 10+50 ms, 10 % reorder, 5 % dup" if summary["sync_fault"] else "none"
    rows = [
        ("result", "PASS" if summary["pass"] else "FAIL"),
        ("cycles (kill + failback)", str(summary["cycles"])),
        ("unsinkable verdict", str(summary["verdict"])),
        ("broken streams", str(summary["broken_streams"])),
        ("fault during the run", fault),
        ("takeover ms (min / median / max, per VHID)", cell(summary["takeover_ms"])),
        ("longest stream stall ms per phase (min / median / max)", cell(summary["max_stall_ms"])),
        ("wall time s", str(summary["wall_s"])),
    ]
    lines = ["# carpsim lab soak", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if summary["broken"]:
        lines += ["", "## broken streams", ""]
        lines += [f"- cycle {b['cycle']} {b['phase']}: {b}" for b in summary["broken"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--sync-fault", action="store_true", help="impair node1:sync throughout")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"))
    args = parser.parse_args(argv)
    opts = unsinkable.Options(cycles=args.cycles, settle=args.settle, streams=args.streams)
    opts.check(0.0)
    lab = Lab.create("reference", prefix=netns.unique_prefix("soak"))
    t0 = time.monotonic()
    try:
        lab.up(progress=_say, timeout=15.0)
        if args.sync_fault:
            impair.apply(lab, "node1:sync", SYNC_FAULT)
            _say("node1:sync impaired for the whole run")
        result, _ = unsinkable.run(lab.paths.prefix, opts, _say)
        result["impairments"] = impair.describe(lab)
    finally:
        lab.down()
    summary = summarize(result, time.monotonic() - t0, args.sync_fault)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "unsinkable": result}, indent=2) + "\n"
    )
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
