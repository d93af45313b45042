"""``carpsim lint``: configs that load fine but break HA, most of them the seed's own mistakes.

Each `Finding` names the node and dotted field, says what is wrong, why it breaks HA and how to
fix it. Checks look at the cluster as a whole (the master is the node that pushes the config,
else the one with the lowest advskew): a config can be valid on its own and still point its
pfsync peer at an address no peer has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from carpsim.config.model import Action, Config, Interface, NatMode
from carpsim.protocol.constants import MAX_PASSWORD_LEN


@dataclass(frozen=True)
class Finding:
    node: str
    field: str
    message: str
    why: str
    fix: str
    severity: str = "error"

    def render(self) -> str:
        return (
            f"{self.node}: {self.field}: {self.severity}: {self.message}\n"
            f"    why: {self.why}\n    fix: {self.fix}"
        )


def raw_findings(node: str, data: Mapping[str, Any]) -> list[Finding]:
    """Checks on the TOML before loading, for what the loader would refuse with less context."""
    out: list[Finding] = []
    carp = data.get("carp")
    places: list[tuple[str, object]] = []
    if isinstance(carp, Mapping):
        places.append(("carp.password", carp.get("password")))
    virtualip = data.get("virtualip")
    vips = virtualip.get("vip", []) if isinstance(virtualip, Mapping) else []
    if isinstance(vips, list):
        places += [
            (f"virtualip.vip[{i}].password", v.get("password"))
            for i, v in enumerate(vips)
            if isinstance(v, Mapping)
        ]
    for field, value in places:
        if isinstance(value, str) and len(value.encode()) > MAX_PASSWORD_LEN:
            out.append(
                Finding(
                    node,
                    field,
                    f"password is {len(value.encode())} bytes, longer than {MAX_PASSWORD_LEN}",
                    "CARP's HMAC key is at most 19 bytes: BSD truncates, ucarp refuses, so "
                    "mixed or upgraded nodes compute different HMACs and each sees no master",
                    f"use a password of at most {MAX_PASSWORD_LEN} bytes, the same on every node",
                )
            )
    return out + _duplicate_vhid_findings(node, data)


def _vip_entries(data: Mapping[str, Any]) -> list[Any]:
    virtualip = data.get("virtualip")
    vips = virtualip.get("vip", []) if isinstance(virtualip, Mapping) else []
    return vips if isinstance(vips, list) else []


def duplicate_vhids(data: Mapping[str, Any]) -> dict[int, int]:
    """``virtualip.vip`` index -> the earlier index with the same VHID on the same interface."""
    seen: dict[tuple[object, object], int] = {}
    dups: dict[int, int] = {}
    for i, v in enumerate(_vip_entries(data)):
        if not isinstance(v, Mapping) or not isinstance(v.get("vhid"), int):
            continue
        key = (v.get("interface"), v["vhid"])
        if key in seen:
            dups[i] = seen[key]
        else:
            seen[key] = i
    return dups


def _duplicate_vhid_findings(node: str, data: Mapping[str, Any]) -> list[Finding]:
    vips = _vip_entries(data)
    out = []
    for i, first in duplicate_vhids(data).items():
        v = vips[i]
        iface, vhid = v.get("interface"), v["vhid"]
        used = {e.get("vhid") for e in vips if isinstance(e, Mapping)}
        free = next((n for n in range(1, 256) if n not in used), None)
        suggestion = f" (VHID {free} is free)" if free is not None else ""
        out.append(
            Finding(
                node,
                f"virtualip.vip[{i}].vhid",
                f"VHID {vhid} on {iface} is already virtualip.vip[{first}]",
                f"one VHID is one virtual router (one virtual MAC 00:00:5e:00:01:{vhid:02x}, one "
                "advert signed over all its addresses): the node refuses a config with it "
                "twice, so it does not start and a sync carrying it is refused; a peer that "
                "lists the addresses otherwise signs differently, drops our adverts and "
                "becomes MASTER too",
                f"give virtualip.vip[{i}] its own VHID{suggestion}, unique on {iface}, and the "
                "same number on the peer",
            )
        )
    return out


def loadable(data: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the VIP entries `duplicate_vhids` flags, so the cluster checks can
    still run on the rest (the finding already says what to do about those)."""
    dups = duplicate_vhids(data)
    if not dups:
        return dict(data)
    vips = [v for i, v in enumerate(_vip_entries(data)) if i not in dups]
    return {**data, "virtualip": {**data["virtualip"], "vip": vips}}


def _master(configs: Sequence[Config]) -> Config:
    pushers = [c for c in configs if c.hasync.synchronizetoip is not None]
    if pushers:
        return pushers[0]
    return min(configs, key=lambda c: sum(v.advskew for v in c.virtualip))


def _sync_iface(c: Config) -> Interface | None:
    if c.hasync.pfsyncinterface:
        return c.interface(c.hasync.pfsyncinterface)
    if c.statesync is not None:
        return c.interface_by_device(c.statesync.interface)
    return None


