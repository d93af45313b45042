"""`carpsim lab impair`: loss, delay, jitter, reordering and duplication on lab segments.

This kernel has no netem and no nft queue, so the faults are made in two places:

- **loss** by nftables in the switch namespace: a bridge-family table ``carpsim_impair`` whose
  forward chain drops ``numgen random mod 100 < N`` of the frames entering from (``iifname``)
  and, for one host, also leaving to (``oifname``) the impaired ports. The bridge evaluates
  the forward hook once per output port, so a flooded frame (a CARP advert) is lost per
  receiver, independently, as on a simulated `Link`.
- **delay, jitter, reordering, duplication** by `carpsim.lab.impair_relay`, one process per
  impaired port in the switch namespace: the host's veth leaves its bridge, a fresh veth pair
  (``ix<n>`` relay side, ``iy<n>`` on the bridge) takes its place, and the relay forwards
  between ``<host>-<segment>`` and ``ix<n>`` through the simulator's `Impairment` model.

Targets: ``HOST:SEGMENT`` impairs both directions of that host's port; ``SEGMENT`` impairs the
"in" direction (host -> segment) of every port on it, so each frame crossing the segment meets
the model exactly once. What is in force is recorded in the lab's state.json ("impair"), shown
by `carpsim lab status`; `--clear` undoes it, and `lab down` removes it with the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from carpsim.errors import CarpsimError, ConfigError
from carpsim.lab import state
from carpsim.lab.session import Lab
from carpsim.net import netns
from carpsim.sim.impair_queue import DEFAULT_MAX_BYTES
from carpsim.sim.link import Impairment

NFT_TABLE = "carpsim_impair"
RELAY_READY_TIMEOUT = 5.0


class ImpairError(CarpsimError):
    """The relay did not come up, or the rules were refused."""


@dataclass(frozen=True)
class ImpairSpec:
    loss: float = 0.0
    """Percent (0..100, integer steps: nftables numgen)."""
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    duplicate: float = 0.0
    seed: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.loss <= 100 or self.loss != int(self.loss):
            raise ConfigError("loss", f"a whole percentage 0..100, got {self.loss}")
        if not 1024 <= self.max_bytes <= 1 << 30:
            raise ConfigError("max_bytes", f"1024..2^30 bytes, got {self.max_bytes}")
        for name in ("delay", "jitter", "reorder_delay"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise ConfigError(name, f"0..10 seconds, got {getattr(self, name)}")
        try:
            self.model()
        except ValueError as exc:
            raise ConfigError("impairment", str(exc)) from None

    def model(self) -> Impairment:
        """What the relay runs: everything but loss, which nftables does."""
        return Impairment(
            delay=self.delay,
            jitter=self.jitter,
            duplicate=self.duplicate,
            reorder=self.reorder,
            reorder_delay=self.reorder_delay,
        )

    @property
    def needs_relay(self) -> bool:
        return bool(self.delay or self.jitter or self.reorder or self.duplicate)


def ports_of(lab: Lab, target: str) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """(host, segment) ports a target names, and the impaired directions."""
    topo = lab.topology
    host_name, _, segment = target.rpartition(":")
    if segment not in topo.segments:
        raise ConfigError(
            "target", f"unknown segment {segment!r} (segments: {', '.join(topo.segments)})"
        )
    if not host_name:
        ports = [(h.name, segment) for h in topo.hosts if segment in h.addresses]
        return ports, ("in",)
    try:
        host = topo.host(host_name)
    except KeyError:
        raise ConfigError("target", f"unknown host {host_name!r}") from None
    if segment not in host.addresses:
        raise ConfigError("target", f"{host_name} has no port on {segment}")
    return [(host_name, segment)], ("in", "out")


def active(lab: Lab) -> dict[str, Any]:
    found: dict[str, Any] = lab.state_data().get("impair", {})
    return found


def _save(lab: Lab, entries: dict[str, Any]) -> None:
    data = lab.state_data()
    data["impair"] = entries
    state.write_state(lab.paths, data)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ------------------------------------------------------------------------------ loss rules


def nft_ruleset(entries: dict[str, Any]) -> str:
    """The whole bridge table for what is in force (rebuilt on every change)."""
    rules: list[str] = []
    for entry in entries.values():
        loss = int(entry["spec"]["loss"])
        if not loss:
            continue
        # numgen draws 0..99: "< 100" does not parse, and 100 % is a cut cable anyway.
        chance = "" if loss == 100 else f"numgen random mod 100 < {loss} "
        for port in entry["ports"]:
            name = port["bridge_port"]
            rules.append(f'iifname "{name}" {chance}counter drop')
            if "out" in entry["directions"]:
                rules.append(f'oifname "{name}" {chance}counter drop')
    body = "".join(f"\t\t{r}\n" for r in rules)
    return (
        f"table bridge {NFT_TABLE} {{\n"
        "\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n"
        f"{body}\t}}\n}}\n"
    )


def _load_rules(lab: Lab, entries: dict[str, Any]) -> None:
    sw = lab.paths.switch
    netns.run(sw, ["nft", "delete", "table", "bridge", NFT_TABLE], check=False)
    if not any(int(e["spec"]["loss"]) for e in entries.values()):
        return
    proc = subprocess.run(
        netns.exec_argv(sw, ["nft", "-f", "-"]),
        input=nft_ruleset(entries),
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if proc.returncode != 0:
        raise ImpairError(f"nft refused the loss rules: {proc.stderr.strip()}")


def loss_drops(lab: Lab) -> dict[str, int]:
    """Frames the loss rules dropped, per "iifname PORT" / "oifname PORT" ({} if none)."""
    proc = netns.run(
        lab.paths.switch, ["nft", "-j", "list", "table", "bridge", NFT_TABLE], check=False
    )
    if proc.returncode != 0:
        return {}
    out: dict[str, int] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        where, packets = "", 0
        for stmt in rule.get("expr", []):
            match = stmt.get("match")
            if match and isinstance(match.get("left"), dict) and "meta" in match["left"]:
                where = f"{match['left']['meta']['key']} {match['right']}"
            if "counter" in stmt:
                packets = int(stmt["counter"]["packets"])
        out[where] = packets
    return out


# ------------------------------------------------------------------------------ relays


def _offload_off(lab: Lab, segment: str) -> None:
    """Every host on the segment sends plain frames the relay can forward (impair_relay doc)."""
    for host in lab.topology.hosts:
        if segment in host.addresses:
            netns.run(
                lab.paths.namespace(host.name),
                [
                    sys.executable,
                    "-m",
                    "carpsim.lab.impair_relay",
                    "offload-off",
                    host.interface(segment),
                ],
            )


def _start_relay(
    lab: Lab, host: str, segment: str, entry: dict[str, Any], index: int
) -> dict[str, Any]:
    outer = lab.topology.host(host).switch_port(segment)
    with IPRoute(netns=lab.paths.switch) as sw:
        found = sw.link_lookup(ifname=outer)
        if not found:
            raise ImpairError(f"no switch port {outer}")
        n = found[0]
        inner, bridge_port = f"ix{n}", f"iy{n}"
        bridge = sw.link_lookup(ifname=segment)[0]
        sw.link("add", ifname=inner, kind="veth", peer={"ifname": bridge_port})
        iy = sw.link_lookup(ifname=bridge_port)[0]
        ix = sw.link_lookup(ifname=inner)[0]
        # The bridge side stays down until the relay listens: with both HOST-SEG and iy<n>
        # on the bridge and a relay between them, every frame would loop.
        sw.link("set", index=iy, master=bridge)
        sw.link("set", index=ix, state="up")
    port = {
        "host": host,
        "segment": segment,
        "outer": outer,
        "inner": inner,
        "bridge_port": bridge_port,
        "pid": 0,
        "stats": str(lab.paths.run_dir / f"impair-{host}-{segment}.json"),
    }
    try:
        port["pid"] = _spawn(lab, port, entry, index)
        with IPRoute(netns=lab.paths.switch) as sw:
            # The swap: a few ms in which the host's frames go nowhere.
            sw.link("set", index=n, master=0)
            sw.link("set", index=iy, state="up")
    except BaseException:
        _stop_relay(lab, port)
        raise
    return port


def _spawn(lab: Lab, port: dict[str, Any], entry: dict[str, Any], index: int) -> int:
    """Start the relay of one port; returns its pid once it listens on both sides."""
    host, segment = port["host"], port["segment"]
    outer, inner, bridge_port = port["outer"], port["inner"], port["bridge_port"]
    netns.run(
        lab.paths.switch,
        [
            sys.executable,
            "-m",
            "carpsim.lab.impair_relay",
            "offload-off",
            inner,
            bridge_port,
            outer,
        ],
    )
    spec = entry["spec"]
    stats = Path(port["stats"])
    stats.unlink(missing_ok=True)
    relay_spec = {
        **asdict(ImpairSpec(**spec).model()),
        "seed": int(spec["seed"]) * 1000 + index,
        "max_bytes": spec["max_bytes"],
        "outer": outer,
        "inner": inner,
        "directions": entry["directions"],
        "stats": str(stats),
    }
    spec_file = lab.paths.run_dir / f"impair-{host}-{segment}.spec.json"
    spec_file.write_text(json.dumps(relay_spec, indent=2) + "\n")
    with open(lab.paths.run_dir / f"impair-{host}-{segment}.log", "ab") as log:
        proc = subprocess.Popen(
            netns.exec_argv(
                lab.paths.switch,
                [sys.executable, "-m", "carpsim.lab.impair_relay", "run", str(spec_file)],
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + RELAY_READY_TIMEOUT
    while not stats.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise ImpairError(f"relay for {outer} did not start (log: {log.name})")
        time.sleep(0.02)
    return proc.pid


def _stop_relay(lab: Lab, port: dict[str, Any]) -> None:
    pid = int(port["pid"])
    if pid and alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with IPRoute(netns=lab.paths.switch) as sw:
        inner = sw.link_lookup(ifname=port["inner"])
        if inner:
            sw.link("del", index=inner[0])  # takes its peer on the bridge with it
        outer = sw.link_lookup(ifname=port["outer"])
        bridge = sw.link_lookup(ifname=port["segment"])
        if outer and bridge:
            sw.link("set", index=outer[0], master=bridge[0])


# ------------------------------------------------------------------------------ commands


def apply(lab: Lab, target: str, spec: ImpairSpec) -> dict[str, Any]:
    """Put `spec` in force on `target` (replacing what was there); returns its entry."""
    ports, directions = ports_of(lab, target)
    entries = active(lab)
    if target in entries:
        clear(lab, target)
        entries = active(lab)
    busy = {(p["host"], p["segment"]) for e in entries.values() for p in e["ports"]}
    clash = [f"{h}:{s}" for h, s in ports if (h, s) in busy]
    if clash:
        raise ConfigError("target", f"{', '.join(clash)} already impaired: clear it first")
    entry: dict[str, Any] = {"spec": asdict(spec), "directions": list(directions), "ports": []}
    entries[target] = entry
    try:
        if spec.needs_relay:
            _offload_off(lab, ports[0][1])
        for index, (host, segment) in enumerate(ports):
            if spec.needs_relay:
                port = _start_relay(lab, host, segment, entry, index)
            else:
                outer = lab.topology.host(host).switch_port(segment)
                port = {"host": host, "segment": segment, "outer": outer, "bridge_port": outer}
            entry["ports"].append(port)
            _save(lab, entries)
        _load_rules(lab, entries)
    except BaseException:
        clear(lab, target)
        raise
    _save(lab, entries)
    return entry


def clear(lab: Lab, target: str | None = None) -> list[str]:
    """Undo one target's impairment, or every one (None); returns the targets cleared."""
    entries = active(lab)
    names = [t for t in entries if target is None or t == target]
    for name in names:
        for port in entries[name]["ports"]:
            if "pid" in port:
                _stop_relay(lab, port)
        del entries[name]
        _save(lab, entries)
    _load_rules(lab, entries)
    return names


