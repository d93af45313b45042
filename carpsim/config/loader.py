"""The node config TOML -> `Config`, validated as a whole (docs/config.md has the format).

Pure: `parse` takes the parsed TOML mapping, `loads` text. Reading the file is the caller's job
(``carpsim.config.load`` does it for the CLI). Errors are `ConfigError("dotted.field", msg)` with
0-based list indices: ``filter.rule[3].source: unknown alias "LANX"``.
"""

from __future__ import annotations

import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from carpsim.config import legacy
from carpsim.config._read import (
    ALIAS_NAME,
    ICMP_TYPES,
    IF_NAME,
    Table,
    endpoint,
    host,
    ifname,
    ipv4,
    ipv4_interface,
    ipv4_network,
    port_spec,
    protocol,
)
from carpsim.config.model import (
    SYNC_TOGGLES,
    Action,
    Alias,
    AliasType,
    Config,
    Dhcpd,
    FilterRule,
    FilterSection,
    HaSync,
    Interface,
    NatMode,
    NatRule,
    NatSection,
    StateSync,
    StaticMap,
    StaticRoute,
    System,
    User,
    VirtualIp,
)
from carpsim.config.validate import validate
from carpsim.errors import ConfigError
from carpsim.web import config as web_config

_R = TypeVar("_R", FilterRule, NatRule)
TOP_KEYS = {
    "node",
    "carp",
    "vhid",
    "statesync",
    "web",
    "system",
    "interfaces",
    "virtualip",
    "aliases",
    "filter",
    "nat",
    "dhcpd",
    "staticroutes",
    "hasync",
}
_NAT_MODES = {
    "automatic": NatMode.AUTOMATIC,
    "hybrid": NatMode.HYBRID,
    "manual": NatMode.MANUAL,
    "advanced": NatMode.MANUAL,
    "disabled": NatMode.DISABLED,
}


def loads(text: str, source: str = "config") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        # tomllib recurses per nesting level: a hostile file must still be a one-line error.
        raise ConfigError(source, "nested too deeply to be a node config") from exc
    return parse(data)


def parse(data: Mapping[str, Any]) -> Config:
    top = Table(data, "")
    top.only(TOP_KEYS)
    if "node" not in data:
        raise ConfigError("node", "a [node] table is required")
    node = legacy.node_settings(top.table("node"))
    carp = legacy.carp_defaults(top.table("carp"))
    interfaces = _interfaces(top.table("interfaces"))
    vips = legacy.legacy_vhids(top.tables("vhid"), carp, interfaces)
    vips += [_vip(t, carp, interfaces) for t in top.table("virtualip").tables("vip")]
    virtualip = top.table("virtualip")
    virtualip.only({"vip"})
    hasync = _hasync(top.table("hasync"))
    sync = legacy.statesync(top.table("statesync")) if "statesync" in data else None
    if sync is None and hasync.pfsyncenabled and hasync.pfsyncinterface:
        # pfSense's way of saying it: pfsync on this interface, to this peer.
        iface = next((i for i in interfaces if i.name == hasync.pfsyncinterface), None)
        if iface is None:
            raise ConfigError("hasync.pfsyncinterface", f"no interfaces.{hasync.pfsyncinterface}")
        sync = StateSync(interface=iface.device, peer=hasync.pfsyncpeerip)
    config = Config(
        node=node,
        carp=carp,
        system=_system(top.table("system")),
        interfaces=tuple(interfaces),
        virtualip=tuple(vips),
        aliases=_aliases(top.table("aliases")),
        filter=_filter(top.table("filter")),
        nat=_nat(top.table("nat")),
        dhcpd=_dhcpd(top.table("dhcpd")),
        staticroutes=_routes(top.table("staticroutes")),
        hasync=hasync,
        statesync=sync,
        web=web_config.parse(data.get("web")),
    )
    validate(config)
    return config


