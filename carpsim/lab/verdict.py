"""The "unsinkable" verdict: what the probes saw around a kill or a power-on, judged.

Pure functions over plain records (no sockets, no clocks), so every rule is unit-tested with
hand-made timelines. `carpsim.lab.unsinkable` collects the records; this module decides.

Terms (the seed's): per phase

- **ideal**: no ping lost and every TCP stream survived;
- **realistic**: every stream survived and the pings lost are bounded by the master-down
  interval (the longest a backup can legitimately wait before taking over);
- **failure**: no recovery (a VHID without the expected MASTER, or the ping never answered
  again), a loss beyond that bound, or any TCP stream reset or left stalled.

All times are seconds: ``wall`` (CLOCK_REALTIME, what the probes stamp) and ``mono``
(CLOCK_MONOTONIC, what the node daemons' events carry next to wall).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from carpsim.protocol import timers
from carpsim.protocol.constants import MasterDownFormula

IDEAL = "ideal"
REALISTIC = "realistic"
FAILURE = "failure"
_RANK = {IDEAL: 0, REALISTIC: 1, FAILURE: 2}

# A TCP error ending a stream (the client records the errno name, or EOF).
RESET_REASONS = frozenset(
    {"ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH", "EOF"}
)
ABANDONED = "abandoned"


def master_down_interval(formula: str, advbase: int, advskew: int, deadratio: int = 3) -> float:
    """How long a BACKUP with this advskew waits after the last advert before taking over
    (`formula` as written in a topology: "freebsd" or "openbsd")."""
    return timers.master_down_interval(
        advbase, advskew, deadratio=deadratio, formula=MasterDownFormula(formula)
    )


def loss_bound(master_down: float, interval: float, tolerance: float) -> int:
    """Pings a takeover may legitimately cost: those sent during master_down (+ tolerance).

    The outage starts at the kill and ends when the successor's master-down timer fires (at
    most `master_down` after the last advert it heard, which precedes the kill) plus the time
    for its gratuitous ARP to reach the client: `tolerance` covers that and scheduling.
    """
    return math.ceil((master_down + tolerance) / interval)


# ------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class PingSample:
    sent_at: float
    replied_at: float | None


@dataclass(frozen=True)
class StreamSample:
    """Bytes one connection received between `first` and `last` (one reporting bin)."""

    conn: str
    first: float
    last: float
    nbytes: int


@dataclass(frozen=True)
class StreamEnd:
    """A connection ended: an errno name (ECONNRESET ...), EOF, or `abandoned` (renewed)."""

    conn: str
    at: float
    reason: str


@dataclass(frozen=True)
class CarpEvent:
    node: str
    vhid: int
    old: str
    new: str
    mono: float
    wall: float
    reason: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CarpEvent:
        return cls(
            str(data["node"]),
            int(data["vhid"]),
            str(data["from"]),
            str(data["to"]),
            float(data["mono"]),
            float(data["wall"]),
            str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class Window:
    """One phase: the event (kill or power-on) at start, observed until end."""

    kind: str  # "failover" or "failback"
    cycle: int
    start_wall: float
    start_mono: float
    end_wall: float
    end_mono: float
    master: str
    backups: tuple[str, ...]
    vhids: tuple[int, ...]


# ------------------------------------------------------------------------------------------------
# Measurements


def takeovers(events: Iterable[CarpEvent], w: Window) -> dict[int, CarpEvent | None]:
    """Per VHID: the expected master's first MASTER transition inside the window."""
    out: dict[int, CarpEvent | None] = dict.fromkeys(w.vhids)
    for ev in sorted(events, key=lambda e: e.mono):
        if (
            ev.node == w.master
            and ev.new == "MASTER"
            and ev.vhid in out
            and out[ev.vhid] is None
            and w.start_mono <= ev.mono <= w.end_mono
        ):
            out[ev.vhid] = ev
    return out


def takeover_ms(events: Iterable[CarpEvent], w: Window) -> dict[int, float | None]:
    """Per VHID: ms from the phase's event to the expected master's first MASTER transition."""
    return {
        v: None if ev is None else round((ev.mono - w.start_mono) * 1000, 1)
        for v, ev in takeovers(events, w).items()
    }


def final_states(
    events: Iterable[CarpEvent], initial: dict[tuple[str, int], str], until_mono: float
) -> dict[tuple[str, int], str]:
    """(node, vhid) -> last state reached by `until_mono`, starting from `initial`."""
    out = dict(initial)
    for ev in sorted(events, key=lambda e: e.mono):
        if ev.mono <= until_mono:
            out[(ev.node, ev.vhid)] = ev.new
    return out