def describe(lab: Lab) -> list[dict[str, Any]]:
    """What is in force, with each relay's liveness and counters (for `lab status`)."""
    out = []
    entries = active(lab)
    drops = loss_drops(lab) if entries else {}
    for target, entry in entries.items():
        ports = []
        for port in entry["ports"]:
            row = dict(port)
            name = port["bridge_port"]
            row["loss_dropped"] = {
                d: drops.get(f"{key} {name}", 0)
                for d, key in (("in", "iifname"), ("out", "oifname"))
                if f"{key} {name}" in drops
            }
            if "pid" in port:
                row["relay"] = "running" if alive(int(port["pid"])) else "DEAD"
                with contextlib.suppress(FileNotFoundError, ValueError):
                    row["counters"] = json.loads(Path(port["stats"]).read_text())["directions"]
            ports.append(row)
        out.append(
            {
                "target": target,
                "spec": entry["spec"],
                "directions": entry["directions"],
                "ports": ports,
            }
        )
    return out


def render(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", "impairments"]
    for row in rows:
        s = row["spec"]
        what = ", ".join(
            f"{k} {s[k]}{'%' if k == 'loss' else ''}"
            for k in ("loss", "delay", "jitter", "reorder", "duplicate")
            if s[k]
        )
        dirs = "/".join(row["directions"])
        lines.append(f"{row['target']:<16}{what or 'nothing'} (seed {s['seed']}, {dirs})")
        for port in row["ports"]:
            lost = port.get("loss_dropped", {})
            if lost:
                dropped = " ".join(f"{d} {n}" for d, n in lost.items())
                lines.append(f"  loss  {port['bridge_port']:<12} dropped {dropped}")
            if "pid" not in port:
                continue
            counts = port.get("counters", {})
            moved = " ".join(
                f"{d}: {c['received']} in {c['sent']} out {c['duplicated']} dup"
                f" {c['overflow']} over"
                for d, c in counts.items()
            )
            lines.append(f"  relay {port['outer']} pid {port['pid']} {port['relay']}  {moved}")
    return lines
