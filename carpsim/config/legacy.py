"""The sections the original node config already had: ``[node]``, ``[carp]``, ``[[vhid]]`` and
``[statesync]`` (docs/node-config.md), read into the sectioned model.

A ``[[vhid]]`` names a device and a source address; it becomes a ``virtualip.vip`` on the logical
interface of that device (synthesised from the VHID when ``[interfaces]`` has none), so every old
node config file still loads. `statesync_replicator` is the pure counterpart of
``runtime.nodeconfig.parse_statesync`` that the runtime can call once it runs from `Config`.
"""

from __future__ import annotations

import math
import zlib
from ipaddress import IPv4Address, IPv4Interface, ip_address

from carpsim.config._read import Table, host, ifname, ipv4_interface
from carpsim.config.limits import out_of_range
from carpsim.config.model import (
    DEFAULT_CONTROL,
    CarpDefaults,
    Interface,
    NodeSettings,
    StateSync,
    VirtualIp,
)
from carpsim.errors import ConfigError
from carpsim.statesync.config import ReplicatorConfig

NODE_KEYS = {
    "name", "control", "events_json", "metrics_port", "metrics_address", "upscript",
    "downscript", "neutral", "shutdown_scripts",
}  # fmt: skip
CARP_KEYS = {
    "password", "advbase", "advskew", "preempt", "master_down_formula", "real_mac",
    "deadratio", "demote", "strict",
}  # fmt: skip
VHID_KEYS = {"vhid", "interface", "srcip", "vips", "peer"} | CARP_KEYS
FORMULAS = ("freebsd", "openbsd")
SYNC_FLOATS = (
    "flush_interval", "bulk_tick", "bulk_retry_interval", "bulk_timeout", "refresh_interval",
    "ack_delay", "resend_timeout",
)  # fmt: skip
SYNC_INTS = ("bulk_frames_per_tick", "bulk_max_tries", "mtu", "creatorid", "sweep_per_interval")
SYNC_KEYS = {"interface", "peer", "enabled", "group", "demote", "reliable", "key",
             *SYNC_FLOATS, *SYNC_INTS}  # fmt: skip
SYNC_KEY_LEN = (16, 1024)


def node_settings(t: Table) -> NodeSettings:
    t.only(NODE_KEYS)
    name = t.text("name")
    if not name:
        raise ConfigError("node.name", "required")
    return NodeSettings(
        name=name,
        control=t.text("control", DEFAULT_CONTROL),
        events_json=t.text("events_json"),
        metrics_port=t.integer("metrics_port", 0, hi=65535),
        metrics_address=_metrics_address(t),
        upscript=t.text("upscript"),
        downscript=t.text("downscript"),
        neutral=t.flag("neutral"),
        shutdown_scripts=t.flag("shutdown_scripts"),
    )


def _metrics_address(t: Table) -> str:
    text: str = t.text("metrics_address", "127.0.0.1")
    try:
        ip_address(text)
    except ValueError as exc:
        raise ConfigError("node.metrics_address", f"not an IP address: {text!r}") from exc
    return text


def formula(t: Table, default: str) -> str:
    value: str = t.text("master_down_formula", default)
    if value not in FORMULAS:
        raise ConfigError(
            t.at("master_down_formula"), f"must be 'freebsd' or 'openbsd', got {value!r}"
        )
    return value


def carp_defaults(t: Table) -> CarpDefaults:
    t.only(CARP_KEYS)
    return CarpDefaults(
        password=t.text("password", ""),
        advbase=t.integer("advbase", 1, hi=255),
        advskew=t.integer("advskew", 0, hi=254),
        preempt=t.flag("preempt"),
        master_down_formula=formula(t, "freebsd"),
        real_mac=t.flag("real_mac"),
        deadratio=t.integer("deadratio", 3, lo=1, hi=255),
        demote=t.integer("demote", 0, hi=255),
        strict=t.flag("strict"),
    )


def vip_fields(t: Table, carp: CarpDefaults) -> dict[str, object]:
    """The CARP knobs a VIP may set itself, falling back to ``[carp]``."""
    peer_text = t.text("peer")
    peer = None if peer_text is None else host(peer_text, t.at("peer"))
    return {
        "password": t.text("password", carp.password),
        "advbase": t.integer("advbase", carp.advbase, hi=255),
        "advskew": t.integer("advskew", carp.advskew, hi=254),
        "preempt": t.flag("preempt", carp.preempt),
        "master_down_formula": formula(t, carp.master_down_formula),
        "deadratio": t.integer("deadratio", carp.deadratio, lo=1, hi=255),
        "demote": t.integer("demote", carp.demote, hi=255),
        "real_mac": t.flag("real_mac", carp.real_mac),
        "strict": t.flag("strict", carp.strict),
        "peer": peer,
    }


