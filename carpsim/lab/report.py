"""The "unsinkable" run rendered: a terminal summary and a timeline PNG (matplotlib, Agg).

The PNG has four panels on one time axis (seconds since the probes started): CARP state per
node per VHID (from the daemons' events; the forced-off node shown as off), ping RTT with lost
probes and reply gaps, per-stream throughput, and the kill / power-on marks across all of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carpsim.errors import EnvironmentProblem
from carpsim.lab.verdict import CarpEvent, PingSample, StreamEnd, StreamSample

_STATE_COLOURS = {"MASTER": "#2ca02c", "BACKUP": "#1f77b4", "INIT": "#bbbbbb", "off": "#d62728"}


@dataclass(frozen=True)
class Timeline:
    t0: float
    t0_mono: float
    end: float
    vhids: tuple[int, ...]
    nodes: tuple[str, ...]
    initial: dict[tuple[str, int], str]
    events: Sequence[CarpEvent]
    pings: Sequence[PingSample]
    samples: Sequence[StreamSample]
    ends: Sequence[StreamEnd]
    marks: Sequence[tuple[str, float]]
    off: Sequence[tuple[str, float, float | None]]


def state_segments(tl: Timeline) -> dict[tuple[str, int], list[tuple[float, float, str]]]:
    """(node, vhid) -> [(start, end, state)] in seconds since t0, off intervals included."""
    changes: dict[tuple[str, int], list[tuple[float, str]]] = {
        (n, v): [(0.0, tl.initial.get((n, v), "INIT"))] for n in tl.nodes for v in tl.vhids
    }

    def powered_off(node: str, at: float) -> bool:
        return any(
            n == node and start <= at and (stop is None or at < stop) for n, start, stop in tl.off
        )

    for ev in tl.events:
        key = (ev.node, ev.vhid)
        # The kill switch downs the links a moment before the SIGKILL: a transition the dying
        # daemon logs in between is not a state anyone could use.
        if key in changes and not powered_off(ev.node, ev.wall):
            changes[key].append((ev.wall - tl.t0, ev.new))
    for node, start, stop in tl.off:
        for v in tl.vhids:
            changes[(node, v)].append((start - tl.t0, "off"))
            if stop is not None:
                changes[(node, v)].append((stop - tl.t0, "INIT"))
    horizon = tl.end - tl.t0
    out: dict[tuple[str, int], list[tuple[float, float, str]]] = {}
    for key, seq in changes.items():
        seq.sort(key=lambda c: c[0])
        out[key] = [
            (t, seq[i + 1][0] if i + 1 < len(seq) else horizon, st) for i, (t, st) in enumerate(seq)
        ]
    return out


def throughput(tl: Timeline, bin_s: float = 0.5) -> dict[str, tuple[list[float], list[float]]]:
    """Per stream slot (s0, s1 ...): bin centres and Mbit/s, every connection of the slot."""
    horizon = tl.end - tl.t0
    nbins = max(1, int(horizon / bin_s) + 1)
    slots: dict[str, list[float]] = {}
    for s in tl.samples:
        slot = s.conn.split(".", 1)[0]
        bins = slots.setdefault(slot, [0.0] * nbins)
        idx = int((s.last - tl.t0) / bin_s)
        if 0 <= idx < nbins:
            bins[idx] += s.nbytes
    xs = [(i + 0.5) * bin_s for i in range(nbins)]
    return {slot: (xs, [b * 8 / bin_s / 1e6 for b in bins]) for slot, bins in sorted(slots.items())}


_NO_MATPLOTLIB = "the timeline PNG needs matplotlib: pip install 'carpsim[lab]' (or drop --png)"


def require_matplotlib() -> None:
    """Fail in one line when the optional plotting dependency is not installed."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional (the 'lab' extra)
    except ImportError as exc:
        raise EnvironmentProblem(_NO_MATPLOTLIB) from exc


