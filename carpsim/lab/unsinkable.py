"""The seed's test protocol on the reference lab, measured and judged (`carpsim lab unsinkable`).

The command line, signals and printing live in `carpsim.cli.unsinkable`; this module is the run.

1. Probes on a LAN client: an ICMP echo to the internet server every 10 ms (kernel receive
   timestamps, `probes.IcmpProber`) and N paced TCP downloads from a server started in the
   internet namespace, through the outbound NAT (`tcp_probe`).
2. Force Off the preferred master (the lab's kill switch: no goodbye).
3. Observe for `settle` s: the successor's MASTER transitions (the daemons' events JSONL), the
   ping's losses and longest silence, each stream's stalls, resets and survival.
4. Failback: power the node on again; observe the same for `settle` s.
5. Judge every phase (`verdict`), draw the timeline (`report`), print a summary, write JSON.

The lab is used as found: if none runs under the prefix, the command brings one up and tears it
down at the end; a running lab is left running with its preferred master back in charge.

State sync: the lab's node configs carry ``[statesync] enabled``. A lab the command brings up
itself is created with the requested setting (``Lab.create(..., statesync=False)`` for
``--no-statesync``). On an already-running lab, ``--no-statesync`` sets it to false (the default
sets true) and, if that changes a config, re-renders the config (`nodes.write_config`) and
restarts the daemons so they run with it (backups first, then the master), restoring the
original setting at the end. Whether
state sync is *active* is read from the daemons themselves (a ``statesync`` section in their
control-socket status); the JSON reports both, and the TCP figures show what it achieved.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carpsim.errors import CarpsimError, ConfigError
from carpsim.lab import dhcp_probe, nodes, probes, report, verdict
from carpsim.lab.session import Lab
from carpsim.lab.tcp_probe import JsonLines
from carpsim.lab.topology import Topology
from carpsim.lab.verdict import Bounds, CarpEvent, PingSample, StreamEnd, StreamSample, Window
from carpsim.net import netns

Progress = Callable[[str], None]
PORT = 5001
PING_INTERVAL = 0.01
GAP_TOLERANCE = 0.25


@dataclass(frozen=True)
class Options:
    cycles: int = 1
    settle: float = 10.0
    streams: int = 4
    rate_mbit: float = 3.0
    statesync: bool = True
    png: Path | None = None
    json_path: Path | None = None
    topology: str = "reference"
    client: str = "client1"
    server: str = "server"
    ping_interval: float = PING_INTERVAL
    preroll: float = 1.0

    def check(self, master_down: float) -> None:
        if self.cycles < 1 or self.cycles > 100:
            raise ConfigError("--cycles", "must be between 1 and 100")
        if self.streams < 1 or self.streams > 32:
            raise ConfigError("--streams", "must be between 1 and 32")
        if not 0 < self.rate_mbit <= 50:
            raise ConfigError("--rate-mbit", "must be in (0, 50]")
        if self.settle < master_down + 1.0 or self.settle > 600:
            raise ConfigError(
                "--settle",
                f"must be between {master_down + 1.0:.1f} s (master-down "
                f"{master_down:.2f} s + 1 s, or no takeover fits in a phase) and 600 s",
            )


@dataclass
class _Probes:
    lab: Lab
    opts: Options
    target: str
    server: subprocess.Popen[bytes] | None = None
    client: subprocess.Popen[bytes] | None = None
    server_lines: JsonLines | None = None
    client_lines: JsonLines | None = None
    pinger: probes.IcmpProber | None = None
    cpu: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        py = sys.executable
        self.server = netns.popen(
            self.lab.namespace_of(self.opts.server),
            [
                py,
                "-m",
                "carpsim.lab.tcp_probe",
                "serve",
                "--port",
                str(PORT),
                "--rate-mbit",
                str(self.opts.rate_mbit),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert self.server.stdout is not None
        self.server_lines = JsonLines(self.server.stdout)
        if not self.server_lines.wait_for("listening", 10.0):
            raise CarpsimError(f"the TCP stream server did not start in {self.opts.server}")
        self.pinger = probes.IcmpProber(
            self.lab.namespace_of(self.opts.client), self.target, self.opts.ping_interval
        )
        self.pinger.start()
        self.client = netns.popen(
            self.lab.namespace_of(self.opts.client),
            [
                py,
                "-m",
                "carpsim.lab.tcp_probe",
                "fetch",
                self.target,
                "--port",
                str(PORT),
                "--streams",
                str(self.opts.streams),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert self.client.stdout is not None
        self.client_lines = JsonLines(self.client.stdout)

    def renew_stalled(self) -> None:
        if self.client is not None and self.client.poll() is None:
            self.client.send_signal(signal.SIGUSR1)

    def flowing(self, window: float = 0.5) -> tuple[int, bool]:
        """(streams that received bytes in the last `window` s, ping answered in it)."""
        now = time.time()
        live: dict[str, float] = {}
        for item in self.client_lines.snapshot() if self.client_lines else []:
            if item.get("ev") == "data":
                live[str(item["conn"])] = float(item["last"])
            elif item.get("ev") == "end":
                live.pop(str(item["conn"]), None)
        recent = sum(1 for t in live.values() if now - t <= window)
        records = self.pinger.records()[-200:] if self.pinger else []
        ping_ok = any(r.replied_at is not None and now - r.replied_at <= window for r in records)
        return recent, ping_ok

    def wait_flowing(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            streams, ping_ok = self.flowing()
            if streams >= self.opts.streams and ping_ok:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop every probe this run started (by process handle, never by name)."""
        if self.pinger is not None:
            self.pinger.stop()
        for name, proc in (("client", self.client), ("server", self.server)):
            if proc is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                self.cpu[name] = round(probes.cpu_seconds(proc.pid), 2)
        if self.client is not None and self.client.poll() is None:
            self.client.send_signal(signal.SIGTERM)
            try:
                self.client.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.client.kill()
                self.client.wait(timeout=5)
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(timeout=5)
        for lines in (self.client_lines, self.server_lines):
            if lines is not None:
                lines.join(2.0)