@dataclass(frozen=True)
class PingStats:
    interval_ms: float
    sent: int
    lost: int
    max_gap_ms: float | None
    recovered: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval_ms,
            "sent": self.sent,
            "lost": self.lost,
            "max_gap_ms": self.max_gap_ms,
            "recovered": self.recovered,
        }


def ping_stats(pings: Sequence[PingSample], w: Window, interval: float) -> PingStats:
    """Probes sent in the window, how many never got a reply, the longest silence.

    The longest silence is between consecutive reply arrivals (over the whole run, so the
    stretch that straddles the event counts) that overlap the window. `recovered`: some probe
    sent in the window's last quarter was answered.
    """
    inside = [p for p in pings if w.start_wall <= p.sent_at < w.end_wall]
    lost = sum(1 for p in inside if p.replied_at is None)
    replies = sorted(p.replied_at for p in pings if p.replied_at is not None)
    gap: float | None = None
    for before, after in itertools.pairwise(replies):
        if after >= w.start_wall and before <= w.end_wall:
            gap = max(gap or 0.0, after - before)
    tail = w.end_wall - (w.end_wall - w.start_wall) / 4
    recovered = any(p.replied_at is not None for p in inside if p.sent_at >= tail)
    return PingStats(
        round(interval * 1000, 3),
        len(inside),
        lost,
        None if gap is None else round(gap * 1000, 1),
        recovered,
    )


@dataclass(frozen=True)
class TcpStats:
    streams: int
    survived: int
    resets: int
    stalled: int
    max_stall_ms: float | None
    broken: tuple[dict[str, Any], ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "survived": self.survived,
            "resets": self.resets,
            "stalled": self.stalled,
            "max_stall_ms": self.max_stall_ms,
            "broken": list(self.broken),
        }


def tcp_stats(
    samples: Sequence[StreamSample],
    ends: Sequence[StreamEnd],
    w: Window,
    *,
    flowing_before: float = 1.0,
    flowing_tail: float = 1.0,
) -> TcpStats:
    """Streams that were flowing at the event, and what became of each by the window's end.

    A stream counts if it received bytes within `flowing_before` s before the event and had not
    ended. It survived if it did not end in the window and received bytes within `flowing_tail`
    s before the window's end. Its stall is the longest stretch without bytes in the window
    (for a stream that never recovered: from its last byte to its end or the window's end).
    """
    by_conn: dict[str, list[StreamSample]] = {}
    for s in samples:
        by_conn.setdefault(s.conn, []).append(s)
    end_of = {e.conn: e for e in sorted(ends, key=lambda e: e.at, reverse=True)}
    streams = survived = resets = stalled = 0
    worst: float | None = None
    broken: list[dict[str, Any]] = []
    for conn, rows in sorted(by_conn.items()):
        rows.sort(key=lambda s: s.first)
        end = end_of.get(conn)
        if end is not None and end.at < w.start_wall:
            continue
        if not any(w.start_wall - flowing_before <= s.last <= w.start_wall for s in rows):
            continue
        streams += 1
        stop = min(w.end_wall, end.at) if end is not None else w.end_wall
        times = sorted(t for s in rows for t in (s.first, s.last) if t <= stop)
        stall = max(stop - times[-1], 0.0)
        for a, b in itertools.pairwise(times):
            if b >= w.start_wall:
                stall = max(stall, b - a)
        worst = max(worst or 0.0, stall)
        ended = end is not None and end.at <= w.end_wall
        if ended and end is not None and end.reason in RESET_REASONS:
            resets += 1
            broken.append(
                {
                    "conn": conn,
                    "reason": end.reason,
                    "after_ms": round((end.at - w.start_wall) * 1000, 1),
                }
            )
        elif ended or not any(s.last >= w.end_wall - flowing_tail for s in rows):
            stalled += 1
            broken.append({"conn": conn, "reason": "stalled", "stall_ms": round(stall * 1000, 1)})
        else:
            survived += 1
    return TcpStats(
        streams,
        survived,
        resets,
        stalled,
        None if worst is None else round(worst * 1000, 1),
        tuple(broken),
    )


# ------------------------------------------------------------------------------------------------
# Judgement


@dataclass(frozen=True)
class Bounds:
    master_down: float
    loss_bound: int

    @property
    def max_gap_ms(self) -> float:
        return self.master_down * 1000


