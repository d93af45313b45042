"""Lab topologies: pure dataclasses and a validating TOML loader.

A topology names L2 segments (each becomes a bridge in the lab's switch namespace), CARP nodes
(firewalls that run ``carpsim node``), plain hosts (clients, servers, the upstream router) and
the VIPs. Every validation failure raises `ConfigError` naming the field, e.g.
``node[1].addresses.lan``, so ``carpsim lab up`` prints one line and builds nothing.

Interface names inside a namespace are the segment names (``wan``, ``lan`` ...); the switch side
of each link is ``<host>-<segment>``. Both live only inside the lab's own namespaces, so they need
no lab prefix, but they must fit the kernel's 15-character limit.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from carpsim.errors import ConfigError

IFNAMSIZ = 15
MAX_PASSWORD_LEN = 19
_NAME = re.compile(r"^[a-z][a-z0-9]*$")
_LAB_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_FORMULAS = ("freebsd", "openbsd", "ucarp")


@dataclass(frozen=True)
class Segment:
    name: str
    subnet: IPv4Network


@dataclass(frozen=True)
class Vip:
    segment: str
    vhid: int
    address: IPv4Address


@dataclass(frozen=True)
class Host:
    """A namespace attached to segments: a CARP node when `advskew` is set, else a plain host."""

    name: str
    addresses: dict[str, IPv4Address]
    """segment name -> this host's address on it (the interface is named after the segment)."""
    gateway: IPv4Address | None = None
    forwarding: bool = False
    advskew: int | None = None
    role: str = "host"

    @property
    def is_node(self) -> bool:
        return self.advskew is not None

    def interface(self, segment: str) -> str:
        """The interface name inside this host's namespace."""
        return segment

    def switch_port(self, segment: str) -> str:
        """The veth end inside the switch namespace, enslaved to the segment's bridge."""
        return f"{self.name}-{segment}"


@dataclass(frozen=True)
class Carp:
    password: str
    advbase: int = 1
    preempt: bool = True
    master_down_formula: str = "freebsd"


@dataclass(frozen=True)
class Firewall:
    wan: str
    """The outside segment: its VIP is the outbound NAT address."""
    inside: tuple[str, ...]
    """Segments translated to the WAN VIP (one explicit rule each)."""
    sync: str | None
    """The pfsync-style link: permissive, never NATed."""
    nat_target: str = "vip"
    """"vip" (the reference) or "interface": NAT to each node's own WAN address, the seed's
    warned-of mistake that breaks every stream at failover (the lab shows it, lint flags it)."""


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    segments: dict[str, Segment]
    carp: Carp
    firewall: Firewall
    vips: tuple[Vip, ...]
    hosts: tuple[Host, ...]

    @property
    def nodes(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_node)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def vips_on(self, segment: str) -> tuple[Vip, ...]:
        return tuple(v for v in self.vips if v.segment == segment)

    def wan_vip(self) -> Vip:
        return self.vips_on(self.firewall.wan)[0]

    def vip_interface(self, vip: Vip) -> IPv4Interface:
        return IPv4Interface(f"{vip.address}/{self.segments[vip.segment].subnet.prefixlen}")


# --- loading ------------------------------------------------------------------------------


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}", "must be a table")
    return value


def _str(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}{key}", "required string" if value is None else "must be text")
    return value


def _int(
    data: dict[str, Any], key: str, where: str, lo: int, hi: int, *, default: int | None
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}", "required integer" if value is None else "not an int")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}{key}", f"must be {lo}..{hi}, got {value}")
    return value