# ------------------------------------------------------------------------------------------------
# State-sync switch and detection


def statesync_enabled(config_text: str) -> bool | None:
    """The ``enabled`` key of a node config's [statesync] section (None: no such key)."""
    try:
        section = tomllib.loads(config_text).get("statesync")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("node config", f"not valid TOML: {exc}") from exc
    if not isinstance(section, dict):
        return None
    value = section.get("enabled")
    return value if isinstance(value, bool) else None


def _config_statesync(lab: Lab, node: str) -> bool | None:
    return statesync_enabled(lab.paths.node_config(node).read_text())


def _write_statesync(lab: Lab, node: str, enabled: bool) -> None:
    # The same renderer `lab up` used, so the config differs only in [statesync] enabled.
    host = lab.topology.host(node)
    nodes.write_config(lab.topology, lab.paths, host, statesync=enabled, dhcp=lab.dhcp)


def set_statesync(lab: Lab, enabled: bool, progress: Progress) -> dict[str, bool | None]:
    """Make every node's config say `enabled`; restart the daemons whose setting changed.

    Returns the previous per-node settings (None: the config has no [statesync] section).
    The restart keeps the cluster serving: backups first, then the master via a failover.
    """
    names = [n.name for n in lab.topology.nodes]
    before = {n: _config_statesync(lab, n) for n in names}
    changed = [n for n, v in before.items() if v is not None and v != enabled]
    if not changed:
        return before
    for n in changed:
        _write_statesync(lab, n, enabled)
    master = nodes.preferred_master(lab.topology)
    word = "on" if enabled else "off"
    for n in sorted(changed, key=lambda x: x == master):
        progress(f"restarting {n} with state sync {word} (config changed)")
        lab.kill(n)
        if n == master:
            successor = nodes.preferred_master(lab.topology, down={n})
            if not lab.wait_master(successor, timeout=10, down=[n]):
                raise CarpsimError(f"{successor} did not take over while {n} restarted")
        lab.start(n)
        if not lab.wait_master(master, timeout=10):
            raise CarpsimError(f"the lab did not return to {master} MASTER after restarting {n}")
    return before