def write_png(tl: Timeline, result: dict[str, Any], path: Path) -> None:
    require_matplotlib()
    import matplotlib  # noqa: PLC0415 - heavy; only when a PNG is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    fig, (ax_carp, ax_ping, ax_tcp) = plt.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [1.3, 1, 1]}
    )
    segs = state_segments(tl)
    labels = []
    for row, key in enumerate(sorted(segs, key=lambda k: (k[0], k[1]))):
        labels.append(f"{key[0]} vhid {key[1]}")
        for start, stop, st in segs[key]:
            ax_carp.barh(
                row,
                stop - start,
                left=start,
                height=0.7,
                color=_STATE_COLOURS.get(st, "#999999"),
                edgecolor="none",
            )
    ax_carp.set_yticks(range(len(labels)), labels)
    ax_carp.invert_yaxis()
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in _STATE_COLOURS.values()]
    ax_carp.legend(handles, list(_STATE_COLOURS), loc="upper right", ncol=4, fontsize=8)
    ax_carp.set_title(
        f"carpsim lab unsinkable: verdict {result.get('verdict', '?').upper()}"
        f" (state sync {'active' if result['statesync']['active'] else 'inactive'})"
    )

    ok_x = [p.sent_at - tl.t0 for p in tl.pings if p.replied_at is not None]
    ok_y = [(p.replied_at - p.sent_at) * 1000 for p in tl.pings if p.replied_at is not None]
    lost_x = [p.sent_at - tl.t0 for p in tl.pings if p.replied_at is None]
    ax_ping.plot(ok_x, ok_y, ".", markersize=2, color="#1f77b4", label="RTT")
    top = max([*ok_y, 1.0]) * 1.2
    ax_ping.plot(
        lost_x,
        [top] * len(lost_x),
        "|",
        color="#d62728",
        markersize=8,
        label=f"lost ({len(lost_x)})",
    )
    replies = sorted(p.replied_at for p in tl.pings if p.replied_at is not None)
    for before, after in itertools.pairwise(replies):
        if after - before > 0.1:
            ax_ping.axvspan(before - tl.t0, after - tl.t0, color="#d62728", alpha=0.15)
            ax_ping.annotate(
                f"{(after - before) * 1000:.0f} ms",
                (after - tl.t0, top * 0.85),
                fontsize=8,
                ha="right",
            )
    ax_ping.set_ylabel("ping RTT (ms)")
    ax_ping.set_ylim(0, top * 1.1)
    ax_ping.legend(loc="center right", fontsize=8)

    for slot, (xs, ys) in throughput(tl).items():
        ax_tcp.plot(xs, ys, linewidth=1, label=slot)
    for end in tl.ends:
        if end.reason != "abandoned":
            ax_tcp.plot(end.at - tl.t0, 0, "x", color="#d62728")
    ax_tcp.set_ylabel("stream Mbit/s")
    ax_tcp.set_xlabel("seconds since the probes started")
    ax_tcp.legend(loc="lower right", fontsize=8, ncol=8)

    for label, at in tl.marks:
        colour = "#d62728" if label.startswith("kill") else "#2ca02c"
        for ax in (ax_carp, ax_ping, ax_tcp):
            ax.axvline(at - tl.t0, color=colour, linestyle="--", linewidth=1)
        ax_tcp.text(
            at - tl.t0,
            0.92,
            f" {label}",
            transform=ax_tcp.get_xaxis_transform(),
            fontsize=8,
            color=colour,
        )
    ax_tcp.set_xlim(0, tl.end - tl.t0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _spread(s: dict[str, float] | None, unit: str = " ms") -> str:
    if not s:
        return "—"
    return f"min {s['min']:.0f} / median {s['median']:.0f} / max {s['max']:.0f}{unit}"


def summary(result: dict[str, Any]) -> str:
    """The run for a human: verdict per phase, takeover per VHID, ping and TCP figures."""
    b = result["bounds"]
    sync = result["statesync"]
    lines = [
        f"UNSINKABLE: {result['verdict'].upper()}   (lab {result['lab']['prefix']}, "
        f"{result['params']['cycles']} cycle(s), settle {result['params']['settle_s']:g} s)",
        f"  master-down {b['master_down_ms']:.0f} ms -> at most {b['ping_loss_bound']} pings of "
        f"{result['params']['ping_interval_ms']:g} ms may be lost per takeover",
        f"  state sync: requested {'on' if sync['requested'] else 'off'}, active "
        f"{'yes' if sync['active'] else 'no'}"
        + ("" if sync["active"] else " (TCP streams are expected to break on takeover)"),
        f"  DHCP lease probe: {result['dhcp']['status']} ({result['dhcp']['detail']})",
    ]
    for kind in ("failover", "failback"):
        ph = result.get(kind) or {}
        if not ph:
            continue
        take = ", ".join(f"vhid {v} {_ms(ms)}" for v, ms in ph["takeover_ms"].items())
        p, t = ph["ping"], ph["tcp"]
        lines += [
            "",
            f"  {kind.upper()}: {ph['verdict']}",
            f"    takeover     {take}",
            f"    ping         {p['sent']} sent, {p['lost']} lost, longest gap "
            f"{_ms(p['max_gap_ms'])}",
            f"    tcp          {t['survived']}/{t['streams']} streams survived, {t['resets']} "
            f"reset, {t['stalled']} stalled, longest stall {_ms(t['max_stall_ms'])}",
        ]
        if ph["cycles"] > 1:
            st = ph["stats"]
            lines += [
                f"    over cycles  takeover {_spread(st['takeover_ms'])}; ping gap "
                f"{_spread(st['ping_max_gap_ms'])}; lost {_spread(st['ping_lost'], '')}"
            ]
        lines += [f"    why          {reason}" for reason in ph["reasons"]]
    if result.get("server_peers"):
        lines += [
            "",
            f"  the internet server saw the client as {', '.join(result['server_peers'])}"
            " (outbound NAT to the WAN VIP)",
        ]
    if result.get("png"):
        lines.append(f"  timeline: {result['png']}")
    return "\n".join(lines)
