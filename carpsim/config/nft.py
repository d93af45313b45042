"""Render a `Config` to one ``nft -f`` document: the whole table is replaced atomically.

pf semantics, as pfSense generates them, translated to nftables:

- Interface rules match traffic *entering* the interface, both to the firewall and through it:
  each rule lands in the input and in the forward chain, except rules whose destination is this
  firewall ("(self)", "<if> address"), which only concern input. First match wins (pf ``quick``),
  the default is block (policy drop).
- Traffic to a VIP arrives on the CARP macvlan, not the parent device, so an interface matches
  its device and its VHIDs' macvlans (``carp<vhid>x*`` unless the edge names them exactly).
- ``syn_only``: a new TCP flow only from a SYN (pf's ``flags S/SA``); the edge also turns
  conntrack's loose pickup off (``tcp_loose``), so a backup without the state cannot adopt a
  stream mid-way.
- Implicit rules pfSense adds too: loopback, established/related, invalid dropped, CARP (112) on
  every interface, pfsync (240) on the pfsync interface, DHCP requests on interfaces that serve.
- Outbound NAT translates with random source ports (pf rewrites them) unless ``static_port``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from carpsim.config import derive
from carpsim.config._read import ICMP_TYPES
from carpsim.config.model import Action, Config, Endpoint, FilterRule, NatMode, NatRule

TABLE = "carpsim"
CARP_PROTO = 112
PFSYNC_PROTO = 240
MAX_COMMENT = 128
_PROTO_NUMBERS = {"carp": str(CARP_PROTO), "pfsync": str(PFSYNC_PROTO)}
_SYN_ONLY = "ct state new tcp flags & (fin | syn | rst | ack) != syn drop"


def _q(text: str) -> str:
    clean = "".join(c for c in text if c.isprintable() and c not in '"\\')
    return '"' + clean.encode()[:MAX_COMMENT].decode(errors="ignore") + '"'


def _set(items: Sequence[str], quote: bool = False) -> str:
    values = [_q(i) if quote else i for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


class Renderer:
    def __init__(self, config: Config, devices: Mapping[str, Sequence[str]] | None) -> None:
        self.config = config
        self.devices = devices or {}

    def ifnames(self, interface: str) -> list[str]:
        iface = self.config.interface(interface)
        assert iface is not None
        names = [iface.device]
        if interface in self.devices:
            names += list(self.devices[interface])
        else:
            names += [f"carp{v.vhid}x*" for v in self.config.vips_on(interface)]
        return names

    def _addr(self, ep: Endpoint, side: str, where: str) -> list[str]:
        entries = derive.endpoint_addresses(self.config, ep, where)
        if entries is None:
            return []
        op = "!= " if ep.negate else ""
        return [f"ip {side}addr {op}{_set(entries)}"]

    def _ports(self, proto: str | None, ep: Endpoint, side: str, where: str) -> list[str]:
        ports = derive.endpoint_ports(self.config, ep, where)
        if ports is None:
            return []
        layer = "th" if proto == "tcp/udp" else proto
        return [f"{layer} {side}port {_set(ports)}"]

    def _proto(self, proto: str | None, icmptype: tuple[str, ...]) -> list[str]:
        if proto is None:
            return []
        if proto == "tcp/udp":
            return ["meta l4proto { tcp, udp }"]
        if proto == "icmp" and icmptype:
            return [f"icmp type {_set([ICMP_TYPES[t] for t in icmptype])}"]
        return [f"meta l4proto {_PROTO_NUMBERS.get(proto, proto)}"]

    def filter_rule(self, rule: FilterRule, index: int) -> list[str]:
        where = f"filter.rule[{index}]"
        match = [f"iifname {_set(self.ifnames(rule.interface), quote=True)}"]
        match += self._proto(rule.protocol, rule.icmptype)
        match += self._addr(rule.source, "s", f"{where}.source")
        match += self._ports(rule.protocol, rule.source, "s", f"{where}.source")
        match += self._addr(rule.destination, "d", f"{where}.destination")
        match += self._ports(rule.protocol, rule.destination, "d", f"{where}.destination")
        if rule.log:
            match.append(f'log prefix "carpsim {rule.tracker}: "')
        comment = f"comment {_q(rule.descr or f'rule {rule.tracker}')}"
        head = " ".join(match)
        if rule.action is Action.PASS:
            return [f"{head} accept {comment}"]
        if rule.action is Action.BLOCK:
            return [f"{head} drop {comment}"]
        # pf's reject: a TCP reset for TCP, ICMP unreachable otherwise
        if rule.protocol == "tcp":
            return [f"{head} reject with tcp reset {comment}"]
        if rule.protocol is None:
            return [f"{head} meta l4proto tcp reject with tcp reset {comment}",
                    f"{head} reject {comment}"]  # fmt: skip
        return [f"{head} reject {comment}"]

    def implicit_input(self) -> list[str]:
        out = [
            'iifname "lo" accept',
            "ct state established,related accept",
            "ct state invalid drop",
        ]
        for iface in self.config.interfaces:
            if not iface.carp_peers:
                continue
            # issue 14: a client seat must not be able to flood (or forge) adverts
            names = _set(self.ifnames(iface.name), quote=True)
            cluster = _set([str(iface.address.ip), *(str(p) for p in iface.carp_peers)])
            out += [
                f"iifname {names} ip protocol {CARP_PROTO} ip saddr {cluster} accept"
                f' comment "CARP from the cluster on {iface.name} (implicit)"',
                f"iifname {names} ip protocol {CARP_PROTO} counter drop"
                f' comment "CARP from outside the cluster on {iface.name} (implicit)"',
            ]
        out.append(f'ip protocol {CARP_PROTO} accept comment "CARP adverts (implicit)"')
        sync = self.config.statesync
        if sync is not None and sync.enabled:
            out.append(
                f"iifname {_q(sync.interface)} ip protocol {PFSYNC_PROTO} accept"
                ' comment "pfsync on the SYNC link (implicit)"'
            )
        for d in self.config.dhcpd:
            if d.enable and self.config.interface(d.interface) is not None:
                names = _set(self.ifnames(d.interface), quote=True)
                out.append(
                    f"iifname {names} udp sport 68 udp dport 67 accept"
                    f' comment "DHCP server on {d.interface} (implicit)"'
                )
        return out

    def nat_rule(self, rule: NatRule, index: int) -> list[str]:
        where = f"nat.outbound.rule[{index}]"
        iface = self.config.interface(rule.interface)
        assert iface is not None
        match = [f"oifname {_q(iface.device)}"]
        match += self._proto(rule.protocol, ())
        match += self._addr(rule.source, "s", f"{where}.source")
        match += self._ports(rule.protocol, rule.source, "s", f"{where}.source")
        match += self._addr(rule.destination, "d", f"{where}.destination")
        match += self._ports(rule.protocol, rule.destination, "d", f"{where}.destination")
        comment = f"comment {_q(rule.descr or f'outbound NAT {rule.tracker}')}"
        if rule.nonat:
            return [" ".join(match) + f" accept {comment}"]
        target = rule.target if rule.target is not None else iface.address.ip
        ports = "" if rule.static_port else " random"
        return [" ".join(match) + f" snat to {target}{ports} {comment}"]

    def automatic_nat(self) -> list[str]:
        """pfSense's automatic rules: every other subnet out of each gateway interface, to the
        interface address (which is why the seed switches to manual rules to the WAN VIP)."""
        out = []
        for wan in self.config.interfaces:
            if wan.gateway is None:
                continue
            for inside in self.config.interfaces:
                if inside is wan:
                    continue
                out.append(
                    f"oifname {_q(wan.device)} ip saddr {inside.network} snat to"
                    f' {wan.address.ip} random comment "automatic outbound NAT {inside.name}"'
                )
        return out


def render(config: Config, devices: Mapping[str, Sequence[str]] | None = None) -> str:
    """The complete ruleset. `devices`: logical interface -> its CARP macvlan device names."""
    r = Renderer(config, devices)
    inp = r.implicit_input()
    fwd = ["ct state established,related accept", "ct state invalid drop"]
    if config.filter.syn_only:
        fwd.append(_SYN_ONLY + ' comment "new TCP only from a SYN (pf flags S/SA)"')
    for i, rule in enumerate(config.filter.rules):
        if rule.disabled:
            continue
        lines = r.filter_rule(rule, i)
        inp += lines
        to_self = rule.destination.network is not None and (
            rule.destination.network == "(self)" or rule.destination.network.endswith("ip")
        )
        if not to_self or rule.destination.negate:
            fwd += lines
    nat: list[str] = []
    mode = config.nat.mode
    if mode in (NatMode.MANUAL, NatMode.HYBRID):
        for i, n in enumerate(config.nat.rules):
            if not n.disabled:
                nat += r.nat_rule(n, i)
    if mode in (NatMode.AUTOMATIC, NatMode.HYBRID):
        nat += r.automatic_nat()

    def chain(name: str, hook: str, policy: str, rules: list[str]) -> list[str]:
        kind = "nat" if hook == "postrouting" else "filter"
        prio = "srcnat" if kind == "nat" else "filter"
        head = f"    type {kind} hook {hook} priority {prio}; policy {policy};"
        return [f"  chain {name} {{", head, *(f"    {x}" for x in rules), "  }"]

    lines = [
        f"# carpsim ruleset for {config.node.name} (rendered from its config; nft -f)",
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        *chain("input", "input", "drop", inp),
        *chain("forward", "forward", "drop", fwd),
        *chain("output", "output", "accept", []),
        *chain("postrouting", "postrouting", "accept", nat),
        "}",
        "",
    ]
    return "\n".join(lines)
