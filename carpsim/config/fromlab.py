"""The node configs a lab topology stands for: what the lab writes instead of generating rules.

`node_configs(topology)` gives each CARP node of a `carpsim.lab.topology.Topology` its full
config: interfaces named after the segments, one CARP VIP per topology VIP, the reference
firewall as pfSense rules (ICMP to the firewall from the WAN, each inside subnet to the firewall
and out through it, the SYNC link permissive), one manual outbound NAT rule per inside subnet to
the WAN VIP, and pfsync/XML-RPC sync on the SYNC segment (the node with the lowest advskew pushes
to the next one). The lab then sets its own paths (control socket, events) on ``config.node``.

The topology is taken structurally (`TopologyLike`), so this module stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from carpsim.config.loader import parse
from carpsim.config.model import SYNC_TOGGLES, Config


class _Segment(Protocol):
    @property
    def subnet(self) -> IPv4Network: ...


class _Carp(Protocol):
    @property
    def password(self) -> str: ...
    @property
    def advbase(self) -> int: ...
    @property
    def preempt(self) -> bool: ...
    @property
    def master_down_formula(self) -> str: ...


class _Firewall(Protocol):
    @property
    def wan(self) -> str: ...
    @property
    def inside(self) -> Sequence[str]: ...
    @property
    def sync(self) -> str | None: ...
    @property
    def nat_target(self) -> str: ...


class _Vip(Protocol):
    @property
    def segment(self) -> str: ...
    @property
    def vhid(self) -> int: ...
    @property
    def address(self) -> IPv4Address: ...


class _Node(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def addresses(self) -> Mapping[str, IPv4Address]: ...
    @property
    def gateway(self) -> IPv4Address | None: ...
    @property
    def advskew(self) -> int | None: ...


class TopologyLike(Protocol):
    @property
    def segments(self) -> Mapping[str, _Segment]: ...
    @property
    def carp(self) -> _Carp: ...
    @property
    def firewall(self) -> _Firewall: ...
    @property
    def vips(self) -> Sequence[_Vip]: ...
    @property
    def nodes(self) -> Sequence[_Node]: ...


DEFAULT_SYNC_PASSWORD = "carpsim-lab-sync"  # noqa: S105 - lab-only credential, in the namespaces
DHCP_MODES = ("vip", "empty", "off")
"""``vip``: router = DNS = the segment's VIP (the HA setup); ``empty``: gateway and DNS left
empty, so each node hands out its own address (the seed's warning); ``off``: no DHCP server."""


def dhcp_range(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """pfSense's customary .100-.199 of a /24, scaled to other prefixes."""
    size = subnet.num_addresses
    base = int(subnet.network_address)
    return IPv4Address(base + max(2, size * 100 // 256)), IPv4Address(base + size * 200 // 256 - 1)


def dhcpd_data(t: TopologyLike, node: _Node, mode: str = "vip") -> dict[str, Any]:
    """One ``dhcpd.<seg>`` per inside segment with a VIP, failover peer = the other node there."""
    if mode not in DHCP_MODES:
        raise ValueError(f"dhcp mode must be one of {DHCP_MODES}, not {mode!r}")
    out: dict[str, Any] = {}
    if mode == "off":
        return out
    for seg in t.firewall.inside:
        vips = [v for v in t.vips if v.segment == seg]
        if seg not in node.addresses or not vips:
            continue
        first, last = dhcp_range(t.segments[seg].subnet)
        section: dict[str, Any] = {"enable": True, "range": {"from": str(first), "to": str(last)}}
        if mode == "vip":
            section["gateway"] = str(vips[0].address)
            section["dnsserver"] = [str(vips[0].address)]
        peers = [n for n in t.nodes if n.name != node.name and seg in n.addresses]
        if peers:
            section["failover_peerip"] = str(peers[0].addresses[seg])
        out[seg] = section
    return out


def node_data(
    t: TopologyLike, node: _Node, sync_password: str = DEFAULT_SYNC_PASSWORD, dhcp: str = "vip"
) -> dict[str, Any]:
    """The TOML-shaped config of one node (`parse` it, or `tomli_w` it to a file)."""
    fw = t.firewall
    formula = "freebsd" if t.carp.master_down_formula == "ucarp" else t.carp.master_down_formula
    data: dict[str, Any] = {
        "node": {"name": node.name},
        "carp": {
            "password": t.carp.password,
            "advbase": t.carp.advbase,
            "advskew": node.advskew or 0,
            "preempt": t.carp.preempt,
            "master_down_formula": formula,
        },
        "system": {"hostname": node.name},
        "interfaces": {},
        "virtualip": {"vip": []},
        "filter": {"syn_only": True, "tcp_loose": False, "rule": []},
        "nat": {"outbound": {"mode": "manual", "rule": []}},
    }
    for seg, addr in node.addresses.items():
        iface: dict[str, Any] = {"address": f"{addr}/{t.segments[seg].subnet.prefixlen}"}
        if node.gateway is not None and node.gateway in t.segments[seg].subnet:
            iface["gateway"] = str(node.gateway)
        if any(v.segment == seg for v in t.vips):
            iface["carp_peers"] = [
                str(n.addresses[seg]) for n in t.nodes if n.name != node.name and seg in n.addresses
            ]
        data["interfaces"][seg] = iface
    for vip in t.vips:
        if vip.segment in node.addresses:
            data["virtualip"]["vip"].append(
                {
                    "interface": vip.segment,
                    "vhid": vip.vhid,
                    "subnet": str(vip.address),
                    "descr": f"{vip.segment} VIP",
                }
            )
    rules = data["filter"]["rule"]
    rules.append(
        {
            "interface": fw.wan,
            "protocol": "icmp",
            "destination": "(self)",
            "icmptype": ["echoreq", "unreach", "timex"],
            "descr": "ICMP to the firewall",
        }
    )
    wan_vip = next(v for v in t.vips if v.segment == fw.wan)
    for seg in fw.inside:
        if seg not in node.addresses:
            continue
        net = f"{seg} net"
        rules += [
            {
                "interface": seg,
                "source": net,
                "destination": "(self)",
                "descr": f"management from {seg}",
            },
            {
                "interface": seg,
                "protocol": "tcp/udp",
                "source": net,
                "descr": f"new flows from {seg}",
            },
            {"interface": seg, "protocol": "icmp", "source": net, "descr": f"ICMP from {seg}"},
        ]
        data["nat"]["outbound"]["rule"].append(
            {
                "interface": fw.wan,
                "source": str(t.segments[seg].subnet),
                # "" = the interface address: the variant that shows why pfSense says not to
                "target": str(wan_vip.address) if fw.nat_target == "vip" else "",
                "descr": f"outbound NAT {seg} -> WAN VIP"
                if fw.nat_target == "vip"
                else f"outbound NAT {seg} -> interface address",
            }
        )
    if fw.sync and fw.sync in node.addresses:
        rules.append({"interface": fw.sync, "descr": "SYNC link is permissive"})
        others = [n for n in t.nodes if n.name != node.name and fw.sync in n.addresses]
        if others:
            order = sorted(t.nodes, key=lambda n: n.advskew or 0)
            peer = others[0].addresses[fw.sync]
            hasync: dict[str, Any] = {
                "pfsyncenabled": True,
                "pfsyncinterface": fw.sync,
                "pfsyncpeerip": str(peer),
                "username": "admin",
                "password": sync_password,
            }
            if order[0].name == node.name:
                hasync["synchronizetoip"] = str(peer)
                hasync.update(dict.fromkeys(SYNC_TOGGLES, True))
            data["hasync"] = hasync
    dhcpd = dhcpd_data(t, node, dhcp)
    if dhcpd:
        data["dhcpd"] = dhcpd
    return data


def node_configs(
    t: TopologyLike, sync_password: str = DEFAULT_SYNC_PASSWORD, dhcp: str = "vip"
) -> dict[str, Config]:
    return {n.name: parse(node_data(t, n, sync_password, dhcp)) for n in t.nodes}