def _name(value: str, field: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(field, f"{value!r}: use lowercase letters and digits, starting a-z")
    return value


def _address(value: object, field: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError as exc:
        raise ConfigError(field, f"not an IPv4 address: {value!r}") from exc


def _in_segment(addr: IPv4Address, seg: Segment, field: str) -> None:
    net = seg.subnet
    if addr not in net:
        raise ConfigError(field, f"{addr} is outside segment {seg.name} ({net})")
    if net.prefixlen < 31 and addr in (net.network_address, net.broadcast_address):
        raise ConfigError(field, f"{addr} is the network or broadcast address of {net}")


def parse(data: dict[str, Any]) -> Topology:  # noqa: C901 - a flat schema validator: one check per field, each naming it
    """Build and validate a topology from parsed TOML."""
    lab = _table(data, "lab", "")
    name = _str(lab, "name", "lab.")
    if not _LAB_NAME.match(name) or len(name) > 32:
        raise ConfigError("lab.name", f"{name!r}: lowercase letters, digits and '-', at most 32")
    description = _str(lab, "description", "lab.", "")

    segments: dict[str, Segment] = {}
    seg_table = _table(data, "segments", "")
    if not seg_table:
        raise ConfigError("segments", "at least one segment is required")
    for seg_name, body in seg_table.items():
        field = f"segments.{seg_name}"
        _name(seg_name, field)
        if len(seg_name) > IFNAMSIZ:
            raise ConfigError(field, f"name longer than {IFNAMSIZ} characters")
        if not isinstance(body, dict):
            raise ConfigError(field, "must be a table with a subnet")
        try:
            subnet = IPv4Network(_str(body, "subnet", field + "."), strict=True)
        except ValueError as exc:
            raise ConfigError(f"{field}.subnet", str(exc)) from exc
        for other in segments.values():
            if subnet.overlaps(other.subnet):
                raise ConfigError(f"{field}.subnet", f"overlaps segment {other.name}")
        segments[seg_name] = Segment(seg_name, subnet)

    carp_t = _table(data, "carp", "")
    password = _str(carp_t, "password", "carp.")
    if len(password.encode()) > MAX_PASSWORD_LEN:
        raise ConfigError("carp.password", f"at most {MAX_PASSWORD_LEN} bytes")
    formula = _str(carp_t, "master_down_formula", "carp.", "freebsd")
    if formula not in _FORMULAS:
        raise ConfigError("carp.master_down_formula", f"one of {', '.join(_FORMULAS)}")
    preempt = carp_t.get("preempt", True)
    if not isinstance(preempt, bool):
        raise ConfigError("carp.preempt", "must be true or false")
    carp = Carp(password, _int(carp_t, "advbase", "carp.", 1, 255, default=1), preempt, formula)

    hosts: list[Host] = []
    seen: set[str] = set()
    for kind in ("node", "host"):
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise ConfigError(kind, "must be an array of tables ([[" + kind + "]])")
        for i, body in enumerate(entries):
            hosts.append(_parse_host(kind, i, body, segments, seen))
    if not any(h.is_node for h in hosts):
        raise ConfigError("node", "at least one [[node]] is required")

    fw_t = _table(data, "firewall", "")
    wan = _str(fw_t, "wan", "firewall.")
    inside_raw = fw_t.get("inside", [])
    if not isinstance(inside_raw, list) or not all(isinstance(s, str) for s in inside_raw):
        raise ConfigError("firewall.inside", "must be a list of segment names")
    sync_raw = fw_t.get("sync")
    if sync_raw is not None and not isinstance(sync_raw, str):
        raise ConfigError("firewall.sync", "must be a segment name")
    for field, seg_name in [("firewall.wan", wan), ("firewall.sync", sync_raw)] + [
        (f"firewall.inside[{i}]", s) for i, s in enumerate(inside_raw)
    ]:
        if seg_name is not None and seg_name not in segments:
            raise ConfigError(field, f"unknown segment {seg_name!r}")
    nat_target = fw_t.get("nat_target", "vip")
    if nat_target not in ("vip", "interface"):
        raise ConfigError(
            "firewall.nat_target", f"must be 'vip' or 'interface', got {nat_target!r}"
        )
    firewall = Firewall(wan, tuple(inside_raw), sync_raw, nat_target)

    vips: list[Vip] = []
    raw_vips = data.get("vip", [])
    if not isinstance(raw_vips, list):
        raise ConfigError("vip", "must be an array of tables ([[vip]])")
    nodes = [h for h in hosts if h.is_node]
    for i, body in enumerate(raw_vips):
        where = f"vip[{i}]."
        if not isinstance(body, dict):
            raise ConfigError(f"vip[{i}]", "must be a table")
        seg_name = _str(body, "segment", where)
        if seg_name not in segments:
            raise ConfigError(where + "segment", f"unknown segment {seg_name!r}")
        vhid = _int(body, "vhid", where, 1, 255, default=None)
        if any(v.vhid == vhid and v.segment == seg_name for v in vips):
            raise ConfigError(where + "vhid", f"VHID {vhid} used twice on segment {seg_name}")
        addr = _address(body.get("address"), where + "address")
        _in_segment(addr, segments[seg_name], where + "address")
        for node in nodes:
            if seg_name not in node.addresses:
                raise ConfigError(where + "segment", f"node {node.name} is not on {seg_name}")
        vips.append(Vip(seg_name, vhid, addr))
    if not any(v.segment == wan for v in vips):
        raise ConfigError("firewall.wan", f"segment {wan} has no VIP to translate to")

    _check_unique_addresses(hosts, vips)
    return Topology(name, description, segments, carp, firewall, tuple(vips), tuple(hosts))


def _parse_host(
    kind: str, index: int, body: object, segments: dict[str, Segment], seen: set[str]
) -> Host:
    where = f"{kind}[{index}]."
    if not isinstance(body, dict):
        raise ConfigError(f"{kind}[{index}]", "must be a table")
    name = _name(_str(body, "name", where), where + "name")
    if name in seen:
        raise ConfigError(where + "name", f"{name!r} is used twice")
    if name == "sw":
        raise ConfigError(where + "name", "'sw' is reserved for the switch namespace")
    seen.add(name)
    raw = _table(body, "addresses", where)
    if not raw:
        raise ConfigError(where + "addresses", "a host needs at least one segment")
    addresses: dict[str, IPv4Address] = {}
    for seg_name, value in raw.items():
        field = f"{where}addresses.{seg_name}"
        if seg_name not in segments:
            raise ConfigError(field, f"unknown segment {seg_name!r}")
        if len(f"{name}-{seg_name}") > IFNAMSIZ:
            raise ConfigError(field, f"switch port {name}-{seg_name} exceeds {IFNAMSIZ} chars")
        addr = _address(value, field)
        _in_segment(addr, segments[seg_name], field)
        addresses[seg_name] = addr
    gateway = None
    if "gateway" in body:
        gateway = _address(body["gateway"], where + "gateway")
        if not any(gateway in segments[s].subnet for s in addresses):
            raise ConfigError(where + "gateway", f"{gateway} is on none of {name}'s segments")
    forwarding = body.get("forwarding", kind == "node")
    if not isinstance(forwarding, bool):
        raise ConfigError(where + "forwarding", "must be true or false")
    advskew = _int(body, "advskew", where, 0, 254, default=0) if kind == "node" else None
    role = _str(body, "role", where, "firewall" if kind == "node" else "host")
    return Host(name, addresses, gateway, forwarding, advskew, role)


def _field_of(hosts: list[Host], host: Host) -> str:
    """``node[i]`` / ``host[i]``: the position within its own array, as the TOML file has it."""
    same_kind = [h for h in hosts if h.is_node == host.is_node]
    return f"{'node' if host.is_node else 'host'}[{same_kind.index(host)}]"


def _check_unique_addresses(hosts: list[Host], vips: list[Vip]) -> None:
    owners: dict[IPv4Address, str] = {}
    for h in hosts:
        for seg_name, addr in h.addresses.items():
            if addr in owners:
                raise ConfigError(
                    f"{_field_of(hosts, h)}.addresses.{seg_name}",
                    f"{addr} is already used by {owners[addr]}",
                )
            owners[addr] = h.name
    for i, v in enumerate(vips):
        if v.address in owners:
            raise ConfigError(
                f"vip[{i}].address", f"{v.address} is already used by {owners[v.address]}"
            )
        owners[v.address] = f"the VIP of vhid {v.vhid}"


def loads(text: str, source: str = "<topology>") -> Topology:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        # tomllib recurses per nesting level: a hostile file must still be a one-line error.
        raise ConfigError(source, "nested too deeply to be a topology") from exc
    return parse(data)


def builtin_names() -> list[str]:
    folder = resources.files("carpsim.lab") / "topologies"
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".toml") for n in names if n.endswith(".toml"))


def resolve(spec: str | None) -> tuple[str, str]:
    """A path or a built-in name (``reference``, ``three-node``) -> (source label, TOML text)."""
    spec = spec or "reference"
    path = Path(spec)
    if path.is_file():
        return str(path), path.read_text()
    folder = resources.files("carpsim.lab") / "topologies"
    builtin = folder / f"{spec.removesuffix('.toml')}.toml"
    if builtin.is_file():
        return spec, builtin.read_text()
    raise ConfigError(
        "topology",
        f"{spec!r} is neither a file nor a built-in topology ({', '.join(builtin_names())})",
    )


def load(spec: str | None = None) -> Topology:
    source, text = resolve(spec)
    return loads(text, source)
