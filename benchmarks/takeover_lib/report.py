"""Summaries, pairwise ratios, target checks, the text table, JSON and the plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .scenario import Result

MEASURES = (
    ("overhead", "overhead over master-down"),
    ("detection", "last advert -> first advert"),
    ("gap", "data-plane gap (failover)"),
    ("serve_lag", "new master's first advert -> first reply"),
    ("failback_gap", "data-plane gap (failback)"),
)

# (numerator, denominator, measure, target ratio or None): compared rep by rep in the same run.
PAIRS = (
    ("carpsim", "ucarp", "gap", 0.85),
    ("carpsim", "keepalived", "gap", 1.0),
    ("carpsim-fast", "keepalived-v3", "gap", 0.8),
    ("carpsim", "ucarp", "detection", None),
    ("carpsim", "keepalived", "detection", None),
    ("carpsim-fast", "keepalived-v3", "detection", None),
    ("carpsim", "ucarp", "failback_gap", None),
    ("carpsim", "keepalived", "failback_gap", None),
    ("carpsim-fast", "keepalived-v3", "failback_gap", None),
)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), the numpy default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p95": percentile(values, 95),
    }


def summarise(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.contender for r in results):
        mine = [r for r in results if r.contender == name]
        out[name] = {"master_down": mine[0].master_down}
        for key, _label in MEASURES:
            out[name][key] = stats([getattr(r, key) for r in mine])
    return out


def ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for num, den, key, target in PAIRS:
        by_rep = {(r.contender, r.rep): getattr(r, key) for r in results}
        reps = sorted(rep for (c, rep) in by_rep if c == num and (den, rep) in by_rep)
        if not reps:
            continue
        per_rep = [
            by_rep[(num, rep)] / by_rep[(den, rep)] for rep in reps if by_rep[(den, rep)] > 0
        ]
        entry: dict[str, Any] = {
            "pair": f"{num}/{den}",
            "measure": key,
            "reps": reps,
            "per_rep": per_rep,
            **stats(per_rep),
        }
        if target is not None:
            entry["target"] = target
            entry["met"] = entry["median"] <= target
        found.append(entry)
    return found


def targets(
    summary: dict[str, dict[str, Any]],
    pair_ratios: Sequence[dict[str, Any]],
    cpu: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for name in ("carpsim", "carpsim-fast"):
        if name in summary:
            p95 = summary[name]["overhead"]["p95"]
            checks.append(
                {
                    "target": f"{name} overhead over master-down p95 <= 5 ms",
                    "value": p95,
                    "met": p95 <= 0.005,
                }
            )
    for r in pair_ratios:
        if "target" in r:
            checks.append(
                {
                    "target": f"{r['pair']} {r['measure']} median ratio <= {r['target']}",
                    "value": r["median"],
                    "met": r["met"],
                }
            )
    if cpu is not None:
        share = max(cpu["master_share"], cpu["backup_share"])
        checks.append(
            {
                "target": "carpsim idle CPU, 3 VHIDs at advbase 1, <= 1 % of a core",
                "value": share,
                "met": share <= 0.01,
            }
        )
    return checks


def _ms(x: float) -> str:
    return f"{x * 1e3:,.1f}"


def table(
    summary: dict[str, dict[str, Any]],
    pair_ratios: Sequence[dict[str, Any]],
    checks: Sequence[dict[str, Any]],
    cpu: dict[str, Any] | None,
) -> str:
    lines = [
        "All times in ms: median [min .. max] over the repetitions (p95 for the overhead).",
        "",
        "| contender | master-down (theory) | detection | overhead (p95) | "
        "data-plane gap | advert -> reply | failback gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():

        def cell(key: str, s: dict[str, Any] = s) -> str:
            st = s[key]
            return f"{_ms(st['median'])} [{_ms(st['min'])} .. {_ms(st['max'])}]"

        lines.append(
            f"| {name} (n={s['gap']['n']}) | {_ms(s['master_down'])} | "
            f"{cell('detection')} | {cell('overhead')} ({_ms(s['overhead']['p95'])}) | "
            f"{cell('gap')} | {cell('serve_lag')} | {cell('failback_gap')} |"
        )
    if pair_ratios:
        lines += [
            "",
            "Ratios, rep by rep in the same run: median [min .. max]",
            "",
            "| pair | measure | ratio | target |",
            "|---|---|---|---|",
        ]
        for r in pair_ratios:
            target = (
                f"<= {r['target']} ({'met' if r['met'] else 'MISSED'})" if "target" in r else ""
            )
            lines.append(
                f"| {r['pair']} | {r['measure']} | {r['median']:.3f} "
                f"[{r['min']:.3f} .. {r['max']:.3f}] | {target} |"
            )
    if cpu is not None:
        lines += [
            "",
            f"carpsim idle CPU, {cpu['vhids']} VHIDs at advbase 1 over "
            f"{cpu['seconds']} s: master {cpu['master_share'] * 100:.2f} % of a core, "
            f"backup {cpu['backup_share'] * 100:.2f} % (master on node A for VHIDs "
            f"{cpu['master_vhids_on_a']}, {cpu['adverts_seen']} adverts in the window)",
        ]
    if checks:
        lines += ["", "Targets:"]
        lines += [
            f"- {'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['value']:.4g}"
            for c in checks
        ]
    return "\n".join(lines)


def plot(results: Sequence[Result], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only needed with --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    present = {r.contender for r in results}
    wanted = [
        ("advbase 1", ["carpsim", "ucarp", "keepalived"]),
        ("fast (~10 ms adverts)", ["carpsim-fast", "keepalived-v3"]),
    ]
    classes = [(t, [n for n in names if n in present]) for t, names in wanted]
    classes = [(t, names) for t, names in classes if names]
    measures = (
        ("overhead", "overhead over master-down (ms)"),
        ("gap", "data-plane gap, failover (ms)"),
        ("failback_gap", "data-plane gap, failback (ms)"),
    )
    fig, axes = plt.subplots(
        len(classes),
        len(measures),
        squeeze=False,
        figsize=(4.2 * len(measures), 3.6 * len(classes)),
    )
    for row, (title, names) in enumerate(classes):
        for col, (key, label) in enumerate(measures):
            ax = axes[row][col]
            for i, name in enumerate(names):
                values = [getattr(r, key) * 1e3 for r in results if r.contender == name]
                ax.scatter([i] * len(values), values, alpha=0.6, s=18)
                ax.hlines(statistics.median(values), i - 0.3, i + 0.3, colors="black")
            ax.set_xticks(range(len(names)), names, fontsize=8)
            ax.set_title(f"{title}: {label}", fontsize=9)
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Takeover: carpsim vs ucarp and keepalived (same segment, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
