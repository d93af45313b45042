"""Takeover benchmark (issue 6): carpsim's election path against ucarp and keepalived.

Every contender runs on the same namespace segment (two nodes and a client on a bridge in a
switch namespace), repetition by repetition in the same run, so ratios compare like with like.
Per repetition: elect, pull node A's cable and SIGKILL its daemon, watch node B take over,
then plug A back in, restart its daemon and watch it preempt. Measured from the wire and the
client, not from daemon logs:

  detection  A's last advert -> B's first advert (AF_PACKET capture on the bridge ports)
  overhead   detection minus the theoretical master-down interval of B
  gap        longest stretch without an echo reply at the client (prober every 10 ms)
  failback   the same gap while A comes back and preempts

Usage (root): python benchmarks/takeover.py [--reps N] [--contenders ...] [--json F]
              [--plot F] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from takeover_lib import contenders as contenders_mod
from takeover_lib import idle_cpu, report
from takeover_lib.scenario import Result, ScenarioError, run_once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=10, help="repetitions per contender (10)")
    p.add_argument(
        "--contenders",
        nargs="+",
        default=list(contenders_mod.ALL),
        metavar="NAME",
        help=f"any of {', '.join(contenders_mod.ALL)}",
    )
    p.add_argument("--quick", action="store_true", help="1 repetition, 5 s CPU sample")
    p.add_argument("--json", type=Path, help="write every result and the summary here")
    p.add_argument("--plot", type=Path, help="write a PNG plot here")
    p.add_argument(
        "--ping-interval",
        type=float,
        default=0.01,
        help="client probe interval for the advbase 1 class (s)",
    )
    p.add_argument(
        "--fast-ping-interval",
        type=float,
        default=0.002,
        help="client probe interval for the fast class (s)",
    )
    p.add_argument(
        "--fast-skews",
        default="2,3",
        help="carpsim-fast advskew of A,B with advbase 0 (openbsd formula)",
    )
    p.add_argument(
        "--cpu-seconds",
        type=float,
        default=20.0,
        help="idle CPU sample of a 3-VHID carpsim node (0: skip)",
    )
    p.add_argument("--workdir", type=Path, help="keep configs and daemon logs here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.reps = 1
        args.cpu_seconds = min(args.cpu_seconds, 5.0)
    if args.reps < 1:
        p.error("--reps must be >= 1")
    try:
        a, b = (int(x) for x in args.fast_skews.split(","))
    except ValueError:
        p.error("--fast-skews: give two integers like 2,3")
    args.fast_skew_pair = (a, b)
    return args


def _tool_check(names: list[str]) -> list[str]:
    missing = []
    needs = {"ucarp": "ucarp", "keepalived": "keepalived", "keepalived-v3": "keepalived"}
    for n in names:
        tool = needs.get(n)
        if tool and shutil.which(tool) is None:
            missing.append(tool)
    return missing


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one branch per contender and output option
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("takeover.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        chosen = contenders_mod.build(args.contenders, args.fast_skew_pair)
    except ValueError as exc:
        print(f"takeover.py: --contenders: {exc}", file=sys.stderr)
        return 2
    missing = _tool_check(args.contenders)
    if missing:
        print(
            f"takeover.py: missing tools: {', '.join(sorted(set(missing)))} "
            "(make setup installs them)",
            file=sys.stderr,
        )
        return 2
    # A SIGTERM must unwind through the context managers so the namespaces are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="carpsim-takeover-"))
    verbose = not args.quiet
    results: list[Result] = []
    failures: list[dict[str, Any]] = []
    started = time.time()
    for c in chosen:
        if verbose:
            print(
                f"# {c.describe()}; theoretical master-down {c.master_down() * 1e3:.1f} ms",
                flush=True,
            )
    for rep in range(args.reps):
        # Rotate the order so no contender always runs first (warm caches, neighbour noise).
        order = chosen[rep % len(chosen) :] + chosen[: rep % len(chosen)]
        for c in order:
            interval = args.ping_interval if c.klass == "advbase1" else args.fast_ping_interval
            try:
                results.append(run_once(c, rep, workdir, interval, verbose))
            except ScenarioError as exc:
                failures.append({"contender": c.name, "rep": rep, "error": str(exc)})
                print(f"  {c.name} rep {rep}: FAILED: {exc} (logs in {workdir})", flush=True)

    cpu = None
    if args.cpu_seconds > 0 and "carpsim" in args.contenders:
        cpu = idle_cpu.measure(workdir / "cpu", args.cpu_seconds)

    summary = report.summarise(results) if results else {}
    pair_ratios = report.ratios(results)
    checks = report.targets(summary, pair_ratios, cpu)
    command = "python benchmarks/takeover.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print()
    print(f"Command: {command}")
    print(
        f"Host: {os.cpu_count()} cores, kernel {platform.release()}, "
        f"{time.time() - started:.0f} s, load average {os.getloadavg()[0]:.2f}"
    )
    print(report.table(summary, pair_ratios, checks, cpu))
    if failures:
        print(
            f"\n{len(failures)} repetition(s) failed: "
            + "; ".join(f"{f['contender']}#{f['rep']}: {f['error']}" for f in failures)
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "host": {
                        "cores": os.cpu_count(),
                        "kernel": platform.release(),
                        "loadavg_end": os.getloadavg(),
                    },
                    "contenders": {
                        c.name: {
                            "describe": c.describe(),
                            "version": c.version(),
                            "class": c.klass,
                            "master_down": c.master_down(),
                        }
                        for c in chosen
                    },
                    "ping_interval": {
                        "advbase1": args.ping_interval,
                        "fast": args.fast_ping_interval,
                    },
                    "results": [r.as_dict() for r in results],
                    "failures": failures,
                    "summary": summary,
                    "ratios": pair_ratios,
                    "idle_cpu": cpu,
                    "targets": checks,
                },
                indent=2,
            )
        )
    if args.plot and results:
        report.plot(results, args.plot)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
