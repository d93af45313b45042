"""The node configuration file (TOML) read by ``carpsim node --config node.toml``.

Format (the lab generates exactly this; see docs/node-config.md)::

    [node]
    name = "node1"                                  # required
    control = "/run/carpsim/x-node1.sock"           # control socket path (default below)
    events_json = "/path/events.jsonl"              # optional: one JSON line per transition
    metrics_port = 0                                # 0 = no Prometheus endpoint
    upscript = "/path/up.sh"                        # optional, called `up.sh <ifname> <vip>`
    downscript = "/path/down.sh"                    # optional
    neutral = false                                 # true: no downscript on the first INIT->BACKUP
    shutdown_scripts = false                        # true: run the downscript on a clean stop

    [carp]                                          # defaults for every [[vhid]]
    password = "K33p_It_S3cr3t!"                    # <= 19 bytes
    advbase = 1
    advskew = 0
    preempt = true
    master_down_formula = "freebsd"                 # or "openbsd"
    real_mac = false                                # true: VIP on the parent, real MAC (ucarp)
    deadratio = 3
    demote = 0                                      # initial OpenBSD demote counter

    [[vhid]]
    vhid = 1
    interface = "lan"                               # the parent interface
    srcip = "192.168.110.251"                       # advert source (an address of the parent)
    vips = ["192.168.110.254/24"]
    # optional overrides: advbase, advskew, password, preempt, deadratio, real_mac, peer

    [statesync]                                     # pfsync-style state replication
    interface = "sync"                              # the SYNC link (required when enabled)
    peer = "172.16.1.6"                             # unicast sync peer (default: 224.0.0.240)
    enabled = true                                  # default true when the section exists
    # optional: group, creatorid, demote, mtu, reliable, flush_interval, bulk_*, refresh_interval
    # (validated into `NodeConfig.sync`; the raw table stays in `NodeConfig.statesync`)

Every error raises `ConfigError(field, message)` with a dotted field such as ``vhid[1].srcip``.
Loading only reads and validates: it never touches the host.
"""

from __future__ import annotations

import math
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from carpsim.config.limits import SYNC_RANGES, not_a_host, out_of_range
from carpsim.errors import ConfigError
from carpsim.protocol.config import CarpConfig, parse_vip
from carpsim.protocol.constants import CARP_GROUP_V4, MasterDownFormula
from carpsim.statesync.config import ReplicatorConfig
from carpsim.web.config import WebConfig
from carpsim.web.config import parse as parse_web

DEFAULT_CONTROL = "/run/carpsim/carpsim.sock"
MAX_IFNAME = 15


@dataclass(frozen=True)
class VhidSpec:
    """One VHID as the edge sees it: the pure config plus where it lives."""

    carp: CarpConfig
    interface: str
    real_mac: bool = False
    peer: IPv4Address | None = None


@dataclass(frozen=True)
class NodeConfig:
    name: str
    vhids: tuple[VhidSpec, ...]
    control: str = DEFAULT_CONTROL
    events_json: str | None = None
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    """Where /metrics listens; loopback by default (a scraper in the namespace, or a proxy)."""
    upscript: str | None = None
    downscript: str | None = None
    neutral: bool = False
    shutdown_scripts: bool = False
    statesync: Mapping[str, Any] = field(default_factory=dict)
    sync: StateSyncConfig | None = None
    """The validated [statesync] section (None: no section, or enabled = false)."""
    web: WebConfig | None = None
    """[web]: serve this node's status pages (None: no section; carpsim/web/config.py)."""


@dataclass(frozen=True)
class StateSyncConfig:
    """[statesync]: where the replicator talks and how it is tuned (docs/node-config.md)."""

    interface: str
    peer: IPv4Address | None
    """Unicast sync peer; None = the pfsync multicast group 224.0.0.240."""
    replicator: ReplicatorConfig
    demote: int = 32
    """CARP demotion while not ready (OpenBSD pfsync: +32 during the bulk phase)."""