def judge(
    takeover: dict[int, float | None],
    ping: PingStats,
    tcp: TcpStats,
    bounds: Bounds,
    gap_tolerance: float = 0.25,
) -> tuple[str, list[str]]:
    """The phase's verdict and the reasons for anything short of ideal."""
    fail: list[str] = []
    soft: list[str] = []
    missing = sorted(v for v, ms in takeover.items() if ms is None)
    if missing:
        fail.append(f"no recovery: expected MASTER never reached on VHID {missing}")
    if ping.sent == 0:
        fail.append("no pings were sent in the phase")
    elif not ping.recovered:
        fail.append("no recovery: the ping was not answered again")
    if ping.lost > bounds.loss_bound:
        fail.append(f"{ping.lost} pings lost, more than the master-down bound {bounds.loss_bound}")
    elif ping.lost:
        soft.append(f"{ping.lost} pings lost (bound {bounds.loss_bound})")
    limit = bounds.max_gap_ms + gap_tolerance * 1000
    if ping.max_gap_ms is not None and ping.max_gap_ms > limit:
        fail.append(
            f"ping gap {ping.max_gap_ms:.0f} ms exceeds master-down "
            f"{bounds.max_gap_ms:.0f} ms (+{gap_tolerance * 1000:.0f} ms)"
        )
    if tcp.streams == 0:
        fail.append("no TCP stream was flowing at the event")
    if tcp.resets:
        fail.append(f"{tcp.resets} of {tcp.streams} TCP streams reset")
    if tcp.stalled:
        fail.append(f"{tcp.stalled} of {tcp.streams} TCP streams stalled and never recovered")
    if fail:
        return FAILURE, fail + soft
    if soft:
        return REALISTIC, soft
    return IDEAL, []


def worst(verdicts: Iterable[str]) -> str:
    return max(verdicts, key=lambda v: _RANK[v], default=IDEAL)


@dataclass(frozen=True)
class PhaseResult:
    window: Window
    takeover_ms: dict[int, float | None]
    ping: PingStats
    tcp: TcpStats
    verdict: str
    reasons: tuple[str, ...]
    states_after: dict[str, dict[int, str]]
    takeover_reason: dict[int, str | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "cycle": self.window.cycle,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "expected_master": self.window.master,
            "takeover_ms": {str(v): ms for v, ms in sorted(self.takeover_ms.items())},
            "takeover_reason": {str(v): r for v, r in sorted(self.takeover_reason.items())},
            "ping": self.ping.as_json(),
            "tcp": self.tcp.as_json(),
            "states_after": self.states_after,
            "window_s": round(self.window.end_wall - self.window.start_wall, 3),
        }


def evaluate(
    w: Window,
    events: Sequence[CarpEvent],
    pings: Sequence[PingSample],
    samples: Sequence[StreamSample],
    ends: Sequence[StreamEnd],
    *,
    interval: float,
    bounds: Bounds,
    states_after: dict[str, dict[int, str]] | None = None,
) -> PhaseResult:
    take = takeover_ms(events, w)
    why = {v: None if ev is None else ev.reason for v, ev in takeovers(events, w).items()}
    ping = ping_stats(pings, w, interval)
    tcp = tcp_stats(samples, ends, w)
    verdict, reasons = judge(take, ping, tcp, bounds)
    return PhaseResult(w, take, ping, tcp, verdict, tuple(reasons), states_after or {}, why)


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def aggregate(results: Sequence[PhaseResult]) -> dict[str, Any]:
    """One phase kind over every cycle: worst verdict, worst/summed figures, min/median/max."""
    if not results:
        return {}
    vhids = sorted({v for r in results for v in r.takeover_ms})
    take: dict[str, float | None] = {}
    for v in vhids:
        got = [r.takeover_ms.get(v) for r in results]
        take[str(v)] = (
            None if any(ms is None for ms in got) else max(ms for ms in got if ms is not None)
        )
    all_take = [ms for r in results for ms in r.takeover_ms.values() if ms is not None]
    gaps = [r.ping.max_gap_ms for r in results if r.ping.max_gap_ms is not None]
    stalls = [r.tcp.max_stall_ms for r in results if r.tcp.max_stall_ms is not None]
    return {
        "verdict": worst(r.verdict for r in results),
        "reasons": sorted({reason for r in results for reason in r.reasons}),
        "cycles": len(results),
        "takeover_ms": take,
        "ping": {
            "interval_ms": results[0].ping.interval_ms,
            "sent": sum(r.ping.sent for r in results),
            "lost": sum(r.ping.lost for r in results),
            "max_gap_ms": max(gaps) if gaps else None,
        },
        "tcp": {
            "streams": sum(r.tcp.streams for r in results),
            "survived": sum(r.tcp.survived for r in results),
            "resets": sum(r.tcp.resets for r in results),
            "stalled": sum(r.tcp.stalled for r in results),
            "max_stall_ms": max(stalls) if stalls else None,
        },
        "stats": {
            "takeover_ms": _spread(all_take),
            "ping_lost": _spread([float(r.ping.lost) for r in results]),
            "ping_max_gap_ms": _spread(gaps),
            "tcp_max_stall_ms": _spread(stalls),
        },
    }
