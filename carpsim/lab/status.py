"""`carpsim lab status`: pfSense's Status > CARP for every node side by side, plus health.

VHID  segment  VIP                  node1    node2
   3  wan      192.168.100.254/24   MASTER   BACKUP
"""

from __future__ import annotations

import time
from typing import Any

from carpsim.cli import dhcp_render
from carpsim.lab import builder, impair, nodes
from carpsim.lab.session import Lab


def collect(lab: Lab) -> dict[str, Any]:
    topo = lab.topology
    data = lab.state_data()
    out: dict[str, Any] = {
        "lab": topo.name,
        "prefix": lab.paths.prefix,
        "run_dir": str(lab.paths.run_dir),
        "uptime_s": round(time.time() - float(data.get("created", time.time())), 1),
        "vhids": [],
        "nodes": {},
    }
    for node in topo.nodes:
        status = nodes.query_status(lab.paths, node.name)
        pid = nodes.daemon_pid(lab.paths, node.name)
        out["nodes"][node.name] = {
            "namespace": lab.paths.namespace(node.name),
            "advskew": node.advskew,
            "pid": pid,
            "process": "running" if pid else "off",
            "control": "answering" if status else "silent",
            "links": builder.link_states(lab.paths, node),
            "vhids": (status or {}).get("vhids", []),
            "statesync": _statesync_summary(status),
            "configsync": _configsync_summary(status),
            "dhcp": dhcp_render.servers((status or {}).get("dhcp")),
        }
    for vip in topo.vips:
        row: dict[str, Any] = {
            "vhid": vip.vhid,
            "segment": vip.segment,
            "vip": str(topo.vip_interface(vip)),
            "state": {},
        }
        for node in topo.nodes:
            states = nodes.vhid_states({"vhids": out["nodes"][node.name]["vhids"]})
            fallback = "?" if out["nodes"][node.name]["pid"] else "off"
            row["state"][node.name] = states.get((node.interface(vip.segment), vip.vhid), fallback)
        out["vhids"].append(row)
    out["impairments"] = impair.describe(lab)
    return out


def _statesync_summary(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node's statesync section cut to what a per-node table shows (None: not running)."""
    if not status:
        return None
    sync = status.get("statesync")
    if not isinstance(sync, dict) or "ready" not in sync:
        return {"enabled": False}
    return {
        "enabled": True,
        "ready": sync.get("ready"),
        "reason": sync.get("reason"),
        "states": sync.get("states", {}),
        "bulk": sync.get("bulk", {}),
        "drops": sync.get("drops", {}),
    }


CONFIGSYNC_KEYS = ("peer_url", "last_sync", "result", "last_error", "syncs_ok", "syncs_failed")


def _configsync_summary(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """pfSense's High Avail. Sync status words (None: the node does not answer or sync)."""
    sync = (status or {}).get("configsync")
    if not isinstance(sync, dict):
        return None
    out = {k: sync.get(k) for k in CONFIGSYNC_KEYS}
    received = sync.get("received")
    out["received"] = dict(received) if isinstance(received, dict) else {}
    faults = sync.get("faults")
    out["faults"] = dict(faults) if isinstance(faults, dict) else {}
    return out


def render_configsync(sync: dict[str, Any] | None) -> str:
    """One line: what this node last pushed, or (a backup) what it last received."""
    if sync is None:
        return "-"
    if sync.get("peer_url"):
        when = sync.get("last_sync")
        at = "never" if when is None else time.strftime("%H:%M:%S", time.localtime(when))
        line = (
            f"to {sync['peer_url']}: {sync.get('result')} at {at} "
            f"({sync.get('syncs_ok', 0)} ok, {sync.get('syncs_failed', 0)} failed)"
        )
        return line + (f"; last error: {sync['last_error']}" if sync.get("last_error") else "")
    rx = sync.get("received", {})
    # every fault answered (bad credentials -1 included), not only refused merges
    faults = sum((sync.get("faults") or {}).values())
    line = f"receives: {rx.get('result', 'never')} ({rx.get('ok', 0)} ok, {faults} faults)"
    if rx.get("from"):
        line += f" from {rx['from']}"
    return line + (f"; last error: {rx['last_error']}" if rx.get("last_error") else "")


def _render_sync(sync: dict[str, Any] | None) -> str:
    if sync is None:
        return "-"
    if not sync.get("enabled"):
        return "off"
    states = sync.get("states", {})
    word = "ready" if sync.get("ready") else "NOT READY"
    return (
        f"{word} ({sync.get('reason')}), {states.get('kernel', 0)} kernel /"
        f" {states.get('mirror', 0)} mirror states, {sync.get('bulk', {}).get('count', 0)}"
        " bulk"
    )


def render(data: dict[str, Any]) -> str:
    names = list(data["nodes"])
    width = max([8, *(len(n) + 2 for n in names)])
    lines = [
        f"lab {data['lab']} (prefix {data['prefix']}, up {data['uptime_s']:.0f}s)",
        "",
        f"{'VHID':>4}  {'segment':<9}{'VIP':<21}" + "".join(f"{n:<{width}}" for n in names),
    ]
    for row in data["vhids"]:
        lines.append(
            f"{row['vhid']:>4}  {row['segment']:<9}{row['vip']:<21}"
            + "".join(f"{row['state'][n]:<{width}}" for n in names)
        )
    lines += ["", f"{'node':<8}{'skew':>5}  {'process':<22}{'control':<11}links"]
    for name, node in data["nodes"].items():
        proc = f"running (pid {node['pid']})" if node["pid"] else "off"
        links = ", ".join(f"{s} {st}" for s, st in node["links"].items())
        lines.append(f"{name:<8}{node['advskew']:>5}  {proc:<22}{node['control']:<11}{links}")
    lines += ["", "state sync"]
    for name, node in data["nodes"].items():
        lines.append(f"{name:<8}{_render_sync(node.get('statesync'))}")
    if any(node.get("configsync") for node in data["nodes"].values()):
        lines += ["", "config sync (High Avail. Sync)"]
        for name, node in data["nodes"].items():
            lines.append(f"{name:<8}{render_configsync(node.get('configsync'))}")
    for name, node in data["nodes"].items():
        dhcp = dhcp_render.render(node.get("dhcp"))
        if dhcp:
            lines += ["", f"{name}:", *(f"  {line}" for line in dhcp)]
    lines += impair.render(data.get("impairments", []))
    return "\n".join(line.rstrip() for line in lines)