def _pfsync(c: Config, others: Sequence[Config]) -> list[Finding]:
    out: list[Finding] = []
    peer = c.hasync.pfsyncpeerip
    field = "hasync.pfsyncpeerip"
    if peer is None and c.statesync is not None and c.statesync.enabled:
        peer, field = c.statesync.peer, "statesync.peer"
    if peer is None:
        return out
    wanted = [str(i.address.ip) for o in others if (i := _sync_iface(o)) is not None]
    if str(peer) not in wanted:
        mine = _sync_iface(c)
        where = (
            f" and not on the SYNC subnet {mine.network}"
            if mine and peer not in mine.network
            else ""
        )
        out.append(
            Finding(
                c.node.name,
                field,
                f"{peer} is not the peer's SYNC address ({', '.join(wanted) or 'none'}){where}",
                "states are sent to an address nobody has: the backup holds no state, and every "
                "stream breaks at failover (the seed uses SYNC .5/.6 but points pfsync at .1/.2)",
                f"set {field} to the other node's address on the SYNC interface"
                + (f" ({wanted[0]})" if wanted else ""),
            )
        )
    return out


def _dhcp(c: Config, others: Sequence[Config]) -> list[Finding]:
    out: list[Finding] = []
    physical = {i.address.ip for o in (c, *others) for i in o.interfaces}
    for d in c.dhcpd:
        if not d.enable:
            continue
        vips = {a.ip for v in c.vips_on(d.interface) for a in v.addresses}
        base = f"dhcpd.{d.interface}"
        vip_text = ", ".join(sorted(str(v) for v in vips)) or "the interface's CARP VIP"
        why = (
            "clients keep this node's own address as {what}; when the node dies they lose it "
            "although the backup has taken the VIP over"
        )
        if d.gateway is None or d.gateway in physical or d.gateway not in vips:
            what = (
                "empty (pfSense then hands out the interface address)"
                if d.gateway is None
                else f"{d.gateway}, not a VIP"
            )
            out.append(
                Finding(
                    c.node.name,
                    f"{base}.gateway",
                    f"gateway is {what}",
                    why.format(what="router"),
                    f"set gateway to {vip_text}",
                )
            )
        bad_dns = [x for x in d.dnsservers if x in physical or x not in vips]
        if not d.dnsservers or bad_dns:
            what = (
                "empty (pfSense then hands out the interface address)"
                if not d.dnsservers
                else f"{', '.join(map(str, bad_dns))}, not a VIP"
            )
            out.append(
                Finding(
                    c.node.name,
                    f"{base}.dnsserver",
                    f"DNS server is {what}",
                    why.format(what="DNS server"),
                    f"set dnsserver to {vip_text}",
                )
            )
        if d.failover_peerip is not None:
            peers = [i.address.ip for o in others if (i := o.interface(d.interface)) is not None]
            if d.failover_peerip not in peers:
                out.append(
                    Finding(
                        c.node.name,
                        f"{base}.failover_peerip",
                        f"{d.failover_peerip} is not the other node's address on {d.interface} "
                        f"({', '.join(map(str, peers)) or 'none'})",
                        "the failover pair never connects: both servers stay in "
                        "communications-interrupted and cannot safely hand out each other's pool",
                        "set failover_peerip to the peer's own address on this interface",
                    )
                )
    return out


def _nat(c: Config) -> list[Finding]:
    out: list[Finding] = []
    if c.nat.mode in (NatMode.AUTOMATIC, NatMode.HYBRID) and c.virtualip:
        out.append(
            Finding(
                c.node.name,
                "nat.outbound.mode",
                f"mode {c.nat.mode.value} on a CARP cluster",
                "automatic rules translate to the interface address, which differs between the "
                "nodes: after failover every translated stream is answered to a dead address",
                'set mode = "manual" with one rule per inside subnet translating to the WAN VIP',
            )
        )
    vips = {a.ip for v in c.virtualip for a in v.addresses}
    for i, r in enumerate(c.nat.rules):
        where = f"nat.outbound.rule[{i}]"
        if r.disabled or r.nonat:
            continue
        if r.target is None or r.target not in vips:
            out.append(
                Finding(
                    c.node.name,
                    f"{where}.target",
                    "translates to the interface address"
                    if r.target is None
                    else f"{r.target} is not a VIP",
                    "the translated source belongs to this node only: after failover the remote "
                    "side keeps answering an address nobody holds, and every stream breaks",
                    "set target to the WAN VIP (the CARP VIP on the NAT interface)",
                )
            )
        if r.source.any:
            out.append(
                Finding(
                    c.node.name,
                    f"{where}.source",
                    'source is "any"',
                    "translating everything also rewrites the firewall's own and the SYNC link's "
                    "traffic (least privilege: translate only the inside subnets)",
                    "one rule per inside subnet (e.g. 192.168.110.0/24)",
                    "warning",
                )
            )
    return out