_SYNC_FLOATS = (
    "flush_interval", "bulk_tick", "bulk_retry_interval", "bulk_timeout", "refresh_interval",
    "ack_delay", "resend_timeout",
)  # fmt: skip
_SYNC_INTS = ("bulk_frames_per_tick", "bulk_max_tries", "mtu", "creatorid", "sweep_per_interval")
_SYNC_KEYS = {"interface", "peer", "enabled", "group", "demote", "reliable", "key",
              *_SYNC_FLOATS, *_SYNC_INTS}  # fmt: skip
MAX_SYNC_KEY = 1024


def default_creatorid(name: str) -> int:
    """A stable non-zero pfsync host id per node name (pf picks a random one at boot)."""
    return zlib.crc32(name.encode()) or 1


def parse_statesync(table: Mapping[str, Any], node_name: str) -> StateSyncConfig | None:  # noqa: C901 - a flat schema validator: one check per field, each naming it
    """Validate [statesync]; None when it is disabled. Errors name ``statesync.<field>``."""
    where = "statesync"
    _unknown(table, _SYNC_KEYS, where)
    if not _typed(table, "enabled", bool, where, True):
        return None
    interface = _typed(table, "interface", str, where, "")
    if not interface:
        raise ConfigError("statesync.interface", "required (the SYNC link's interface)")
    if len(interface) > MAX_IFNAME or "/" in interface:
        raise ConfigError("statesync.interface", f"not an interface name: {interface!r}")
    peer_text = _typed(table, "peer", str, where, None)
    group = _typed(table, "group", bool, where, False)
    peer: IPv4Address | None = None
    if peer_text is not None:
        if group:
            raise ConfigError("statesync.group", "true conflicts with a unicast statesync.peer")
        peer = _ipv4(peer_text, "statesync.peer")
        if peer.is_multicast or peer.is_unspecified or peer == IPv4Address("255.255.255.255"):
            raise ConfigError("statesync.peer", f"must be a unicast address, got {peer}")
    demote = _typed(table, "demote", int, where, 32)
    if not 0 <= demote <= 255:
        raise ConfigError("statesync.demote", f"must be 0..255, got {demote}")
    kwargs: dict[str, Any] = {"creatorid": default_creatorid(node_name)}
    for key in _SYNC_FLOATS:
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"statesync.{key}", f"must be a number, got {value!r}")
            if not math.isfinite(value):
                # TOML allows nan/inf; they would pass the replicator's "> 0" checks and
                # crash the daemon later when a timer is armed.
                raise ConfigError(f"statesync.{key}", f"must be finite, got {value!r}")
            kwargs[key] = float(value)
    for key in _SYNC_INTS:
        if key in table:
            kwargs[key] = _typed(table, key, int, where, None)
    for key in SYNC_RANGES:
        problem = out_of_range(key, kwargs[key]) if key in kwargs and key in table else None
        if problem:
            raise ConfigError(f"statesync.{key}", problem)
    if "reliable" in table:
        kwargs["reliable"] = _typed(table, "reliable", bool, where, True)
    if "key" in table:
        # The shared sync key (docs/security.md): never echoed, not even in this error.
        secret = _typed(table, "key", str, where, "")
        if not 16 <= len(secret) <= MAX_SYNC_KEY:
            raise ConfigError("statesync.key", f"must be 16..{MAX_SYNC_KEY} characters")
        kwargs["key"] = secret.encode()
    try:
        replicator = ReplicatorConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"statesync.{exc.field}", exc.message) from exc
    return StateSyncConfig(interface=interface, peer=peer, replicator=replicator, demote=demote)


_NODE_KEYS = {
    "name",
    "control",
    "events_json",
    "metrics_port",
    "metrics_address",
    "upscript",
    "downscript",
    "neutral",
    "shutdown_scripts",
}
_CARP_KEYS = {
    "strict",
    "password",
    "advbase",
    "advskew",
    "preempt",
    "master_down_formula",
    "real_mac",
    "deadratio",
    "demote",
}
_VHID_KEYS = {"vhid", "interface", "srcip", "vips", "peer"} | _CARP_KEYS


