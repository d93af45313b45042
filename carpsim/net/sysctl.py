"""Per-interface IPv4 sysctls a CARP node needs, set in the current network namespace.

Why each one (the arp_ignore/rp_filter pitfalls of keepalived's use_vmac, its #364/#1040):

- ``arp_ignore=1`` on the parent: answer ARP only for addresses configured on the interface the
  request came in on, so the parent never answers for a VIP that lives on the macvlan with its
  real MAC (which would undo the virtual-MAC takeover on the switch).
- ``arp_announce=2``: ARP requests we send use the best local source for the target, never the
  VIP of another interface.
- ``rp_filter=2`` (loose) on the macvlan: traffic to the VIP arrives on the macvlan while the
  route back to the sender points at the parent; strict mode would drop it.
- ``disable_ipv6=1`` on the macvlan: no link-local, DAD or MLD frames from the virtual MAC.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path("/proc/sys/net")


def _path(family: str, ifname: str, key: str) -> Path:
    return _ROOT / family / "conf" / ifname / key


def read(ifname: str, key: str, family: str = "ipv4") -> str:
    return _path(family, ifname, key).read_text().strip()


def write(ifname: str, key: str, value: int | str, family: str = "ipv4") -> None:
    path = _path(family, ifname, key)
    if path.exists():
        path.write_text(f"{value}\n")


PARENT_SETTINGS: tuple[tuple[str, str, int], ...] = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "arp_announce", 2),
)

MACVLAN_SETTINGS: tuple[tuple[str, str, int], ...] = (
    ("ipv4", "arp_ignore", 1),
    ("ipv4", "arp_announce", 2),
    ("ipv4", "rp_filter", 2),
    ("ipv4", "accept_local", 1),
    ("ipv6", "disable_ipv6", 1),
)


def apply(ifname: str, settings: tuple[tuple[str, str, int], ...]) -> None:
    for family, key, value in settings:
        write(ifname, key, value, family)


def prepare_parent(ifname: str) -> None:
    apply(ifname, PARENT_SETTINGS)


def prepare_macvlan(ifname: str) -> None:
    apply(ifname, MACVLAN_SETTINGS)