def legacy_vhids(
    tables: list[Table], carp: CarpDefaults, interfaces: list[Interface]
) -> list[VirtualIp]:
    """``[[vhid]]`` -> VIPs; appends the interfaces it had to synthesise to `interfaces`."""
    out: list[VirtualIp] = []
    for t in tables:
        vhid = t.integer("vhid", hi=255, lo=1)
        if vhid is None:
            raise ConfigError(t.at("vhid"), "required")
        t.where = f"vhid[{vhid}]"
        t.only(VHID_KEYS)
        device = ifname(t.text("interface", required=True), t.at("interface"))
        srcip = host(t.text("srcip", required=True), t.at("srcip"))
        vips = t.strings("vips")
        if not vips:
            raise ConfigError(t.at("vips"), "at least one virtual IP is required")
        parsed = tuple(_vip(v, t.at("vips")) for v in vips)
        iface = next((i for i in interfaces if i.device == device), None)
        if iface is None:
            iface = Interface(
                device, device, IPv4Interface(f"{srcip}/{parsed[0].network.prefixlen}")
            )
            interfaces.append(iface)
        elif iface.address.ip != srcip:
            raise ConfigError(t.at("srcip"), f"{srcip} is not interfaces.{iface.name}'s address")
        fields = vip_fields(t, carp)
        out.append(
            VirtualIp(
                interface=iface.name,
                vhid=vhid,
                subnet=parsed[0],
                extra_subnets=parsed[1:],
                **fields,  # type: ignore[arg-type]
            )
        )
    return out


def _vip(text: str, where: str) -> IPv4Interface:
    if "/" not in text:
        # the original loader made a bare address a /32
        return IPv4Interface(host(text, where))
    return ipv4_interface(text, where)


def statesync(t: Table) -> StateSync:
    t.only(SYNC_KEYS)
    enabled = t.flag("enabled", True)
    interface = t.text("interface", "")
    if enabled and not interface:
        raise ConfigError("statesync.interface", "required (the SYNC link's interface)")
    if interface:
        ifname(interface, "statesync.interface")
    group = t.flag("group")
    peer = t.ipv4("peer")
    if peer is not None:
        if group:
            raise ConfigError("statesync.group", "true conflicts with a unicast statesync.peer")
        if peer.is_multicast or peer.is_unspecified or peer == IPv4Address("255.255.255.255"):
            raise ConfigError("statesync.peer", f"must be a unicast address, got {peer}")
    tuning = _tuning(t)
    key = t.text("key")
    if key is not None and not SYNC_KEY_LEN[0] <= len(key) <= SYNC_KEY_LEN[1]:
        # the shared sync key (docs/security.md): never echoed, not even here
        raise ConfigError(
            "statesync.key", f"must be {SYNC_KEY_LEN[0]}..{SYNC_KEY_LEN[1]} characters"
        )
    result = StateSync(
        interface=interface, peer=peer, enabled=enabled, group=group,
        demote=t.integer("demote", 32, hi=255), tuning=tuple(tuning), key=key,
    )  # fmt: skip
    statesync_replicator(result, "check")
    return result


def _tuning(t: Table) -> list[tuple[str, float | int | bool]]:
    tuning: list[tuple[str, float | int | bool]] = []
    for key in SYNC_FLOATS:
        if key in t.data:
            value = t.data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"statesync.{key}", f"must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"statesync.{key}", f"must be finite, got {value!r}")
            tuning.append((key, float(value)))
    for key in SYNC_INTS:
        if key in t.data:
            tuning.append((key, t.integer(key, lo=-(2**31))))
    if "reliable" in t.data:
        tuning.append(("reliable", t.flag("reliable")))
    for key, value in tuning:
        problem = out_of_range(key, value)
        if problem:
            raise ConfigError(f"statesync.{key}", problem)
    return tuning


def default_creatorid(name: str) -> int:
    """The same stable pfsync host id the runtime's loader derives from the node name."""
    return zlib.crc32(name.encode()) or 1


def statesync_replicator(sync: StateSync, node_name: str) -> ReplicatorConfig:
    kwargs: dict[str, object] = {"creatorid": default_creatorid(node_name)}
    kwargs.update(dict(sync.tuning))
    if sync.key is not None:
        kwargs["key"] = sync.key.encode()
    try:
        return ReplicatorConfig(**kwargs)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"statesync.{exc.field}", exc.message) from exc