def _typed(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    # bool is an int subclass: reject true/false where a number is expected, and vice versa.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}.{key}", f"must be an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}", f"must be a {kind.__name__}, got {value!r}")
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", "unknown key")


def _formula(value: str, where: str) -> MasterDownFormula:
    try:
        return MasterDownFormula(value)
    except ValueError as exc:
        raise ConfigError(where, f"must be 'freebsd' or 'openbsd', got {value!r}") from exc


def _ipv4(value: Any, where: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError as exc:
        raise ConfigError(where, f"not an IPv4 address: {value!r}") from exc


def build_vhid(
    *,
    vhid: int,
    interface: str,
    srcip: str,
    vips: list[str],
    password: str,
    advbase: int = 1,
    advskew: int = 0,
    preempt: bool = False,
    deadratio: int = 3,
    master_down_formula: str = "freebsd",
    demote: int = 0,
    real_mac: bool = False,
    peer: str | None = None,
    strict: bool = False,
    where: str = "vhid",
) -> VhidSpec:
    """Validate one VHID (shared by the TOML loader and the ``carpsim carp`` flags)."""
    if not interface or len(interface) > MAX_IFNAME or "/" in interface:
        raise ConfigError(f"{where}.interface", f"not an interface name: {interface!r}")
    if not vips:
        raise ConfigError(f"{where}.vips", "at least one virtual IP is required")
    parsed = tuple(parse_vip(v, f"{where}.vips") for v in vips)
    for vip in parsed:
        if not isinstance(vip, IPv4Interface):
            raise ConfigError(f"{where}.vips", f"only IPv4 VIPs are supported: {vip}")
    for vip in parsed:
        problem = not_a_host(vip.ip) or (
            "is a whole-internet prefix" if vip.network.prefixlen == 0 else None
        )
        if problem:
            raise ConfigError(f"{where}.vips", f"{vip} {problem}")
    src = _ipv4(srcip, f"{where}.srcip")
    problem = not_a_host(src)
    if problem:
        raise ConfigError(f"{where}.srcip", f"{src} {problem}")
    peer_ip = _ipv4(peer, f"{where}.peer") if peer is not None else None
    problem = not_a_host(peer_ip) if peer_ip is not None else None
    if problem:
        raise ConfigError(f"{where}.peer", f"{peer_ip} {problem} (must be a unicast address)")
    if not password:
        raise ConfigError(f"{where}.password", "a password is required (ucarp refuses none)")
    try:
        carp = CarpConfig(
            vhid=vhid,
            vips=parsed,
            srcip=src,
            password=password.encode(),
            advbase=advbase,
            advskew=advskew,
            preempt=preempt,
            deadratio=deadratio,
            master_down_formula=_formula(master_down_formula, f"{where}.master_down_formula"),
            demote=demote,
            dst=peer_ip if peer_ip is not None else CARP_GROUP_V4,
            strict=strict,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.field}", exc.message) from exc
    return VhidSpec(carp=carp, interface=interface, real_mac=real_mac, peer=peer_ip)


def check_unique(vhids: tuple[VhidSpec, ...]) -> None:
    """One VHID number once per node, and one VIP address in one VHID only."""
    seen: set[int] = set()
    owner: dict[IPv4Address | IPv6Address, int] = {}
    for spec in vhids:
        vhid = spec.carp.vhid
        if vhid in seen:
            raise ConfigError(f"vhid[{vhid}].vhid", "configured twice")
        seen.add(vhid)
        for vip in spec.carp.vips:
            if vip.ip in owner:
                raise ConfigError(
                    f"vhid[{vhid}].vips", f"{vip.ip} is already a VIP of vhid {owner[vip.ip]}"
                )
            owner[vip.ip] = vhid


def _metrics_address(node: Mapping[str, Any]) -> str:
    text = _typed(node, "metrics_address", str, "node", "127.0.0.1")
    try:
        ip_address(text)
    except ValueError as exc:
        raise ConfigError("node.metrics_address", f"not an IP address: {text!r}") from exc
    return str(text)


def parse(data: Mapping[str, Any]) -> NodeConfig:  # noqa: C901 - a flat schema validator: one check per field, each naming it
    _unknown(data, {"node", "carp", "vhid", "statesync", "web"}, "config")
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError("node", "a [node] table is required")
    _unknown(node, _NODE_KEYS, "node")
    name = _typed(node, "name", str, "node", None)
    if not name:
        raise ConfigError("node.name", "required")
    metrics_port = _typed(node, "metrics_port", int, "node", 0)
    if not 0 <= metrics_port <= 65535:
        raise ConfigError("node.metrics_port", f"must be 0..65535, got {metrics_port}")

    carp = data.get("carp", {})
    if not isinstance(carp, dict):
        raise ConfigError("carp", "must be a table")
    _unknown(carp, _CARP_KEYS, "carp")
    tables = data.get("vhid")
    if not isinstance(tables, list) or not tables:
        raise ConfigError("vhid", "at least one [[vhid]] table is required")

    specs = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"vhid[{i}]", "must be a table")
        vhid = _typed(table, "vhid", int, f"vhid[{i}]", None)
        if vhid is None:
            raise ConfigError(f"vhid[{i}].vhid", "required")
        where = f"vhid[{vhid}]"
        _unknown(table, _VHID_KEYS, where)

        def pick(
            key: str, kind: type, default: Any, table: dict[str, Any] = table, where: str = where
        ) -> Any:
            if key in table:
                return _typed(table, key, kind, where, default)
            return _typed(carp, key, kind, "carp", default)

        for key in ("interface", "srcip"):
            if key not in table:
                raise ConfigError(f"{where}.{key}", "required")
        vips = table.get("vips")
        if not isinstance(vips, list) or not all(isinstance(v, str) for v in vips):
            raise ConfigError(f"{where}.vips", "must be a list of 'address/prefix' strings")
        specs.append(
            build_vhid(
                vhid=vhid,
                interface=_typed(table, "interface", str, where, ""),
                srcip=_typed(table, "srcip", str, where, ""),
                vips=vips,
                password=pick("password", str, ""),
                advbase=pick("advbase", int, 1),
                advskew=pick("advskew", int, 0),
                preempt=pick("preempt", bool, False),
                deadratio=pick("deadratio", int, 3),
                master_down_formula=pick("master_down_formula", str, "freebsd"),
                demote=pick("demote", int, 0),
                real_mac=pick("real_mac", bool, False),
                peer=_typed(table, "peer", str, where, None),
                strict=pick("strict", bool, False),
                where=where,
            )
        )
    vhids = tuple(specs)
    check_unique(vhids)
    statesync = data.get("statesync", {})
    if not isinstance(statesync, dict):
        raise ConfigError("statesync", "must be a table")
    sync = parse_statesync(statesync, name) if "statesync" in data else None
    return NodeConfig(
        name=name,
        vhids=vhids,
        control=_typed(node, "control", str, "node", DEFAULT_CONTROL),
        events_json=_typed(node, "events_json", str, "node", None),
        metrics_port=metrics_port,
        metrics_address=_metrics_address(node),
        upscript=_typed(node, "upscript", str, "node", None),
        downscript=_typed(node, "downscript", str, "node", None),
        neutral=_typed(node, "neutral", bool, "node", False),
        shutdown_scripts=_typed(node, "shutdown_scripts", bool, "node", False),
        statesync=statesync,
        sync=sync,
        web=parse_web(data.get("web")),
    )


def load(path: str | Path) -> NodeConfig:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        # tomllib recurses per nesting level; a hostile file must still be a one-line error.
        raise ConfigError("config", f"{path}: nested too deeply to be a node config") from exc
    return parse(data)
