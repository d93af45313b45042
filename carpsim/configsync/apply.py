"""The apply plan: everything a config change needs, derived (and so validated) up front.

"Validate all, then swap": `plan(old, new)` builds every derived object (nftables text, CARP
configs, DHCP settings, routes) before the edge touches anything, so a bad config fails here
with the running one untouched. The edge then executes the steps; if one fails it executes
`plan(new, old)` to put the old state back. Only what changed is in the plan: an unchanged
VHID is absent (it must not flap); a changed one is an update, reconfigured in place (the CARP
machine keeps its state, so no spurious takeover).
"""

from __future__ import annotations

from dataclasses import dataclass

from carpsim.config import derive, nft
from carpsim.config.diff import ConfigDiff, diff
from carpsim.config.model import Config, StaticRoute
from carpsim.dhcp.settings import DhcpServerSettings


@dataclass(frozen=True)
class ApplyPlan:
    old: Config
    new: Config
    diff: ConfigDiff
    nftables: str | None
    """The full ruleset to load with ``nft -f`` (None: the ruleset did not change)."""
    tcp_loose: bool | None
    """New ``nf_conntrack_tcp_loose`` value when it changed."""
    vhids_add: tuple[derive.CarpVhid, ...]
    vhids_update: tuple[derive.CarpVhid, ...]
    vhids_remove: tuple[tuple[str, int], ...]
    """(device, vhid) of VHIDs to tear down."""
    dhcp_start: tuple[DhcpServerSettings, ...]
    """Servers to (re)start with these settings."""
    dhcp_stop: tuple[str, ...]
    """Devices whose server stops (no longer configured or disabled)."""
    routes_add: tuple[StaticRoute, ...]
    routes_remove: tuple[StaticRoute, ...]
    statesync_changed: bool

    @property
    def empty(self) -> bool:
        return self.diff.empty

    def steps(self) -> list[str]:
        """Human-readable, in execution order (logs and the sync status)."""
        out = []
        if self.nftables is not None:
            out.append("nftables: load ruleset")
        if self.tcp_loose is not None:
            out.append(f"sysctl nf_conntrack_tcp_loose={int(self.tcp_loose)}")
        out += [f"carp: remove vhid {v} on {d}" for d, v in self.vhids_remove]
        out += [f"carp: update vhid {v.carp.vhid} on {v.interface}" for v in self.vhids_update]
        out += [f"carp: add vhid {v.carp.vhid} on {v.interface}" for v in self.vhids_add]
        out += [f"dhcpd: stop on {d}" for d in self.dhcp_stop]
        out += [f"dhcpd: start on {s.interface}" for s in self.dhcp_start]
        out += [f"route: del {r.network} via {r.gateway}" for r in self.routes_remove]
        out += [f"route: add {r.network} via {r.gateway}" for r in self.routes_add]
        if self.statesync_changed:
            out.append("statesync: restart with the new settings")
        return out


def plan(old: Config, new: Config) -> ApplyPlan:
    d = diff(old, new)
    new_vhids = {(v.interface, v.vhid): v for v in new.virtualip}
    carp_new = dict(zip(new_vhids, derive.carp_vhids(new), strict=True))
    old_devices = {v.key: old.interface(v.interface) for v in old.virtualip}
    removed = []
    for key in d.vhids_removed:
        iface = old_devices[key]
        removed.append((iface.device if iface is not None else key[0], key[1]))
    dhcp_new = {s.interface: s for s in derive.dhcp_servers(new)}
    dhcp_old = {s.interface: s for s in derive.dhcp_servers(old)}
    start = tuple(s for dev, s in dhcp_new.items() if dhcp_old.get(dev) != s)
    stop = tuple(dev for dev in dhcp_old if dev not in dhcp_new)
    old_routes = {r for r in old.staticroutes if not r.disabled}
    new_routes = {r for r in new.staticroutes if not r.disabled}
    return ApplyPlan(
        old=old,
        new=new,
        diff=d,
        nftables=nft.render(new) if d.ruleset_changed else None,
        tcp_loose=new.filter.tcp_loose if old.filter.tcp_loose != new.filter.tcp_loose else None,
        vhids_add=tuple(carp_new[k] for k in d.vhids_added),
        vhids_update=tuple(carp_new[k] for k in d.vhids_changed),
        vhids_remove=tuple(removed),
        dhcp_start=start,
        dhcp_stop=stop,
        routes_add=tuple(r for r in new.staticroutes if r in new_routes - old_routes),
        routes_remove=tuple(r for r in old.staticroutes if r in old_routes - new_routes),
        statesync_changed="statesync" in d.sections or "node" in d.sections,
    )
