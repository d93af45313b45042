"""One repetition for one contender: elect, pull the master's cable and kill it, watch the
backup take over, then plug the old master back in, restart it and watch it preempt.

Everything is measured from the wire (the advert capture on the bridge ports) and from the
client's ICMP prober, never from the daemons' logs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from carpsim.lab.probes import AdvertCapture, IcmpProber, ProbeRecord, longest_gap

from .contenders import Contender, Daemon
from .topology import Node, Segment, segment


class ScenarioError(RuntimeError):
    """A repetition could not reach the state it needed (no election, no takeover...)."""


@dataclass(frozen=True)
class Result:
    contender: str
    rep: int
    master_down: float  # theoretical, node B
    detection: float  # A's last advert -> B's first advert (s)
    overhead: float  # detection - master_down (s)
    gap: float  # longest client-side reply gap around the failover (s)
    lost: int
    serve_lag: float  # B's first advert -> first reply after the gap: VIP/GARP/ARP path (s)
    failback_gap: float  # longest reply gap from plugging A back in until stable (s)
    failback_lost: int
    failback_takeover: float  # A's link up + daemon start -> A's first advert (s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settle_window(c: Contender) -> float:
    """How long B must stay silent before we believe A is the only master."""
    return 2.5 if c.klass == "advbase1" else 1.0


def _replies_flowing(prober: IcmpProber, since: float, span: float) -> bool:
    """Every probe sent in the `span` before the last `2 x interval` got its reply."""
    now = time.time()
    recent = [
        r
        for r in prober.records()
        if since <= r.sent_at
        and now - span - 2 * prober.interval <= r.sent_at <= now - 2 * prober.interval
    ]
    return len(recent) >= 3 and all(r.replied_at is not None for r in recent)


def _wait_master(
    cap: AdvertCapture,
    prober: IcmpProber,
    master: Node,
    other: Node,
    c: Contender,
    since: float,
    timeout: float,
) -> float:
    """Wait until `master` advertises, `other` has been silent for the settle window, and the
    VIP answers; returns when that became true."""
    quiet = _settle_window(c)
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = time.time()
        adverts = [a for a in cap.adverts() if a.at >= since]
        mine = [a for a in adverts if a.ifname == master.port]
        theirs = [a for a in adverts if a.ifname == other.port and a.at > now - quiet]
        heard_recently = mine and now - mine[-1].at < max(3 * mine[-1].interval, 0.05) + 0.2
        if (
            heard_recently
            and not theirs
            and mine[0].at < now - quiet
            and _replies_flowing(prober, since, 0.3)
        ):
            return now
        time.sleep(0.05)
    raise ScenarioError(
        f"{c.name}: node {master.name} did not become the only master within {timeout:.0f} s"
    )


def _gap(records: list[ProbeRecord], start: float, end: float) -> tuple[float, int]:
    gap = longest_gap(records, start, end)
    if gap is None:
        raise ScenarioError("the prober got fewer than two replies in the window")
    return gap.duration, gap.lost


def run_once(
    c: Contender, rep: int, workdir: Path, ping_interval: float, verbose: bool = False
) -> Result:
    rundir = workdir / f"{c.name}-{rep}"
    rundir.mkdir(parents=True, exist_ok=True)
    daemons: list[Daemon] = []
    with (
        segment() as seg,
        AdvertCapture(seg.switch, [seg.a.port, seg.b.port]) as cap,
        IcmpProber(seg.client, seg.vip, ping_interval) as prober,
    ):
        try:
            t0 = time.time()
            daemons.append(c.start(seg, seg.a, rundir))
            daemons.append(c.start(seg, seg.b, rundir))
            _wait_master(cap, prober, seg.a, seg.b, c, t0, timeout=30)
            return _failover_and_back(seg, cap, prober, c, rep, rundir, daemons, verbose)
        finally:
            for d in daemons:
                d.kill()


def _failover_and_back(
    seg: Segment,
    cap: AdvertCapture,
    prober: IcmpProber,
    c: Contender,
    rep: int,
    rundir: Path,
    daemons: list[Daemon],
    verbose: bool,
) -> Result:
    a_daemon = daemons[0]
    md = c.master_down()
    cut = time.time()
    seg.link(seg.a, up=False)
    a_daemon.kill()
    first_b = cap.wait_for(lambda adv: adv.ifname == seg.b.port and adv.at > cut, timeout=md + 10)
    if first_b is None:
        raise ScenarioError(f"{c.name}: node b never advertised after the cut")
    last_a = [adv for adv in cap.adverts() if adv.ifname == seg.a.port and adv.at < first_b.at]
    if not last_a:
        raise ScenarioError(f"{c.name}: no advert from node a before the takeover")
    detection = first_b.at - last_a[-1].at
    recovered = _wait_replies(prober, first_b.at, timeout=10, c=c)
    time.sleep(0.3)
    records = prober.records()
    gap, lost = _gap(records, cut - 1.0, recovered)
    gap_end = longest_gap(records, cut - 1.0, recovered)
    serve_lag = (gap_end.end if gap_end else recovered) - first_b.at

    # Failback: the old master's node comes back clean (as after a reboot) and preempts.
    seg.scrub(seg.a)
    back = time.time()
    seg.link(seg.a, up=True)
    daemons.append(c.start(seg, seg.a, rundir))
    first_a = cap.wait_for(lambda adv: adv.ifname == seg.a.port and adv.at > back, timeout=md + 10)
    if first_a is None:
        raise ScenarioError(f"{c.name}: node a never advertised after coming back")
    stable = _wait_master(cap, prober, seg.a, seg.b, c, first_a.at, timeout=30)
    fb_gap, fb_lost = _gap(prober.records(), back - 0.2, stable)
    result = Result(
        c.name,
        rep,
        md,
        detection,
        detection - md,
        gap,
        lost,
        serve_lag,
        fb_gap,
        fb_lost,
        first_a.at - back,
    )
    if verbose:
        print(
            f"  {c.name} rep {rep}: detection {detection:.4f} s (overhead "
            f"{(detection - md) * 1e3:+.1f} ms), gap {gap:.4f} s ({lost} lost, served "
            f"{serve_lag * 1e3:+.1f} ms after the first advert), "
            f"failback gap {fb_gap:.4f} s ({fb_lost} lost)",
            flush=True,
        )
    return result


def _wait_replies(prober: IcmpProber, since: float, timeout: float, c: Contender) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _replies_flowing(prober, since, 0.2):
            return time.time()
        time.sleep(0.02)
    raise ScenarioError(
        f"{c.name}: the VIP did not answer again within {timeout:.0f} s of the takeover"
    )
