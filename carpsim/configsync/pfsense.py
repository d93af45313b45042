"""Config sections <-> the structs pfSense sends over XML-RPC (and keeps in config.xml).

pfSense's sections are PHP arrays: every leaf is a string, a flag is an empty string that is
present when on and absent when off, lists are arrays of structs (``filter.rule``,
``virtualip.vip`` ...). `to_pfsense` renders the model that way; `to_toml` turns a received
(untrusted) struct into the TOML-shaped mapping the loader validates, so a synced section gets
exactly the checks a hand-written file gets. A malformed struct raises `ConfigError` naming the
pfSense path (``filter.rule[2].source``), never anything else.

carpsim's own knobs without a pfSense counterpart travel as extra ``carpsim_*`` keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from ipaddress import IPv4Address
from typing import Any

from carpsim.config.model import (
    Config,
    Endpoint,
    NatMode,
    VirtualIp,
)
from carpsim.errors import ConfigError

SECTIONS = ("filter", "nat", "aliases", "dhcpd", "staticroutes", "gateways", "virtualip")
_NAT_MODE_OUT = {NatMode.MANUAL: "advanced"}


def _flags(out: dict[str, Any], obj: object, names: Mapping[str, str]) -> None:
    for attr, key in names.items():
        if getattr(obj, attr):
            out[key] = ""


def endpoint_struct(ep: Endpoint) -> dict[str, str]:
    out: dict[str, str] = {}
    if ep.network is not None:
        out["network"] = ep.network
    elif ep.address is not None:
        out["address"] = ep.address
    else:
        out["any"] = ""
    if ep.negate:
        out["not"] = ""
    if ep.port is not None:
        out["port"] = ep.port
    return out


def _vip(v: VirtualIp) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": "carp", "interface": v.interface, "vhid": str(v.vhid),
        "advskew": str(v.advskew), "advbase": str(v.advbase), "password": v.password,
        "type": "single", "subnet": str(v.subnet.ip),
        "subnet_bits": str(v.subnet.network.prefixlen),
        "descr": v.descr, "uniqid": f"carp{v.interface}{v.vhid}",
        "carpsim_formula": v.master_down_formula, "carpsim_deadratio": str(v.deadratio),
        "carpsim_demote": str(v.demote), "carpsim_preempt": "on" if v.preempt else "off",
    }  # fmt: skip
    if v.extra_subnets:
        out["carpsim_extra"] = " ".join(str(s) for s in v.extra_subnets)
    if v.real_mac:
        out["carpsim_real_mac"] = ""
    if v.peer is not None:
        out["carpsim_peer"] = str(v.peer)
    return out


def gateway_name(address: IPv4Address) -> str:
    return "GW_" + str(address).replace(".", "_")


def _virtualip_section(c: Config) -> Any:
    return {"vip": [_vip(v) for v in c.virtualip]}


def _filter_section(c: Config) -> Any:
    rules = []
    for r in c.filter.rules:
        rule: dict[str, Any] = {
            "tracker": str(r.tracker), "type": r.action.value, "interface": r.interface,
            "ipprotocol": "inet", "source": endpoint_struct(r.source),
            "destination": endpoint_struct(r.destination), "descr": r.descr,
        }  # fmt: skip
        if r.protocol is not None:
            rule["protocol"] = r.protocol
        if r.icmptype:
            rule["icmptype"] = ",".join(r.icmptype)
        _flags(rule, r, {"nosync": "nosync", "disabled": "disabled", "log": "log"})
        rules.append(rule)
    return {
        "rule": rules,
        "carpsim_syn_only": "on" if c.filter.syn_only else "off",
        "carpsim_tcp_loose": "on" if c.filter.tcp_loose else "off",
    }


def _nat_section(c: Config) -> Any:
    out_rules = []
    for n in c.nat.rules:
        src = endpoint_struct(n.source)
        rule: dict[str, Any] = {
            "interface": n.interface, "ipprotocol": "inet",
            "source": {("network" if k in ("address", "network") else k): v
                       for k, v in src.items() if k != "port"},
            "destination": endpoint_struct(n.destination),
            "target": "" if n.target is None else str(n.target),
            "descr": n.descr, "tracker": str(n.tracker),
        }  # fmt: skip
        rule["destination"].pop("port", None)
        if n.source.port is not None:
            rule["sourceport"] = n.source.port
        if n.destination.port is not None:
            rule["dstport"] = n.destination.port
        if n.protocol is not None:
            rule["protocol"] = n.protocol
        _flags(rule, n, {"static_port": "staticnatport", "nonat": "nonat",
                         "nosync": "nosync", "disabled": "disabled"})  # fmt: skip
        out_rules.append(rule)
    mode = _NAT_MODE_OUT.get(c.nat.mode, c.nat.mode.value)
    return {"outbound": {"mode": mode, "rule": out_rules}}


def _aliases_section(c: Config) -> Any:
    aliases = []
    for a in c.aliases:
        alias = {"name": a.name, "type": a.type.value, "address": " ".join(a.entries),
                 "descr": a.descr}  # fmt: skip
        _flags(alias, a, {"nosync": "nosync"})
        aliases.append(alias)
    return {"alias": aliases}


def _dhcpd_section(c: Config) -> Any:
    return {d.interface: _dhcpd(d) for d in c.dhcpd}


def _staticroutes_section(c: Config) -> Any:
    return {
        "route": [
            {
                "network": str(r.network),
                "gateway": gateway_name(r.gateway),
                "descr": r.descr,
                **({"disabled": ""} if r.disabled else {}),
            }
            for r in c.staticroutes
        ]
    }


def _gateways_section(c: Config) -> Any:
    items = []
    for addr in dict.fromkeys(r.gateway for r in c.staticroutes):
        iface = next((i for i in c.interfaces if addr in i.network), None)
        items.append({"name": gateway_name(addr), "gateway": str(addr), "ipprotocol": "inet",
                      "interface": iface.name if iface else "", "descr": ""})  # fmt: skip
    return {"gateway_item": items}


_SENDERS: dict[str, Callable[[Config], Any]] = {
    "virtualip": _virtualip_section,
    "filter": _filter_section,
    "nat": _nat_section,
    "aliases": _aliases_section,
    "dhcpd": _dhcpd_section,
    "staticroutes": _staticroutes_section,
    "gateways": _gateways_section,
}


def to_pfsense(config: Config, section: str) -> Any:
    """One section as pfSense would send it (missing sections are empty, never left out)."""
    if section not in _SENDERS:
        raise ValueError(f"not a synced section: {section}")
    return _SENDERS[section](config)


def _dhcpd(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "range": {"from": str(d.range_from), "to": str(d.range_to)},
        "gateway": "" if d.gateway is None else str(d.gateway),
        "dnsserver": [str(x) for x in d.dnsservers], "domain": d.domain,
        "defaultleasetime": str(d.defaultleasetime), "maxleasetime": str(d.maxleasetime),
        "failover_peerip": "" if d.failover_peerip is None else str(d.failover_peerip),
        "staticmap": [
            {"mac": m.mac, "ipaddr": str(m.ipaddr), "hostname": m.hostname or "", "descr": m.descr}
            for m in d.staticmaps
        ],
    }  # fmt: skip
    if d.enable:
        out["enable"] = ""
    return out


# --- received structs -> TOML-shaped data (validated afterwards by the loader) ---------------


def struct(value: object, where: str) -> Mapping[str, Any]:
    if isinstance(value, list) and not value:
        return {}  # PHP sends an empty array for an empty section
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(where, "must be a struct")
    return value


def items(value: object, where: str) -> list[Mapping[str, Any]]:
    """A pfSense list element: an array of structs (a lone struct is a list of one)."""
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(where, "must be an array")
    return [struct(v, f"{where}[{i}]") for i, v in enumerate(value)]


def scalar(s: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = s.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return "on" if value else ""
    if not isinstance(value, str | int | float):
        raise ConfigError(f"{where}.{key}", "must be a string")
    return str(value)


def flag(s: Mapping[str, Any], key: str) -> bool:
    value = s.get(key)
    return value is not None and value is not False and value not in ("off", "0", "no")


def integer(s: Mapping[str, Any], key: str, where: str) -> int | None:
    text = scalar(s, key, where).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}", f"not an integer: {text!r}") from exc


_PF_IFNAME = re.compile(r"^(wan|lan|opt[0-9]+)$")


def _is_interface(name: str, interfaces: Collection[str]) -> bool:
    return name in interfaces or bool(_PF_IFNAME.match(name))


def endpoint_text(s: object, where: str, interfaces: Collection[str]) -> tuple[str, str | None]:
    """A pfSense source/destination struct -> (``any``/``lan net``/address text, port)."""
    ep = struct(s, where)
    neg = "!" if "not" in ep else ""
    port = scalar(ep, "port", where) or None
    if "any" in ep:
        return "any", port
    if "network" in ep:
        net = scalar(ep, "network", where)
        if net == "(self)" or net[:1].isdigit():
            return neg + net, port  # outbound NAT keeps CIDRs under "network"
        if _is_interface(net, interfaces):
            return f"{neg}{net} net", port
        if net.endswith("ip") and _is_interface(net[:-2], interfaces):
            return f"{neg}{net[:-2]} address", port
        return neg + net, port  # an alias (outbound NAT)
    if "address" in ep:
        return neg + scalar(ep, "address", where), port
    raise ConfigError(where, "needs any, network or address")


def _put_endpoint(out: dict[str, Any], side: str, value: tuple[str, str | None]) -> None:
    out[side] = value[0]
    if value[1] is not None:
        out[f"{side}_port"] = value[1]


def _onoff(s: Mapping[str, Any], key: str, default: bool) -> bool:
    return flag(s, key) if key in s else default


def _carp_fields(v: Mapping[str, Any], where: str, out: dict[str, Any]) -> None:
    """pfSense's VIP fields plus carpsim's ``carpsim_*`` extras, when present."""
    for key in ("vhid", "advskew", "advbase"):
        value = integer(v, key, where)
        if value is not None:
            out[key] = value
    if "carpsim_formula" in v:
        out["master_down_formula"] = scalar(v, "carpsim_formula", where)
    for key in ("deadratio", "demote"):
        value = integer(v, f"carpsim_{key}", where)
        if value is not None:
            out[key] = value
    if "carpsim_preempt" in v:
        out["preempt"] = flag(v, "carpsim_preempt")
    if "carpsim_real_mac" in v:
        out["real_mac"] = True
    if scalar(v, "carpsim_peer", where):
        out["peer"] = scalar(v, "carpsim_peer", where)


def toml_virtualip(value: object, interfaces: Collection[str]) -> dict[str, Any]:
    vips = []
    for i, v in enumerate(items(struct(value, "virtualip").get("vip"), "virtualip.vip")):
        where = f"virtualip.vip[{i}]"
        mode = scalar(v, "mode", where, "carp")
        if mode != "carp":
            raise ConfigError(f"{where}.mode", f"{mode!r}: carpsim models CARP VIPs only")
        subnet = scalar(v, "subnet", where)
        bits = scalar(v, "subnet_bits", where)
        vip: dict[str, Any] = {
            "interface": scalar(v, "interface", where),
            "subnet": f"{subnet}/{bits}" if bits else subnet,
            "password": scalar(v, "password", where),
            "descr": scalar(v, "descr", where),
        }
        _carp_fields(v, where, vip)
        vips.append(vip)
        extra = scalar(v, "carpsim_extra", where)
        if extra:
            raise ConfigError(f"{where}.carpsim_extra", "several addresses per VHID do not sync")
    return {"vip": vips}


def toml_filter(value: object, interfaces: Collection[str]) -> dict[str, Any]:
    f = struct(value, "filter")
    rules = []
    for i, r in enumerate(items(f.get("rule"), "filter.rule")):
        where = f"filter.rule[{i}]"
        rule: dict[str, Any] = {
            "interface": scalar(r, "interface", where),
            "action": scalar(r, "type", where, "pass"),
            "descr": scalar(r, "descr", where),
        }
        if scalar(r, "ipprotocol", where, "inet") != "inet":
            raise ConfigError(f"{where}.ipprotocol", "carpsim filters IPv4 only (inet)")
        if scalar(r, "protocol", where):
            rule["protocol"] = scalar(r, "protocol", where)
        _put_endpoint(
            rule,
            "source",
            endpoint_text(r.get("source", {"any": ""}), f"{where}.source", interfaces),
        )
        _put_endpoint(
            rule,
            "destination",
            endpoint_text(r.get("destination", {"any": ""}), f"{where}.destination", interfaces),
        )
        icmp = scalar(r, "icmptype", where)
        if icmp and icmp != "any":
            rule["icmptype"] = icmp.split(",")
        for key in ("nosync", "disabled", "log"):
            if flag(r, key):
                rule[key] = True
        tracker = integer(r, "tracker", where)
        if tracker:
            rule["tracker"] = tracker
        rules.append(rule)
    return {
        "rule": rules,
        "syn_only": _onoff(f, "carpsim_syn_only", True),
        "tcp_loose": _onoff(f, "carpsim_tcp_loose", False),
    }


def toml_nat(value: object, interfaces: Collection[str]) -> dict[str, Any]:
    n = struct(value, "nat")
    out = struct(n.get("outbound", {}), "nat.outbound")
    rules = []
    for i, r in enumerate(items(out.get("rule"), "nat.outbound.rule")):
        where = f"nat.outbound.rule[{i}]"
        rule: dict[str, Any] = {
            "interface": scalar(r, "interface", where),
            "target": scalar(r, "target", where),
            "descr": scalar(r, "descr", where),
        }
        if scalar(r, "protocol", where) not in ("", "any"):
            rule["protocol"] = scalar(r, "protocol", where)
        src = endpoint_text(r.get("source", {"any": ""}), f"{where}.source", interfaces)
        dst = endpoint_text(r.get("destination", {"any": ""}), f"{where}.destination", interfaces)
        _put_endpoint(rule, "source", (src[0], scalar(r, "sourceport", where) or None))
        _put_endpoint(rule, "destination", (dst[0], scalar(r, "dstport", where) or None))
        for key, name in (("staticnatport", "static_port"), ("nonat", "nonat"),
                          ("nosync", "nosync"), ("disabled", "disabled")):  # fmt: skip
            if flag(r, key):
                rule[name] = True
        tracker = integer(r, "tracker", where)
        if tracker:
            rule["tracker"] = tracker
        rules.append(rule)
    mode = scalar(out, "mode", "nat.outbound", "automatic")
    return {"outbound": {"mode": "manual" if mode == "advanced" else mode, "rule": rules}}


def toml_aliases(value: object, interfaces: Collection[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, a in enumerate(items(struct(value, "aliases").get("alias"), "aliases.alias")):
        where = f"aliases.alias[{i}]"
        name = scalar(a, "name", where)
        if not name or name in out:
            raise ConfigError(f"{where}.name", f"missing or duplicate alias name {name!r}")
        out[name] = {
            "type": scalar(a, "type", where),
            "address": scalar(a, "address", where).split(),
            "descr": scalar(a, "descr", where),
            "nosync": flag(a, "nosync"),
        }
    return out


def toml_dhcpd(value: object, interfaces: Collection[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, body in struct(value, "dhcpd").items():
        where = f"dhcpd.{name}"
        d = struct(body, where)
        rng = struct(d.get("range", {}), f"{where}.range")
        entry: dict[str, Any] = {
            "enable": flag(d, "enable"),
            "range": {"from": scalar(rng, "from", f"{where}.range"),
                      "to": scalar(rng, "to", f"{where}.range")},
            "domain": scalar(d, "domain", where),
        }  # fmt: skip
        dns = d.get("dnsserver", [])
        dns_list = dns if isinstance(dns, list) else [dns]
        entry["dnsserver"] = [scalar({"v": x}, "v", f"{where}.dnsserver") for x in dns_list if x]
        for key in ("gateway", "failover_peerip"):
            if scalar(d, key, where):
                entry[key] = scalar(d, key, where)
        for key in ("defaultleasetime", "maxleasetime"):
            number = integer(d, key, where)
            if number is not None:
                entry[key] = number
        maps = []
        for j, m in enumerate(items(d.get("staticmap"), f"{where}.staticmap")):
            w = f"{where}.staticmap[{j}]"
            sm = {
                "mac": scalar(m, "mac", w),
                "ipaddr": scalar(m, "ipaddr", w),
                "descr": scalar(m, "descr", w),
            }
            if scalar(m, "hostname", w):
                sm["hostname"] = scalar(m, "hostname", w)
            maps.append(sm)
        if maps:
            entry["staticmap"] = maps
        out[name] = entry
    return out


def toml_staticroutes(value: object, gateways: object) -> dict[str, Any]:
    names: dict[str, str] = {}
    for i, g in enumerate(
        items(struct(gateways or {}, "gateways").get("gateway_item"), "gateways.gateway_item")
    ):
        names[scalar(g, "name", f"gateways.gateway_item[{i}]")] = scalar(
            g, "gateway", f"gateways.gateway_item[{i}]"
        )
    routes = []
    for i, r in enumerate(items(struct(value, "staticroutes").get("route"), "staticroutes.route")):
        where = f"staticroutes.route[{i}]"
        gw = scalar(r, "gateway", where)
        if not gw[:1].isdigit():
            if gw not in names:
                raise ConfigError(f"{where}.gateway", f"unknown gateway {gw!r}")
            gw = names[gw]
        route = {"network": scalar(r, "network", where), "gateway": gw}
        route["descr"] = scalar(r, "descr", where)
        routes.append({**route, "disabled": flag(r, "disabled")})
    return {"route": routes}
