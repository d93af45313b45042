"""The reference ruleset of a lab firewall node: pf-like filter plus outbound NAT to the WAN VIP.

The lab no longer loads this: each node renders its own ruleset from the config the lab writes
(`carpsim.config.fromlab`, docs/config.md). This text stays as the reference the rendered
configs are checked against (tests/unit/test_config_nft.py): same NAT, same filter decisions.

Why it looks like this: a failover test that passes without state sync proves nothing, so it
only means something if the backup cannot silently "pick up" a flow it has no state for. So the
forward chain accepts a new TCP flow only from its SYN (pf's default ``flags S/SA``),
conntrack's loose pickup is off (``nf_conntrack_tcp_loose=0``, set by the builder), and outbound
NAT uses ``snat ... random``: pf rewrites source ports, and with random ports a stateless backup
cannot reproduce the mapping. The NAT target is the WAN VIP, never an interface address
(masquerade would pick the node's own address, which differs between nodes and breaks every flow
on failover).

Matches use source subnets rather than input interfaces because traffic to a VIP arrives on the
CARP macvlan (``carp<vhid>x<ifindex>``), whose name the lab does not control; NAT matches the
WAN parent as output interface, where the default route points.
"""

from __future__ import annotations

from carpsim.lab.topology import Host, Topology
from carpsim.protocol.constants import IPPROTO_CARP

TABLE = "carpsim"


def ruleset(topology: Topology, node: Host) -> str:
    """The complete ``nft -f`` input for one node (pure: same topology, same text)."""
    fw = topology.firewall
    wan_if = node.interface(fw.wan)
    vip = topology.wan_vip().address
    inside = [(s, topology.segments[s].subnet) for s in fw.inside if s in node.addresses]
    inside_set = ", ".join(str(net) for _, net in inside)
    sync_if = node.interface(fw.sync) if fw.sync and fw.sync in node.addresses else None

    lines = [
        f"# carpsim lab firewall for {node.name} (generated; loaded with nft -f in its netns)",
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iifname "lo" accept',
        "    ct state established,related accept",
        "    ct state invalid drop",
        f'    ip protocol {IPPROTO_CARP} accept comment "CARP adverts on every segment"',
        "    icmp type { echo-request, destination-unreachable, time-exceeded } accept",
        '    udp sport 68 udp dport 67 accept comment "DHCP from clients without an address"',
    ]
    if sync_if:
        lines.append(f'    iifname "{sync_if}" accept comment "SYNC link is permissive"')
    if inside:
        lines.append(f'    ip saddr {{ {inside_set} }} accept comment "management from inside"')
    lines += [
        "  }",
        "",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct state invalid drop",
    ]
    if sync_if:
        lines.append(f'    iifname "{sync_if}" accept comment "SYNC link is permissive"')
    lines.append(
        "    ct state new tcp flags & (fin | syn | rst | ack) != syn drop"
        ' comment "new TCP only from a SYN (pf flags S/SA)"'
    )
    for seg, net in inside:
        lines.append(
            f"    ip saddr {net} ct state new meta l4proto {{ tcp, udp, icmp }} accept"
            f' comment "new flows from {seg}"'
        )
    lines += [
        "  }",
        "",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        "  }",
        "",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    for seg, net in inside:
        lines.append(
            f'    oifname "{wan_if}" ip saddr {net} snat to {vip} random'
            f' comment "outbound NAT {seg} -> WAN VIP"'
        )
    lines += ["  }", "}", ""]
    return "\n".join(lines)