def _system(t: Table) -> System:
    t.only({"hostname", "version", "webgui_port", "user"})
    users = []
    for u in t.tables("user"):
        u.only({"name", "password", "privileges"})
        users.append(
            User(
                u.text("name", required=True),
                u.text("password", required=True),
                u.strings("privileges"),
            )
        )
    version = t.text("version", System.version)
    if not version:
        raise ConfigError("system.version", "must not be empty")
    return System(
        hostname=t.text("hostname", ""),
        version=version,
        webgui_port=t.integer("webgui_port", 443, lo=1, hi=65535),
        users=tuple(users),
    )


def _interfaces(t: Table) -> list[Interface]:
    out = []
    for name in t.data:
        it = t.table(name)
        if not IF_NAME.match(name):
            raise ConfigError(it.where, "interface names are lowercase letters/digits (wan, opt1)")
        if name.endswith("ip"):
            # pfSense spells "<if> address" as "<if>ip": "voip" would read as "vo address"
            raise ConfigError(it.where, "an interface name must not end in 'ip'")
        it.only({"device", "address", "descr", "gateway", "carp_peers"})
        device = ifname(it.text("device", name), it.at("device"))
        address = ipv4_interface(it.text("address", required=True), it.at("address"))
        gateway = it.ipv4("gateway")
        if gateway is not None and gateway not in address.network:
            raise ConfigError(it.at("gateway"), f"{gateway} is not on {address.network}")
        peers = tuple(
            host(p, f"{it.at('carp_peers')}[{n}]") for n, p in enumerate(it.strings("carp_peers"))
        )
        for n, peer in enumerate(peers):
            if peer not in address.network:
                raise ConfigError(
                    f"{it.at('carp_peers')}[{n}]", f"{peer} is not on {address.network}"
                )
        out.append(Interface(name, device, address, it.descr(), gateway, peers))
    return out


def _vip(t: Table, carp: Any, interfaces: list[Interface]) -> VirtualIp:
    t.only({"mode", "interface", "vhid", "subnet", "descr"} | legacy.CARP_KEYS | {"peer"})
    if t.text("mode", "carp") != "carp":
        raise ConfigError(t.at("mode"), "only CARP VIPs are supported (mode = 'carp')")
    interface = t.text("interface", required=True)
    vhid = t.integer("vhid", lo=1, hi=255)
    if vhid is None:
        raise ConfigError(t.at("vhid"), "required")
    text = t.text("subnet", required=True)
    if "/" not in text:
        iface = next((i for i in interfaces if i.name == interface), None)
        if iface is None:
            raise ConfigError(t.at("interface"), f"no interfaces.{interface}")
        text = f"{ipv4(text, t.at('subnet'))}/{iface.address.network.prefixlen}"
    return VirtualIp(
        interface=interface,
        vhid=vhid,
        subnet=ipv4_interface(text, t.at("subnet")),
        descr=t.descr(),
        **legacy.vip_fields(t, carp),  # type: ignore[arg-type]
    )


def _aliases(t: Table) -> tuple[Alias, ...]:
    out = []
    for name in t.data:
        at = t.table(name)
        if not ALIAS_NAME.match(name):
            raise ConfigError(at.where, "alias names are letters, digits and _ (at most 32)")
        at.only({"type", "address", "descr", "nosync"})
        kind_text = at.text("type", required=True)
        try:
            kind = AliasType(kind_text)
        except ValueError as exc:
            raise ConfigError(at.at("type"), "one of host, network, port") from exc
        entries = at.strings("address")
        for i, entry in enumerate(entries):
            where = f"{at.at('address')}[{i}]"
            if ALIAS_NAME.match(entry):
                continue  # a nested alias: resolved (and checked) by validate
            if kind is AliasType.PORT:
                port_spec(entry, where)
            elif kind is AliasType.HOST:
                ipv4(entry, where)
            else:
                ipv4_network(entry, where)
        out.append(Alias(name, kind, entries, at.descr(), at.flag("nosync")))
    return tuple(out)


