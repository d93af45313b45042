"""`Config` -> the TOML-shaped mapping the loader reads (and TOML text).

``parse(to_data(c)) == c`` for every valid config: the sync's receiver edits this mapping
(replacing the sections it was sent) and re-parses the whole, so a merged config is validated
exactly like a file a user wrote, and written back as one.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from carpsim.config.model import (
    CarpDefaults,
    Config,
    Dhcpd,
    Endpoint,
    FilterRule,
    NatMode,
    NatRule,
    NodeSettings,
    VirtualIp,
)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _node(n: NodeSettings) -> dict[str, Any]:
    return _drop_none(
        {
            "name": n.name,
            "control": n.control,
            "events_json": n.events_json,
            "metrics_port": n.metrics_port,
            "metrics_address": n.metrics_address,
            "upscript": n.upscript,
            "downscript": n.downscript,
            "neutral": n.neutral,
            "shutdown_scripts": n.shutdown_scripts,
        }
    )


def _carp(c: CarpDefaults) -> dict[str, Any]:
    return {
        "password": c.password,
        "advbase": c.advbase,
        "advskew": c.advskew,
        "preempt": c.preempt,
        "master_down_formula": c.master_down_formula,
        "real_mac": c.real_mac,
        "deadratio": c.deadratio,
        "demote": c.demote,
        "strict": c.strict,
    }


def vip_data(v: VirtualIp) -> dict[str, Any]:
    out: dict[str, Any] = {
        "interface": v.interface,
        "vhid": v.vhid,
        "subnet": str(v.subnet),
        "password": v.password,
        "advbase": v.advbase,
        "advskew": v.advskew,
        "descr": v.descr,
        "preempt": v.preempt,
        "master_down_formula": v.master_down_formula,
        "deadratio": v.deadratio,
        "demote": v.demote,
        "real_mac": v.real_mac,
        "strict": v.strict,
    }
    if v.peer is not None:
        out["peer"] = str(v.peer)
    return out


def _endpoint(out: dict[str, Any], side: str, ep: Endpoint) -> None:
    out[side] = ep.text()
    if ep.port is not None:
        out[f"{side}_port"] = ep.port


def rule_data(r: FilterRule) -> dict[str, Any]:
    out: dict[str, Any] = {"interface": r.interface, "action": r.action.value}
    if r.protocol is not None:
        out["protocol"] = r.protocol
    _endpoint(out, "source", r.source)
    _endpoint(out, "destination", r.destination)
    if r.icmptype:
        out["icmptype"] = list(r.icmptype)
    out["descr"] = r.descr
    for flag in ("nosync", "disabled", "log"):
        if getattr(r, flag):
            out[flag] = True
    out["tracker"] = r.tracker
    return out


def nat_data(r: NatRule) -> dict[str, Any]:
    out: dict[str, Any] = {"interface": r.interface}
    if r.protocol is not None:
        out["protocol"] = r.protocol
    _endpoint(out, "source", r.source)
    _endpoint(out, "destination", r.destination)
    out["target"] = "" if r.target is None else str(r.target)
    for flag in ("static_port", "nonat", "nosync", "disabled"):
        if getattr(r, flag):
            out[flag] = True
    out["descr"] = r.descr
    out["tracker"] = r.tracker
    return out


def dhcpd_data(d: Dhcpd) -> dict[str, Any]:
    out: dict[str, Any] = {
        "enable": d.enable,
        "range": {"from": str(d.range_from), "to": str(d.range_to)},
        "dnsserver": [str(x) for x in d.dnsservers],
        "domain": d.domain,
        "defaultleasetime": d.defaultleasetime,
        "maxleasetime": d.maxleasetime,
    }
    if d.gateway is not None:
        out["gateway"] = str(d.gateway)
    if d.failover_peerip is not None:
        out["failover_peerip"] = str(d.failover_peerip)
    if d.staticmaps:
        out["staticmap"] = [
            _drop_none(
                {"mac": m.mac, "ipaddr": str(m.ipaddr), "hostname": m.hostname, "descr": m.descr}
            )
            for m in d.staticmaps
        ]
    return out


def to_data(config: Config) -> dict[str, Any]:
    c = config
    data: dict[str, Any] = {"node": _node(c.node), "carp": _carp(c.carp)}
    system: dict[str, Any] = {
        "hostname": c.system.hostname,
        "version": c.system.version,
        "webgui_port": c.system.webgui_port,
    }
    if c.system.users:
        system["user"] = [
            {"name": u.name, "password": u.password, "privileges": list(u.privileges)}
            for u in c.system.users
        ]
    data["system"] = system
    data["interfaces"] = {
        i.name: _drop_none(
            {
                "device": i.device,
                "address": str(i.address),
                "descr": i.descr,
                "gateway": None if i.gateway is None else str(i.gateway),
                "carp_peers": [str(p) for p in i.carp_peers] or None,
            }
        )
        for i in c.interfaces
    }
    data["virtualip"] = {"vip": [vip_data(v) for v in c.virtualip]}
    data["aliases"] = {
        a.name: {
            "type": a.type.value,
            "address": list(a.entries),
            "descr": a.descr,
            "nosync": a.nosync,
        }
        for a in c.aliases
    }
    data["filter"] = {
        "syn_only": c.filter.syn_only,
        "tcp_loose": c.filter.tcp_loose,
        "rule": [rule_data(r) for r in c.filter.rules],
    }
    mode = "manual" if c.nat.mode is NatMode.MANUAL else c.nat.mode.value
    data["nat"] = {"outbound": {"mode": mode, "rule": [nat_data(r) for r in c.nat.rules]}}
    data["dhcpd"] = {d.interface: dhcpd_data(d) for d in c.dhcpd}
    data["staticroutes"] = {
        "route": [
            {
                "network": str(r.network),
                "gateway": str(r.gateway),
                "descr": r.descr,
                "disabled": r.disabled,
            }
            for r in c.staticroutes
        ]
    }
    h = c.hasync
    hasync: dict[str, Any] = {
        "pfsyncenabled": h.pfsyncenabled,
        "username": h.username,
        "password": h.password,
    }
    if h.pfsyncinterface is not None:
        hasync["pfsyncinterface"] = h.pfsyncinterface
    if h.pfsyncpeerip is not None:
        hasync["pfsyncpeerip"] = str(h.pfsyncpeerip)
    if h.synchronizetoip is not None:
        hasync["synchronizetoip"] = str(h.synchronizetoip)
    for toggle in sorted(h.toggles):
        hasync[toggle] = True
    data["hasync"] = hasync
    if c.statesync is not None:
        s = c.statesync
        sync: dict[str, Any] = {"interface": s.interface, "enabled": s.enabled, "demote": s.demote}
        if s.peer is not None:
            sync["peer"] = str(s.peer)
        if s.group:
            sync["group"] = True
        sync.update(dict(s.tuning))
        if s.key is not None:
            sync["key"] = s.key  # the file needs it; status and logs never see this table
        data["statesync"] = sync
    if c.web is not None:
        data["web"] = {"listen": c.web.listen}
    return data


def dumps(config: Config, header: str = "") -> str:
    """TOML text; `header` becomes leading comment lines."""
    lead = "".join(f"# {line}\n" for line in header.splitlines())
    return lead + tomli_w.dumps(to_data(config))
