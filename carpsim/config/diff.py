"""What changed between two configs, so the node reconfigures only that.

VHIDs are compared the way pfSense's receiver decides whether to redo a CARP VIP (its
xmlrpc.php): by password, advskew, advbase and addresses (plus carpsim's own CARP knobs). A
description edit changes the section but touches no VHID, so nothing flaps. Rules are matched
by tracker, so an edit elsewhere does not make every rule look new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TypeVar

from carpsim.config.model import Config

K = TypeVar("K")
V = TypeVar("V")
SECTIONS = tuple(f.name for f in fields(Config))
RULESET_SECTIONS = frozenset({"interfaces", "virtualip", "aliases", "filter", "nat", "dhcpd",
                              "statesync"})  # fmt: skip
"""Sections the nftables ruleset is rendered from."""


@dataclass(frozen=True)
class ConfigDiff:
    sections: frozenset[str] = frozenset()
    vhids_added: tuple[tuple[str, int], ...] = ()
    vhids_removed: tuple[tuple[str, int], ...] = ()
    vhids_changed: tuple[tuple[str, int], ...] = ()
    rules_added: tuple[int, ...] = ()
    rules_removed: tuple[int, ...] = ()
    rules_changed: tuple[int, ...] = ()
    rules_reordered: bool = False
    nat_rules_added: tuple[int, ...] = ()
    nat_rules_removed: tuple[int, ...] = ()
    nat_rules_changed: tuple[int, ...] = ()
    dhcpd_changed: tuple[str, ...] = ()
    """Interfaces whose DHCP server settings changed (added, removed or edited)."""

    @property
    def empty(self) -> bool:
        return not self.sections

    @property
    def ruleset_changed(self) -> bool:
        return bool(self.sections & RULESET_SECTIONS)

    def summary(self) -> str:
        if self.empty:
            return "no change"
        parts = [",".join(sorted(self.sections))]
        for label, items in (
            ("vhid+", self.vhids_added), ("vhid-", self.vhids_removed),
            ("vhid~", self.vhids_changed), ("rule+", self.rules_added),
            ("rule-", self.rules_removed), ("rule~", self.rules_changed),
        ):  # fmt: skip
            if items:
                parts.append(f"{label}{list(items)}")
        return " ".join(parts)


def _compare(old: Mapping[K, V], new: Mapping[K, V]) -> tuple[tuple[K, ...], ...]:
    added = tuple(k for k in new if k not in old)
    removed = tuple(k for k in old if k not in new)
    changed = tuple(k for k in new if k in old and old[k] != new[k])
    return added, removed, changed


def diff(old: Config, new: Config) -> ConfigDiff:
    sections = frozenset(s for s in SECTIONS if getattr(old, s) != getattr(new, s))
    va, vr, vc = _compare(
        {v.key: v.carp_fields() for v in old.virtualip},
        {v.key: v.carp_fields() for v in new.virtualip},
    )
    old_rules = {r.tracker: r for r in old.filter.rules}
    new_rules = {r.tracker: r for r in new.filter.rules}
    ra, rr, rc = _compare(old_rules, new_rules)
    kept_old = [t for t in old_rules if t in new_rules]
    kept_new = [t for t in new_rules if t in old_rules]
    na, nr, nc = _compare(
        {r.tracker: r for r in old.nat.rules}, {r.tracker: r for r in new.nat.rules}
    )
    od = {d.interface: d for d in old.dhcpd}
    nd = {d.interface: d for d in new.dhcpd}
    dhcp = {k for part in _compare(od, nd) for k in part}
    if {"interfaces", "virtualip"} & sections:
        # the server's own address and its failover role come from these sections
        dhcp |= set(od) | set(nd)
    return ConfigDiff(
        sections=sections,
        vhids_added=va,
        vhids_removed=vr,
        vhids_changed=vc,
        rules_added=ra,
        rules_removed=rr,
        rules_changed=rc,
        rules_reordered=kept_old != kept_new,
        nat_rules_added=na,
        nat_rules_removed=nr,
        nat_rules_changed=nc,
        dhcpd_changed=tuple(sorted(dhcp)),
    )
