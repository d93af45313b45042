"""Run the benchmarks and print one table (what `make bench` calls).

Pure micro-benchmarks always run (CARP codec and simulator, state-sync codec and bulk). The lab
benchmarks need root and network namespaces (kernel conntrack, state sync between two real
daemons) and run only as root, or never with --pure. The takeover comparison against ucarp and
keepalived takes minutes and runs only with --takeover. Each benchmark runs in its own process
(as its own script documents), so one failing does not hide the others; the exit status is
non-zero if any failed.

    python benchmarks/run_all.py [--quick] [--pure] [--takeover] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Row:
    suite: str
    measure: str
    value: str
    target: str = ""


@dataclass
class Outcome:
    name: str
    seconds: float
    ok: bool
    rows: list[Row] = field(default_factory=list)
    error: str = ""


def _run(script: str, *args: str, timeout: float) -> tuple[bool, str, str, float]:
    return _run_argv([str(HERE / script), *args], timeout)


def _run_argv(argv: list[str], timeout: float) -> tuple[bool, str, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return False, "", f"timed out after {timeout:.0f} s", time.monotonic() - start
    return proc.returncode == 0, proc.stdout, proc.stderr, time.monotonic() - start


def _last_json(text: str) -> Any:
    """The JSON document a script printed last (scripts may log lines before it)."""
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def _fmt(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"


def carp(quick: bool) -> Outcome:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import bench_carp as b; "
        f"print(json.dumps({{'rates': b.run({0.2 if quick else 1.0}), 'targets': b.TARGETS}}))"
    )
    ok, out, err, took = _run_argv(["-c", code], timeout=600)
    if not ok:
        return Outcome("bench_carp", took, False, error=_tail(err))
    data = _last_json(out)
    rows = [
        Row("carp", name, _fmt(rate), f">= {data['targets'][name]:,}/s")
        for name, rate in data["rates"].items()
    ]
    return Outcome("bench_carp", took, True, rows)


def statesync(quick: bool) -> Outcome:
    states = "20000" if quick else "100000"
    ok, out, err, took = _run(
        "bench_statesync.py", "--states", states, "--repeat", "3", "--json", timeout=900
    )
    if not ok:
        return Outcome("bench_statesync", took, False, error=_tail(err))
    data = _last_json(out)
    c, b = data["codec"], data["bulk"]
    rows = [
        Row("statesync", f"codec {k.removesuffix('_per_s')} ({states} states)", _fmt(c[k]))
        for k in ("encode_per_s", "decode_per_s", "apply_per_s")
    ]
    rows.append(
        Row("statesync", "encode + decode + apply", _fmt(c["pipeline_per_s"]), ">= 100,000/s")
    )
    rows.append(
        Row(
            "statesync",
            f"bulk of {b['states']:.0f} states, two replicators",
            f"{b['virtual_s']:.2f} s virtual, {b['wall_s']:.2f} s wall",
        )
    )
    return Outcome("bench_statesync", took, True, rows)


def conntrack(quick: bool) -> Outcome:
    n = "10000" if quick else "50000"
    ok, out, err, took = _run("bench_conntrack.py", "-n", n, timeout=900)
    if not ok:
        return Outcome("bench_conntrack", took, False, error=_tail(err))
    rows = []
    for line in out.splitlines():
        if line.startswith("- ") and ":" in line:
            measure, value = line[2:].split(":", 1)
            rows.append(Row("conntrack (kernel)", measure.strip(), value.strip()))
    return Outcome("bench_conntrack", took, True, rows)


def statesync_kernel(quick: bool) -> Outcome:
    args = ["--states", "10000", "--seconds", "3"] if quick else []
    ok, out, err, took = _run("bench_statesync_kernel.py", *args, timeout=900)
    if not ok:
        return Outcome("bench_statesync_kernel", took, False, error=_tail(err))
    data = _last_json(out)
    rows = [
        Row("statesync (kernel)", str(k), str(v), "< 5 s" if k.startswith("bulk_to_kernel") else "")
        for k, v in data.items()
        if isinstance(v, int | float | str)
    ]
    return Outcome("bench_statesync_kernel", took, True, rows)


def takeover(quick: bool) -> Outcome:
    args = ["--quick"] if quick else []
    ok, out, err, took = _run("takeover.py", *args, timeout=3600)
    if not ok:
        return Outcome("takeover", took, False, error=_tail(err))
    rows = [Row("takeover", "report", line) for line in out.splitlines() if line.startswith("|")]
    return Outcome("takeover", took, True, rows)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed without output"


def render(outcomes: list[Outcome], skipped: list[tuple[str, str]]) -> str:
    rows = [r for o in outcomes for r in o.rows]
    widths = [
        max([len(h), *(len(getattr(r, a)) for r in rows)])
        for h, a in (("suite", "suite"), ("measure", "measure"), ("value", "value"))
    ]
    head = f"{'suite':<{widths[0]}}  {'measure':<{widths[1]}}  {'value':>{widths[2]}}  target"
    lines = [head, "-" * len(head)]
    lines += [
        f"{r.suite:<{widths[0]}}  {r.measure:<{widths[1]}}  {r.value:>{widths[2]}}  {r.target}"
        for r in rows
    ]
    lines.append("")
    for o in outcomes:
        status = "ok" if o.ok else f"FAILED: {o.error}"
        lines.append(f"{o.name:<24} {o.seconds:6.1f} s  {status}")
    lines += [f"{name:<24}      -    skipped ({why})" for name, why in skipped]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--pure", action="store_true", help="only the benchmarks that need no root")
    ap.add_argument("--takeover", action="store_true", help="also the ucarp/keepalived race")
    ap.add_argument("--json", type=Path, help="write every row here as JSON")
    args = ap.parse_args(argv)

    plan: list[tuple[str, Any]] = [("bench_carp", carp), ("bench_statesync", statesync)]
    skipped: list[tuple[str, str]] = []
    lab = [("bench_conntrack", conntrack), ("bench_statesync_kernel", statesync_kernel)]
    if args.pure:
        skipped += [(name, "--pure") for name, _ in lab]
    elif os.geteuid() != 0:
        skipped += [(name, "needs root") for name, _ in lab]
    else:
        plan += lab
    if args.takeover and os.geteuid() == 0 and not args.pure:
        plan.append(("takeover", takeover))
    else:
        skipped.append(("takeover", "only with --takeover, as root"))

    outcomes = []
    for name, fn in plan:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        outcomes.append(fn(args.quick))
    print(render(outcomes, skipped))
    if args.json is not None:
        args.json.write_text(
            json.dumps([r.__dict__ for o in outcomes for r in o.rows], indent=2) + "\n"
        )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
