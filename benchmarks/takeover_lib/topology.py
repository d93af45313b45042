"""The two-node segment every contender runs on.

    node A (eth0 .251) ──pa─┐
    node B (eth0 .252) ──pb─┤ br0 (switch namespace)
    client (eth0 .10)  ──pc─┘                         VIP .254 on 192.168.110.0/24

The switch namespace holds a plain bridge (no STP delay, no multicast snooping, so adverts are
flooded like on a dumb switch); the capture sits on its ports. All four namespaces share one
unique prefix and are removed on exit, whatever happens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from carpsim.net import netns

SUBNET = "192.168.110"
PREFIXLEN = 24
NODE_IF = "eth0"
VIP = f"{SUBNET}.254"


@dataclass(frozen=True)
class Node:
    name: str  # "a" or "b"
    ns: str
    ip: str
    port: str  # its port on the bridge, in the switch namespace
    ifname: str = NODE_IF


@dataclass(frozen=True)
class Segment:
    prefix: str
    switch: str
    client: str
    client_ip: str
    a: Node
    b: Node
    vip: str = VIP

    def link(self, node: Node, up: bool) -> None:
        """Pull or plug the node's cable: the node-side end, which the bridge sees as carrier."""
        netns.run(node.ns, ["ip", "link", "set", node.ifname, "up" if up else "down"])

    def scrub(self, node: Node) -> None:
        """Remove what a SIGKILLed daemon left behind: the VIP on eth0 and any macvlan."""
        netns.run(
            node.ns,
            ["ip", "-4", "addr", "del", f"{self.vip}/{PREFIXLEN}", "dev", node.ifname],
            check=False,
        )
        out = netns.run(node.ns, ["ip", "-d", "-j", "link", "show"], check=False).stdout
        for link in json.loads(out or "[]"):
            if link.get("linkinfo", {}).get("info_kind") in ("macvlan", "vrrp"):
                netns.run(node.ns, ["ip", "link", "del", link["ifname"]], check=False)


def _attach(switch: str, ns: str, port: str, address: str) -> None:
    netns.run(
        switch, ["ip", "link", "add", port, "type", "veth", "peer", "name", NODE_IF, "netns", ns]
    )
    netns.run(switch, ["ip", "link", "set", port, "master", "br0", "up"])
    netns.run(ns, ["ip", "addr", "add", f"{address}/{PREFIXLEN}", "dev", NODE_IF])
    netns.run(ns, ["ip", "link", "set", NODE_IF, "up"])


@contextmanager
def segment(prefix: str | None = None) -> Iterator[Segment]:
    prefix = prefix or netns.unique_prefix("tko")
    names = [f"{prefix}sw", f"{prefix}a", f"{prefix}b", f"{prefix}c"]
    with netns.temporary(names) as (switch, a_ns, b_ns, client):
        netns.run(
            switch,
            [
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )
        netns.run(switch, ["ip", "link", "set", "br0", "up"])
        a = Node("a", a_ns, f"{SUBNET}.251", "pa")
        b = Node("b", b_ns, f"{SUBNET}.252", "pb")
        for node in (a, b):
            _attach(switch, node.ns, node.port, node.ip)
        _attach(switch, client, "pc", f"{SUBNET}.10")
        yield Segment(prefix, switch, client, f"{SUBNET}.10", a, b)