def statesync_report(lab: Lab, requested: bool) -> dict[str, Any]:
    """What the configs say and what the running daemons report (the `active` truth)."""
    per_node: dict[str, Any] = {}
    active = True
    for n in lab.topology.nodes:
        configured = _config_statesync(lab, n.name)
        status = nodes.query_status(lab.paths, n.name) or {}
        section = status.get("statesync")
        if not isinstance(section, dict):
            running = False
            detail = "the daemon reports no statesync section (state sync not running)"
        elif "error" in section:
            running, detail = False, f"statesync section error: {section['error']}"
        elif section.get("enabled") is False:
            running, detail = False, "disabled"
        else:
            running, detail = True, "running"
        active = active and running
        per_node[n.name] = {"configured": configured, "running": running, "detail": detail}
    return {"requested": requested, "active": active, "nodes": per_node}


def dhcp_report(lab: Lab) -> dict[str, Any]:
    """Before the run: is there a DHCP service on the nodes to probe?"""
    if dhcp_probe.serving(lab):
        return {"status": "pending", "detail": "a new client takes a lease with the master off"}
    return {"status": "not available", "detail": "no DHCP server runs on the lab's nodes"}


def _dhcp_lease(
    lab: Lab, opts: Options, kind: str, dhcp: dict[str, Any], progress: Progress
) -> dict[str, Any] | None:
    """A new client's lease, taken once, while the master is forced off."""
    if kind != "failover" or dhcp["status"] != "pending":
        return None
    lease = dhcp_probe.take_lease(lab, opts.client)
    progress(f"DHCP with the master off: {lease}")
    return lease


def _dhcp_verdict(
    lab: Lab, dhcp: dict[str, Any], lease: dict[str, Any] | None, successor: str, p: Progress
) -> dict[str, Any]:
    if dhcp["status"] != "pending":
        return dhcp
    dhcp = dhcp_probe.verdict(lab, lease, successor)
    p(f"DHCP lease probe: {dhcp['status']} ({dhcp['detail']})")
    return dhcp


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class _Phase:
    kind: str
    cycle: int
    start_wall: float
    start_mono: float
    end_wall: float = 0.0
    end_mono: float = 0.0
    master: str = ""
    backups: tuple[str, ...] = ()
    states_after: dict[str, dict[int, str]] = field(default_factory=dict)


def _states_by_vhid(lab: Lab) -> dict[str, dict[int, str]]:
    return {
        node: {vhid: st for (_i, vhid), st in sorted(s.items())} for node, s in lab.states().items()
    }


