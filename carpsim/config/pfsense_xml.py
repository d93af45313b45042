"""pfSense ``config.xml`` -> carpsim node config (and the lab topology a cluster of them forms).

The XML is read with defusedxml (no DTD, no entities) into pfSense's own array shape (list
elements such as ``rule``/``vip``/``alias`` are always lists, flags are empty strings), then the
same converters the XML-RPC sync uses turn the sections into the TOML-shaped mapping the loader
validates. Nothing is dropped silently: every section, item or field carpsim does not model is
listed in `Imported.report`.

Interface names stay pfSense's (``wan``, ``lan``, ``opt1``...), so rules and the sync keep
referring to the same names; each gets a Linux device named after its description (``dmz``,
``sync``) when that is a usable interface name, which is also the lab segment's name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from carpsim.config import loader
from carpsim.config.model import SYNC_TOGGLES, Config
from carpsim.configsync import pfsense
from carpsim.errors import ConfigError

MAX_XML = 32 * 1024 * 1024
LIST_ELEMENTS = frozenset(
    {
        "rule",
        "vip",
        "alias",
        "user",
        "group",
        "authserver",
        "ca",
        "cert",
        "crl",
        "route",
        "gateway_item",
        "dnsserver",
        "staticmap",
        "pool",
        "schedule",
        "phase1",
        "phase2",
        "openvpn-server",
        "openvpn-client",
        "item",
        "priv",
        "member",
    }
)
IMPORTED = (
    "version",
    "system",
    "interfaces",
    "gateways",
    "staticroutes",
    "dhcpd",
    "filter",
    "nat",
    "aliases",
    "virtualip",
    "hasync",
)
_DEVICE = re.compile(r"^[a-z][a-z0-9]{0,14}$")
_PROTOCOLS = {
    "tcp",
    "udp",
    "tcp/udp",
    "icmp",
    "esp",
    "ah",
    "gre",
    "igmp",
    "ospf",
    "sctp",
    "pim",
    "carp",
    "pfsync",
}


@dataclass
class Imported:
    """One node's import: the TOML-shaped config, the validated `Config`, and what was left out."""

    data: dict[str, Any]
    config: Config
    report: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)
    """pfSense interface name -> carpsim device (= lab segment) name."""


def _to_tree(elem: Element) -> Any:
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        value = _to_tree(child)
        if child.tag in LIST_ELEMENTS:
            out.setdefault(child.tag, []).append(value)
        elif child.tag in out:
            prev = out[child.tag]
            out[child.tag] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[child.tag] = value
    return out


