"""One interface's DHCP status in pfSense's "Status > DHCP Leases" words (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carpsim.dhcp.lease import BindingState, LeaseDB
from carpsim.dhcp.leasefile import fmt_time
from carpsim.dhcp.settings import DhcpServerSettings

GATEWAY_WARNING = (
    "gateway is empty: clients get this node's own address {addr} as router and DNS, "
    "which dies with this node; set the gateway (and DNS) to the CARP VIP"
)
SHOWN = (
    BindingState.ACTIVE,
    BindingState.EXPIRED,
    BindingState.RELEASED,
    BindingState.ABANDONED,
)


def _fmt(t: int | None) -> str:
    """UTC ``YYYY/MM/DD HH:MM:SS`` as the lease file writes it, without the weekday."""
    return "never" if t is None else fmt_time(t).split(" ", 1)[1]


def status(
    settings: DhcpServerSettings, db: LeaseDB, drops: Mapping[str, int] | None = None
) -> dict[str, Any]:
    first, last = int(settings.range_start), int(settings.range_end)
    in_range = [lease for lease in db if first <= int(lease.address) <= last]
    counts = {s.name.lower(): 0 for s in BindingState}
    for lease in in_range:
        counts[lease.state.name.lower()] += 1
    pool: dict[str, int] = {"total": last - first + 1, **counts}
    leases = [
        {
            "ip": str(lease.address),
            "mac": ":".join(f"{b:02x}" for b in lease.hw_address),
            "hostname": lease.hostname or "",
            "start": _fmt(lease.starts),
            "end": _fmt(lease.ends),
            "binding_state": lease.state.name.lower(),
            "static": lease.reserved,
        }
        for lease in sorted(db, key=lambda x: int(x.address))
        if lease.state in SHOWN
    ]
    physical = settings.gateway_is_physical
    out: dict[str, Any] = {
        "interface": settings.interface,
        "gateway": str(settings.router),
        "gateway_is_physical": physical,
        "dns": [str(a) for a in settings.dns],
        "pool": pool,
        "leases": leases,
        "drops": dict(drops or {}),
    }
    if physical:
        out["warning"] = GATEWAY_WARNING.format(addr=settings.interface_address)
    return out
