"""What the lab page shows, read from a running lab: its topology and each node's status.

Everything here blocks (unix sockets, netlink) and runs in a worker thread; the web server
only ever calls `LabSource.poll` through the executor.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from carpsim.lab import builder, nodes, verdict
from carpsim.lab.session import Lab
from carpsim.lab.topology import Topology
from carpsim.net import netns

STATUS_TIMEOUT = 0.3
LINKS_EVERY_S = 1.0


def topology_json(topo: Topology) -> dict[str, Any]:
    """The addressing plan as the page draws it (read from the lab's topology file)."""
    return {
        "name": topo.name,
        "description": topo.description,
        "segments": [{"name": s.name, "subnet": str(s.subnet)} for s in topo.segments.values()],
        "vips": [
            {
                "segment": v.segment,
                "vhid": v.vhid,
                "address": str(v.address),
                "cidr": str(topo.vip_interface(v)),
            }
            for v in topo.vips
        ],
        "hosts": [
            {
                "name": h.name,
                "role": "firewall" if h.is_node else h.role,
                "node": h.is_node,
                "advskew": h.advskew,
                "gateway": str(h.gateway) if h.gateway else None,
                "addresses": {seg: str(a) for seg, a in h.addresses.items()},
            }
            for h in topo.hosts
        ],
        "firewall": {
            "wan": topo.firewall.wan,
            "inside": list(topo.firewall.inside),
            "sync": topo.firewall.sync,
        },
        "carp": {
            "advbase": topo.carp.advbase,
            "preempt": topo.carp.preempt,
            "master_down_formula": topo.carp.master_down_formula,
        },
    }


def master_down_s(topo: Topology, node: str) -> float:
    """The master-down interval of one node (how long it waits before taking over)."""
    skew = topo.host(node).advskew or 0
    return verdict.master_down_interval(topo.carp.master_down_formula, topo.carp.advbase, skew)


class LabSource:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._links: dict[str, dict[str, str]] = {}
        self._links_at = 0.0

    def meta(self) -> dict[str, Any]:
        topo = self.lab.topology
        return {
            "mode": "lab",
            "title": f"lab {topo.name} ({self.lab.paths.prefix})",
            "prefix": self.lab.paths.prefix,
            "nodes": [n.name for n in topo.nodes],
            "topology": topology_json(topo),
            "master_down_s": {n.name: master_down_s(topo, n.name) for n in topo.nodes},
        }

    def poll(self) -> dict[str, Any]:
        """One snapshot topic per node: power, control socket, links and the daemon's status."""
        lab = self.lab
        now = time.monotonic()
        if now - self._links_at >= LINKS_EVERY_S:
            # pyroute2 creates a namespace it is asked to open: a lab taken down under this
            # server must not be half re-created by its next poll.
            present = set(netns.list_namespaces(lab.paths.prefix))
            needed = {lab.paths.switch, *(lab.paths.namespace(n.name) for n in lab.topology.nodes)}
            self._links = (
                {n.name: builder.link_states(lab.paths, n) for n in lab.topology.nodes}
                if needed <= present
                else {}
            )
            self._links_at = now
        out: dict[str, Any] = {}
        for node in lab.topology.nodes:
            pid = nodes.daemon_pid(lab.paths, node.name)
            status = nodes.query_status(lab.paths, node.name, timeout=STATUS_TIMEOUT)
            out[f"node:{node.name}"] = node_topic(
                node.name,
                status,
                power="on" if pid else "off",
                pid=pid,
                links=self._links.get(node.name),
            )
        return out


def node_topic(
    name: str,
    status: dict[str, Any] | None,
    *,
    power: str = "on",
    pid: int | None = None,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The per-node topic both apps publish (the lab's and a node's own)."""
    # A copy: the hub keeps it to diff against, and a node's status may share live objects.
    body = copy.deepcopy(status) if status else None
    if body is not None:
        body.pop("ok", None)
        for entry in body.get("vhids", []):
            # Ticks every poll on a backup; the page shows it rounded, so push it rounded.
            if isinstance(entry, dict) and isinstance(entry.get("last_advert_age_s"), float):
                entry["last_advert_age_s"] = round(entry["last_advert_age_s"], 1)
    return {
        "name": name,
        "power": power,
        "pid": pid,
        "control": "answering" if status else "silent",
        "links": links,
        "status": body,
    }