def read_xml(data: bytes) -> dict[str, Any]:
    """config.xml bytes -> pfSense's array shape; only `ConfigError` on bad input."""
    if len(data) > MAX_XML:
        raise ConfigError("config.xml", f"larger than {MAX_XML} bytes")
    try:
        root = ElementTree.fromstring(data, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise ConfigError("config.xml", f"not a safe, well-formed XML document: {exc}") from exc
    if root.tag != "pfsense":
        raise ConfigError("config.xml", f"root element is <{root.tag}>, not <pfsense>")
    tree = _to_tree(root)
    return tree if isinstance(tree, dict) else {}


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value in (None, "") else [value]


def _devices(interfaces: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, body in interfaces.items():
        descr = str(_dict(body).get("descr", "")).strip().lower()
        wanted = descr if _DEVICE.match(descr) and descr not in out.values() else name
        out[name] = wanted if wanted not in out.values() else name
    return out


def _interfaces(pf: dict[str, Any], report: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    gateways = {
        str(g.get("name", "")): str(g.get("gateway", ""))
        for g in _list(_dict(pf.get("gateways")).get("gateway_item"))
        if isinstance(g, dict)
    }
    raw = _dict(pf.get("interfaces"))
    devices = _devices(raw)
    out: dict[str, Any] = {}
    for name, body in raw.items():
        b = _dict(body)
        where = f"interfaces/{name}"
        if "enable" not in b:
            report.append(f"{where}: disabled in pfSense, not imported")
            continue
        ip, bits = str(b.get("ipaddr", "")), str(b.get("subnet", ""))
        try:
            address = IPv4Interface(f"{ip}/{bits}")
        except ValueError:
            report.append(f"{where}: ipaddr {ip!r}/{bits!r} is not a static IPv4 address, skipped")
            continue
        iface: dict[str, Any] = {
            "device": devices[name],
            "address": str(address),
            "descr": str(b.get("descr", "")),
        }
        gw = str(b.get("gateway", ""))
        if gw:
            addr = gateways.get(gw, gw)
            try:
                iface["gateway"] = str(IPv4Address(addr))
            except ValueError:
                report.append(f"{where}/gateway: {gw!r} resolves to no IPv4 gateway, skipped")
        if b.get("ipaddrv6"):
            report.append(f"{where}/ipaddrv6: IPv6 is not modelled, ignored")
        out[name] = iface
    return out, devices


def _filter_rules(pf: dict[str, Any], report: list[str]) -> dict[str, Any]:
    f = dict(_dict(pf.get("filter")))
    kept = []
    for i, rule in enumerate(_list(f.get("rule"))):
        r = _dict(rule)
        where = f"filter/rule[{i}] ({r.get('descr', '')!s})"
        skip = None
        if "floating" in r:
            skip = "floating rules are not modelled"
        elif str(r.get("ipprotocol", "inet")) != "inet":
            skip = f"ipprotocol {r.get('ipprotocol')} (IPv4 only)"
        elif str(r.get("protocol", "any") or "any") not in _PROTOCOLS | {"any"}:
            skip = f"protocol {r.get('protocol')} is not modelled"
        if skip:
            report.append(f"{where}: skipped, {skip}")
            continue
        for key in ("gateway", "sched", "tag", "tagged", "max", "os"):
            if r.get(key):
                report.append(f"{where}: field {key} ignored (not modelled)")
        if str(r.get("statetype", "keep state")) not in ("keep state", ""):
            report.append(f"{where}: statetype {r.get('statetype')!r} ignored (keep state)")
        kept.append(r)
    f["rule"] = kept
    return f


def _vips(pf: dict[str, Any], report: list[str]) -> dict[str, Any]:
    kept = []
    for i, vip in enumerate(_list(_dict(pf.get("virtualip")).get("vip"))):
        v = _dict(vip)
        if str(v.get("mode", "")) != "carp":
            report.append(f"virtualip/vip[{i}]: mode {v.get('mode')!r} skipped (CARP only)")
            continue
        kept.append(v)
    return {"vip": kept}


def _hasync(pf: dict[str, Any], report: list[str]) -> dict[str, Any]:
    h = _dict(pf.get("hasync"))
    out: dict[str, Any] = {}
    if "pfsyncenabled" in h:
        out["pfsyncenabled"] = True
    for key in ("pfsyncinterface", "pfsyncpeerip", "synchronizetoip", "username", "password"):
        if h.get(key):
            out[key] = str(h[key])
    handled = {
        "pfsyncenabled",
        "pfsyncinterface",
        "pfsyncpeerip",
        "synchronizetoip",
        "username",
        "password",
        "pfhostid",
    }
    for key, value in h.items():
        if key in handled:
            continue
        if key in SYNC_TOGGLES:
            out[key] = True
        elif key.startswith("synchronize") or key == "adminsync":
            report.append(f"hasync/{key}: not modelled, the section it syncs is not imported")
        elif value:
            report.append(f"hasync/{key}: ignored")
    return out


def _report_nat(pf: dict[str, Any], report: list[str]) -> None:
    nat = _dict(pf.get("nat"))
    for key, value in nat.items():
        if key != "outbound" and value:
            report.append(f"nat/{key}: not imported (carpsim models outbound NAT only)")


def import_xml(data: bytes) -> Imported:
    """One config.xml -> its node config; `ConfigError` names the pfSense path that failed."""
    pf = read_xml(data)
    report: list[str] = []
    for key in pf:
        if key not in IMPORTED:
            report.append(f"{key}: section not imported (carpsim does not model it)")
    system = _dict(pf.get("system"))
    hostname = str(system.get("hostname", "") or "node")
    interfaces, devices = _interfaces(pf, report)
    names = set(interfaces)
    for key in ("user", "group", "authserver"):
        if system.get(key):
            report.append(f"system/{key}: not imported (carpsim has no user database)")
    webgui = _dict(system.get("webgui"))
    if webgui.get("protocol", "https") != "https":
        report.append("system/webgui/protocol: http; carpsim's XML-RPC sync is always HTTPS")
    port = str(webgui.get("port", "") or "443")
    _report_nat(pf, report)
    toml: dict[str, Any] = {
        "node": {"name": hostname},
        "carp": {"preempt": True},
        "system": {
            "hostname": hostname,
            "version": str(pf.get("version", "") or "23.3"),
            "webgui_port": int(port) if port.isdigit() else 443,
        },
        "interfaces": interfaces,
    }
    try:
        toml["virtualip"] = pfsense.toml_virtualip(_vips(pf, report), names)
        toml["filter"] = pfsense.toml_filter(_filter_rules(pf, report), names)
        toml["nat"] = pfsense.toml_nat(pf.get("nat") or {}, names)
        toml["aliases"] = pfsense.toml_aliases(pf.get("aliases") or {}, names)
        dhcpd = pfsense.toml_dhcpd(pf.get("dhcpd") or {}, names)
        for ifname, body in list(dhcpd.items()):
            if not body["range"]["from"] or ifname not in names:
                report.append(f"dhcpd/{ifname}: no range or no such interface, not imported")
                del dhcpd[ifname]
        toml["dhcpd"] = dhcpd
        toml["staticroutes"] = pfsense.toml_staticroutes(
            pf.get("staticroutes") or {}, pf.get("gateways")
        )
        toml["hasync"] = _hasync(pf, report)
        config = loader.parse(toml)
    except ConfigError as exc:
        raise ConfigError(f"config.xml {exc.field}", exc.message) from exc
    return Imported(toml, config, report, {n: devices[n] for n in interfaces})


def topology_data(nodes: Sequence[Imported], name: str = "imported") -> dict[str, Any]:
    """A lab topology (``carpsim lab up`` input) for the imported cluster."""
    first = nodes[0].config
    segs: dict[str, Any] = {}
    for iface in first.interfaces:
        segs[iface.device] = {"subnet": str(iface.network)}
    wan = next((i for i in first.interfaces if i.gateway is not None), None)
    sync = first.interface(first.hasync.pfsyncinterface or "")
    nat_sources = {str(r.source.address) for r in first.nat.rules if r.source.address}
    inside = [
        i.device
        for i in first.interfaces
        if i is not wan
        and i is not sync
        and (not nat_sources or str(i.network) in nat_sources or f"{i.name}" in nat_sources)
    ]
    vip = first.virtualip[0] if first.virtualip else None
    data: dict[str, Any] = {
        "lab": {"name": name, "description": "imported from pfSense config.xml"},
        "segments": segs,
        "carp": {
            "password": vip.password if vip else "carpsim",
            "advbase": vip.advbase if vip else 1,
            "preempt": True,
            "master_down_formula": "freebsd",
        },
        "firewall": {"wan": wan.device if wan else first.interfaces[0].device, "inside": inside},
        "vip": [
            {
                "segment": _device(first, v.interface),
                "vhid": v.vhid,
                "address": str(v.subnet.ip),
            }
            for v in first.virtualip
        ],
        "node": [],
        "host": [],
    }
    if sync is not None:
        data["firewall"]["sync"] = sync.device
    for imp in nodes:
        c = imp.config
        entry: dict[str, Any] = {
            "name": re.sub(r"[^a-z0-9]", "", c.node.name.lower()) or "node",
            "advskew": min((v.advskew for v in c.virtualip), default=0),
            "addresses": {i.device: str(i.address.ip) for i in c.interfaces},
        }
        if wan is not None and (gw := c.interface(wan.name)) is not None and gw.gateway:
            entry["gateway"] = str(gw.gateway)
        data["node"].append(entry)
    if wan is not None and wan.gateway is not None:
        segs["internet"] = {"subnet": "203.0.113.0/24"}
        data["host"] += [
            {
                "name": "router",
                "role": "upstream router",
                "forwarding": True,
                "addresses": {wan.device: str(wan.gateway), "internet": "203.0.113.1"},
            },
            {
                "name": "server",
                "role": "internet server",
                "gateway": "203.0.113.1",
                "addresses": {"internet": "203.0.113.10"},
            },
        ]
    used = {IPv4Address(a) for n in data["node"] for a in n["addresses"].values()}
    used |= {IPv4Address(v["address"]) for v in data["vip"]}
    for seg in inside:
        iface = next(i for i in first.interfaces if i.device == seg)
        vips = list(first.vips_on(iface.name))
        host = next(h for h in iface.network.hosts() if h not in used and int(h) & 0xFF >= 10)
        client: dict[str, Any] = {
            "name": f"client{seg}"[:12],
            "role": "client",
            "addresses": {seg: str(host)},
        }
        if vips:
            client["gateway"] = str(vips[0].subnet.ip)
        data["host"].append(client)
    return data


def _device(config: Config, interface: str) -> str:
    iface = config.interface(interface)
    assert iface is not None  # validated: every VIP's interface exists
    return iface.device