def _read_events(lab: Lab, since_mono: float) -> list[CarpEvent]:
    out: list[CarpEvent] = []
    for n in lab.topology.nodes:
        path = lab.paths.events(n.name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                ev = CarpEvent.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            if ev.mono >= since_mono:
                out.append(ev)
    return sorted(out, key=lambda e: e.mono)


def _stream_records(items: list[dict[str, Any]]) -> tuple[list[StreamSample], list[StreamEnd]]:
    samples: list[StreamSample] = []
    ends: list[StreamEnd] = []
    for i in items:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            if i.get("ev") == "data":
                samples.append(
                    StreamSample(str(i["conn"]), float(i["first"]), float(i["last"]), int(i["n"]))
                )
            elif i.get("ev") == "end":
                ends.append(StreamEnd(str(i["conn"]), float(i["t"]), str(i["reason"])))
    return samples, ends


def _sleep_until(wall: float) -> None:
    left = wall - time.time()
    if left > 0:
        time.sleep(left)


@contextlib.contextmanager
def _lab_as_found(
    opts: Options, prefix: str | None, progress: Progress
) -> Iterator[tuple[Lab, bool]]:
    """The lab under the prefix (brought up if absent, and then always torn down)."""
    try:
        lab = Lab.attach(prefix)
        brought_up = False
    except ConfigError:
        # Brought up here: straight with the requested state-sync setting (no daemon restart).
        lab = Lab.create(opts.topology, prefix, statesync=opts.statesync)
        progress(
            f"no lab under {lab.paths.prefix}: bringing the {opts.topology} lab up"
            f"{'' if opts.statesync else ' with state sync disabled'}"
        )
        lab.up(progress=lambda s: progress("  " + s))
        brought_up = True
    owner = os.getpid()
    try:
        yield lab, brought_up
    finally:
        if brought_up and os.getpid() == owner:
            gone = lab.down()
            progress(f"lab torn down ({len(gone)} namespaces removed)")


def _master_down(topo: Topology) -> tuple[str, str, float]:
    """(victim, successor, the successor's master-down interval in s)."""
    victim = nodes.preferred_master(topo)
    successor = nodes.preferred_master(topo, down={victim})
    skew = topo.host(successor).advskew or 0
    return (
        victim,
        successor,
        verdict.master_down_interval(topo.carp.master_down_formula, topo.carp.advbase, skew),
    )


def run(
    prefix: str | None, opts: Options, progress: Progress
) -> tuple[dict[str, Any], report.Timeline]:
    # Check the options against the lab's timers before building anything.
    try:
        topo = Lab.attach(prefix).topology
    except ConfigError:
        topo = Lab.create(opts.topology, prefix).topology
    opts.check(_master_down(topo)[2])
    with _lab_as_found(opts, prefix, progress) as (lab, brought_up):
        return _run_on(lab, brought_up, opts, progress)


def _run_on(
    lab: Lab, brought_up: bool, opts: Options, progress: Progress
) -> tuple[dict[str, Any], report.Timeline]:
    topo = lab.topology
    victim, successor, master_down = _master_down(topo)
    opts.check(master_down)
    bounds = Bounds(master_down, verdict.loss_bound(master_down, opts.ping_interval, GAP_TOLERANCE))
    try:
        target = str(topo.host(opts.server).addresses[next(iter(topo.host(opts.server).addresses))])
        topo.host(opts.client)
    except (KeyError, StopIteration):
        raise ConfigError("topology", f"needs hosts {opts.client!r} and {opts.server!r}") from None
    if not lab.wait_master(victim, timeout=5.0):
        raise CarpsimError(
            f"lab {lab.paths.prefix}: {victim} is not MASTER on every VHID "
            "(carpsim lab status); the protocol starts from the reference state"
        )

    previous = set_statesync(lab, opts.statesync, progress)
    sync = statesync_report(lab, opts.statesync)
    dhcp = dhcp_report(lab)
    progress(
        f"state sync requested {'on' if opts.statesync else 'off'}; active: "
        f"{'yes' if sync['active'] else 'no'}; DHCP lease probe: {dhcp['status']}"
    )
    vhids = tuple(sorted(v.vhid for v in topo.vips))
    initial = {
        (node, vhid): st for node, s in _states_by_vhid(lab).items() for vhid, st in s.items()
    }
    t0_wall, t0_mono = time.time(), time.monotonic()
    pr = _Probes(lab, opts, target)
    phases: list[_Phase] = []
    lease: dict[str, Any] | None = None
    try:
        pr.start()
        progress(
            f"probes on {opts.client}: ping {target} every {opts.ping_interval * 1000:.0f}"
            f" ms, {opts.streams} TCP streams at {opts.rate_mbit:g} Mbit/s each"
        )
        for cycle in range(1, opts.cycles + 1):
            for kind in ("failover", "failback"):
                if not pr.wait_flowing(15.0):
                    n, ok = pr.flowing()
                    progress(
                        f"warning: only {n}/{opts.streams} streams flowing, "
                        f"ping {'ok' if ok else 'silent'} before the {kind}"
                    )
                time.sleep(opts.preroll)
                ph = _Phase(kind, cycle, time.time(), time.monotonic())
                if kind == "failover":
                    lab.kill(victim)  # freezes the daemon before the links go (nodes.force_off)
                    ph.master, ph.backups = successor, ()
                    progress(f"cycle {cycle}: {victim} forced off (no goodbye)")
                else:
                    lab.start(victim)
                    ph.master, ph.backups = victim, (successor,)
                    progress(f"cycle {cycle}: {victim} powered on")
                _sleep_until(ph.start_wall + opts.settle)
                ph.end_wall, ph.end_mono = time.time(), time.monotonic()
                ph.states_after = _states_by_vhid(lab)
                phases.append(ph)
                lease = lease or _dhcp_lease(lab, opts, kind, dhcp, progress)
                shown = ", ".join(
                    f"{n}: {'/'.join(sorted(set(s.values()))) or 'off'}"
                    for n, s in ph.states_after.items()
                )
                progress(f"cycle {cycle}: {kind} observed for {opts.settle:g} s -> {shown}")
                pr.renew_stalled()
    finally:
        pr.stop()
        if not brought_up:
            if not lab.wait_master(victim, timeout=10.0):
                progress(f"warning: {victim} is not MASTER everywhere at the end")
            restore = [v for v in previous.values() if v is not None]
            if restore and restore[0] != opts.statesync:
                set_statesync(lab, restore[0], progress)

    dhcp = _dhcp_verdict(lab, dhcp, lease, successor, progress)
    events = _read_events(lab, t0_mono - 1.0)
    pings = [
        PingSample(r.sent_at, r.replied_at) for r in (pr.pinger.records() if pr.pinger else [])
    ]
    samples, ends = _stream_records(pr.client_lines.snapshot() if pr.client_lines else [])
    results: list[verdict.PhaseResult] = []
    for ph in phases:
        w = Window(
            ph.kind,
            ph.cycle,
            ph.start_wall,
            ph.start_mono,
            ph.end_wall,
            ph.end_mono,
            ph.master,
            ph.backups,
            vhids,
        )
        results.append(
            verdict.evaluate(
                w,
                events,
                pings,
                samples,
                ends,
                interval=opts.ping_interval,
                bounds=bounds,
                states_after=ph.states_after,
            )
        )
    result = _result_json(lab, brought_up, opts, results, bounds, sync, dhcp, pr)
    timeline = report.Timeline(
        t0=t0_wall,
        t0_mono=t0_mono,
        end=time.time(),
        vhids=vhids,
        nodes=tuple(n.name for n in topo.nodes),
        initial=initial,
        events=events,
        pings=pings,
        samples=samples,
        ends=ends,
        marks=[
            (("kill " if p.kind == "failover" else "power-on ") + victim, p.start_wall)
            for p in phases
        ],
        off=[
            (victim, p.start_wall, nxt.start_wall if nxt else None)
            for p, nxt in zip(phases[::2], [*phases[1::2], None], strict=False)
            if p.kind == "failover"
        ],
    )
    return result, timeline


def _result_json(  # noqa: PLR0917 - one call site, all parts of the result
    lab: Lab,
    brought_up: bool,
    opts: Options,
    results: list[verdict.PhaseResult],
    bounds: Bounds,
    sync: dict[str, Any],
    dhcp: dict[str, Any],
    pr: _Probes,
) -> dict[str, Any]:
    fo = [r for r in results if r.window.kind == "failover"]
    fb = [r for r in results if r.window.kind == "failback"]
    server = pr.server_lines.snapshot() if pr.server_lines else []
    return {
        "verdict": verdict.worst(r.verdict for r in results),
        "lab": {
            "prefix": lab.paths.prefix,
            "topology": lab.topology.name,
            "brought_up": brought_up,
            "torn_down": brought_up,
        },
        "params": {
            "cycles": opts.cycles,
            "settle_s": opts.settle,
            "streams": opts.streams,
            "rate_mbit": opts.rate_mbit,
            "ping_interval_ms": opts.ping_interval * 1000,
            "client": opts.client,
            "server": opts.server,
        },
        "bounds": {
            "master_down_ms": round(bounds.master_down * 1000, 1),
            "ping_loss_bound": bounds.loss_bound,
            "gap_tolerance_ms": GAP_TOLERANCE * 1000,
        },
        "statesync": sync,
        "dhcp": dhcp,
        "failover": verdict.aggregate(fo),
        "failback": verdict.aggregate(fb),
        "cycles": [
            {"cycle": a.window.cycle, "failover": a.as_json(), "failback": b.as_json()}
            for a, b in zip(fo, fb, strict=False)
        ],
        "server_peers": sorted(
            {str(i["peer"]).rsplit(":", 1)[0] for i in server if i.get("ev") == "accept"}
        ),
        "probe_cpu_s": pr.cpu,
    }