def _icmptypes(t: Table) -> tuple[str, ...]:
    types = t.strings("icmptype")
    for i, name in enumerate(types):
        if name not in ICMP_TYPES:
            raise ConfigError(f"{t.at('icmptype')}[{i}]", f"one of {', '.join(ICMP_TYPES)}")
    return types


def _with_trackers(rules: list[_R], where: str) -> tuple[_R, ...]:
    """Give rules without a tracker a stable one derived from their content."""
    seen: set[int] = set()
    out: list[_R] = []
    for i, rule in enumerate(rules):
        tracker = rule.tracker
        if tracker == 0:
            tracker = zlib.crc32(repr(rule).encode()) or 1
            while tracker in seen:
                tracker = (tracker + 1) & 0xFFFFFFFF or 1
        elif tracker in seen:
            raise ConfigError(f"{where}[{i}].tracker", f"{tracker} is used by an earlier rule")
        seen.add(tracker)
        out.append(replace(rule, tracker=tracker))
    return tuple(out)


_RULE_KEYS = {
    "interface",
    "action",
    "protocol",
    "source",
    "source_port",
    "destination",
    "destination_port",
    "descr",
    "nosync",
    "disabled",
    "tracker",
}


def _filter(t: Table) -> FilterSection:
    t.only({"rule", "syn_only", "tcp_loose"})
    rules = []
    for r in t.tables("rule"):
        r.only(_RULE_KEYS | {"icmptype", "log"})
        try:
            action = Action(r.text("action", "pass"))
        except ValueError as exc:
            raise ConfigError(r.at("action"), "one of pass, block, reject") from exc
        proto = protocol(r.data.get("protocol"), r.at("protocol"))
        rule = FilterRule(
            interface=r.text("interface", required=True),
            action=action,
            protocol=proto,
            source=endpoint(r.data.get("source", "any"), r.at("source"), r.data.get("source_port")),
            destination=endpoint(
                r.data.get("destination", "any"),
                r.at("destination"),
                r.data.get("destination_port"),
            ),
            icmptype=_icmptypes(r),
            descr=r.descr(),
            nosync=r.flag("nosync"),
            disabled=r.flag("disabled"),
            log=r.flag("log"),
            tracker=r.integer("tracker", 0, hi=2**32 - 1),
        )
        _check_ports(rule.protocol, rule.source.port, rule.destination.port, r)
        if rule.icmptype and rule.protocol != "icmp":
            raise ConfigError(r.at("icmptype"), "only with protocol = 'icmp'")
        rules.append(rule)
    return FilterSection(
        rules=_with_trackers(rules, "filter.rule"),
        syn_only=t.flag("syn_only", True),
        tcp_loose=t.flag("tcp_loose", False),
    )


def _check_ports(proto: str | None, sport: str | None, dport: str | None, r: Table) -> None:
    if (sport or dport) and proto not in ("tcp", "udp", "tcp/udp"):
        key = "source_port" if sport else "destination_port"
        raise ConfigError(r.at(key), "ports need protocol tcp, udp or tcp/udp")


def _nat(t: Table) -> NatSection:
    t.only({"outbound"})
    out = t.table("outbound")
    out.only({"mode", "rule"})
    mode_text = out.text("mode", "automatic")
    if mode_text not in _NAT_MODES:
        raise ConfigError(out.at("mode"), "one of automatic, hybrid, manual, disabled")
    rules = []
    for r in out.tables("rule"):
        r.only(_RULE_KEYS | {"target", "static_port", "nonat"})
        target_text = r.text("target", "")
        target = (
            None if target_text in ("", "interface address") else ipv4(target_text, r.at("target"))
        )
        if "source" not in r.data:
            raise ConfigError(
                r.at("source"), 'required (a subnet or alias; pfSense\'s "any" is a lint error)'
            )
        rule = NatRule(
            interface=r.text("interface", required=True),
            source=endpoint(r.data["source"], r.at("source"), r.data.get("source_port")),
            destination=endpoint(
                r.data.get("destination", "any"),
                r.at("destination"),
                r.data.get("destination_port"),
            ),
            protocol=protocol(r.data.get("protocol"), r.at("protocol")),
            target=target,
            static_port=r.flag("static_port"),
            nonat=r.flag("nonat"),
            descr=r.descr(),
            nosync=r.flag("nosync"),
            disabled=r.flag("disabled"),
            tracker=r.integer("tracker", 0, hi=2**32 - 1),
        )
        if rule.source.network is not None and rule.source.network.endswith("ip"):
            raise ConfigError(r.at("source"), "an outbound NAT source is a network or alias")
        _check_ports(rule.protocol, rule.source.port, rule.destination.port, r)
        rules.append(rule)
    return NatSection(_NAT_MODES[mode_text], _with_trackers(rules, "nat.outbound.rule"))


