"""pfSense's Status > DHCP Leases in a terminal: shared by `carpsim status` and `lab status`."""

from __future__ import annotations

from typing import Any


def servers(section: Any) -> list[dict[str, Any]]:
    """The per-interface entries of a node's ``status["dhcp"]`` (a list, or one dict each)."""
    if isinstance(section, list):
        return [s for s in section if isinstance(s, dict)]
    if isinstance(section, dict):
        if "interface" in section:
            return [section]
        return [{"interface": k, **v} for k, v in section.items() if isinstance(v, dict)]
    return []


def failover_words(s: dict[str, Any]) -> str:
    fo = s.get("failover")
    if not isinstance(fo, dict):
        return "not configured"
    return f"{fo.get('my_state')} / {fo.get('peer_state')}"


def render(section: Any) -> list[str]:
    lines: list[str] = []
    for s in servers(section):
        gw = s.get("gateway")
        where = "this node's own address" if s.get("gateway_is_physical") else "the CARP VIP"
        pool = s.get("pool") or {}
        counts = ", ".join(f"{k} {v}" for k, v in pool.items())
        lines += [
            f"DHCP {s.get('interface')}: gateway {gw} ({where})  pool: {counts or '-'}",
            f"  Failover Status (my state / peer state): {failover_words(s)}",
        ]
        fo = s.get("failover")
        if isinstance(fo, dict):
            lines.append(
                f"    {fo.get('name')} {fo.get('role')}  link {fo.get('link')}  "
                f"bndupd queue {fo.get('bndupd_queue')}  acked {fo.get('bndupd_acked')}"
            )
        if s.get("warning"):
            lines.append(f"  WARNING: {s['warning']}")
        leases = s.get("leases") or []
        lines.append(
            f"  {'IP':<16}{'MAC':<19}{'HOSTNAME':<14}{'START':<21}{'END':<21}BINDING STATE"
        )
        for x in leases:
            lines.append(
                f"  {x.get('ip', ''):<16}{x.get('mac', ''):<19}{x.get('hostname') or '-':<14}"
                f"{x.get('start') or '-':<21}{x.get('end') or '-':<21}{x.get('binding_state')}"
            )
        if not leases:
            lines.append("  (no leases)")
    return lines