def _sync_rule(c: Config) -> list[Finding]:
    iface = _sync_iface(c)
    if iface is None:
        return []
    for r in c.filter.rules:
        if r.interface != iface.name or r.disabled:
            continue
        if r.action is not Action.PASS:
            break
        if (
            r.protocol is None
            and r.source.any
            and r.destination.any
            and r.source.port is None
            and r.destination.port is None
        ):
            return []
    return [
        Finding(
            c.node.name,
            "filter.rule",
            f"no permissive pass rule on the SYNC interface {iface.name}",
            "pfsync frames, the bulk update and the XML-RPC config sync all cross this link; "
            "anything blocked there silently desynchronises the pair",
            f'add [[filter.rule]] interface = "{iface.name}" (any protocol, any to any) first',
        )
    ]


def _config_sync(c: Config, others: Sequence[Config]) -> list[Finding]:
    out: list[Finding] = []
    target = c.hasync.synchronizetoip
    if target is None:
        return out
    if target in c.own_addresses():
        out.append(
            Finding(
                c.node.name,
                "hasync.synchronizetoip",
                f"{target} is this node itself",
                "the master would push its config to itself; the peer never gets it",
                "set synchronizetoip to the backup's SYNC address",
            )
        )
        return out
    peers = [str(i.address.ip) for o in others if (i := _sync_iface(o)) is not None]
    if peers and str(target) not in peers:
        out.append(
            Finding(
                c.node.name,
                "hasync.synchronizetoip",
                f"{target} is not the peer's SYNC address",
                "the sync then runs over another link, or to nobody (the backup's server listens "
                "on its SYNC address only)",
                f"set synchronizetoip to {peers[0]}",
                "warning",
            )
        )
    for o in others:
        if o.hasync.synchronizetoip is not None:
            out.append(
                Finding(
                    o.node.name,
                    "hasync.synchronizetoip",
                    "the backup also pushes its config",
                    'pfSense refuses the loop ("Disallowing CARP sync loop") and edits made on the '
                    "backup silently overwrite the master's when it does not",
                    "configure synchronizetoip on the master only",
                )
            )
    return out


def _vips(master: Config, others: Sequence[Config]) -> list[Finding]:
    out: list[Finding] = []
    mine = {v.key: v for v in master.virtualip}
    for o in others:
        theirs = {v.key: (i, v) for i, v in enumerate(o.virtualip)}
        for key, m in mine.items():
            if key not in theirs:
                out.append(
                    Finding(
                        o.node.name,
                        "virtualip.vip",
                        f"VHID {key[1]} on {key[0]} is missing",
                        f"{master.node.name} holds this VIP alone: nothing takes it over",
                        f"add the same VIP (vhid {key[1]}, {m.subnet}) on {key[0]}",
                    )
                )
                continue
            i, b = theirs[key]
            where = f"virtualip.vip[{i}]"
            if b.subnet != m.subnet:
                out.append(
                    Finding(
                        o.node.name,
                        f"{where}.subnet",
                        f"VHID {key[1]} is {b.subnet} here, {m.subnet} on {master.node.name}",
                        "the same VHID with different addresses: the HMACs differ and both nodes "
                        "become MASTER (a duplicate VHID on the segment)",
                        "give a VHID the same address on every node, or use another VHID",
                    )
                )
            if b.password != m.password:
                out.append(
                    Finding(
                        o.node.name,
                        f"{where}.password",
                        f"differs from {master.node.name}'s password for VHID {key[1]}",
                        "adverts fail the HMAC check: both nodes become MASTER",
                        "use the same VIP password on every node",
                    )
                )
            if b.advskew <= m.advskew:
                out.append(
                    Finding(
                        o.node.name,
                        f"{where}.advskew",
                        f"advskew {b.advskew} is not above the master's {m.advskew}",
                        "the backup advertises as fast as (or faster than) the master: they fight "
                        "over the VIP or the wrong node wins after every election",
                        f"set advskew above {m.advskew} (sync: +100 = {min(m.advskew + 100, 254)})",
                    )
                )
    return out


def lint(configs: Sequence[Config]) -> list[Finding]:
    """Every finding for a cluster (two nodes normally; one node gets the local checks only)."""
    master = _master(configs)
    others = [c for c in configs if c is not master]
    out: list[Finding] = []
    for c in configs:
        peers = [o for o in configs if o is not c]
        if peers:
            out += _pfsync(c, peers)
            out += _dhcp(c, peers)
        out += _nat(c)
        out += _sync_rule(c)
    if others:
        out += _config_sync(master, others)
        out += _vips(master, others)
    return out


def errors(findings: Sequence[Finding]) -> int:
    return sum(1 for f in findings if f.severity == "error")


def addresses(c: Config) -> set[IPv4Address]:
    return set(c.own_addresses())