def _dhcpd(t: Table) -> tuple[Dhcpd, ...]:
    out = []
    for name in t.data:
        d = t.table(name)
        d.only(
            {
                "enable",
                "range",
                "gateway",
                "dnsserver",
                "domain",
                "defaultleasetime",
                "maxleasetime",
                "failover_peerip",
                "staticmap",
            }
        )
        rng = d.table("range")
        rng.only({"from", "to"})
        staticmaps = []
        for s in d.tables("staticmap"):
            s.only({"mac", "ipaddr", "hostname", "descr"})
            mac = s.text("mac", required=True).lower()
            parts = mac.split(":")
            if len(parts) != 6 or not all(len(p) == 2 and _hex(p) for p in parts):
                raise ConfigError(s.at("mac"), f"not a MAC address aa:bb:cc:dd:ee:ff: {mac!r}")
            staticmaps.append(
                StaticMap(
                    mac,
                    ipv4(s.text("ipaddr", required=True), s.at("ipaddr")),
                    s.text("hostname"),
                    s.descr(),
                )
            )
        dns = d.strings("dnsserver")
        out.append(
            Dhcpd(
                interface=name,
                enable=d.flag("enable", True),
                range_from=ipv4(rng.text("from", required=True), rng.at("from")),
                range_to=ipv4(rng.text("to", required=True), rng.at("to")),
                gateway=d.ipv4("gateway"),
                dnsservers=tuple(ipv4(x, f"{d.at('dnsserver')}[{i}]") for i, x in enumerate(dns)),
                domain=d.text("domain", ""),
                defaultleasetime=d.integer("defaultleasetime", 7200, lo=1),
                maxleasetime=d.integer("maxleasetime", 86400, lo=1),
                failover_peerip=d.ipv4("failover_peerip"),
                staticmaps=tuple(staticmaps),
            )
        )
    return tuple(out)


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _routes(t: Table) -> tuple[StaticRoute, ...]:
    t.only({"route"})
    out = []
    for r in t.tables("route"):
        r.only({"network", "gateway", "descr", "disabled"})
        out.append(
            StaticRoute(
                ipv4_network(r.text("network", required=True), r.at("network")),
                ipv4(r.text("gateway", required=True), r.at("gateway")),
                r.descr(),
                r.flag("disabled"),
            )
        )
    return tuple(out)


def _hasync(t: Table) -> HaSync:
    t.only(
        {
            "pfsyncenabled",
            "pfsyncinterface",
            "pfsyncpeerip",
            "synchronizetoip",
            "username",
            "password",
            *SYNC_TOGGLES,
        }
    )
    return HaSync(
        pfsyncenabled=t.flag("pfsyncenabled"),
        pfsyncinterface=t.text("pfsyncinterface"),
        pfsyncpeerip=t.ipv4("pfsyncpeerip"),
        synchronizetoip=t.ipv4("synchronizetoip"),
        username=t.text("username", "admin"),
        password=t.text("password", ""),
        toggles=frozenset(k for k in SYNC_TOGGLES if t.flag(k)),
    )
