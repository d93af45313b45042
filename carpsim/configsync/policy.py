"""What the master sends and what the backup makes of it, as pfSense's High Avail. Sync does.

Sender (rc.filter_synchronize): the sections of the toggles that are on, each sent even when
empty (so deleting the last rule propagates); items marked ``nosync`` stripped from filter
rules, outbound NAT rules and aliases; every CARP VIP's advskew +100 capped at 254 and advbase
capped at 254; each DHCP failover peer rewritten to the master's own address on that interface.

Receiver (xmlrpc.php restore_config_section): refuses a loop (its own ``synchronizetoip`` is the
caller: logged, answered true, nothing applied); replaces filter, nat, aliases and dhcpd whole;
replaces the VIP and static-route lists; keeps everything else of its own (hasync, interfaces,
system, node and state-sync settings). The merged result is re-validated as a whole before
anything is applied.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carpsim.config import dump, loader
from carpsim.config.diff import ConfigDiff, diff
from carpsim.config.model import Config
from carpsim.configsync import pfsense
from carpsim.errors import ConfigError

TOGGLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "synchronizerules": ("filter",),
    "synchronizenat": ("nat",),
    "synchronizealiases": ("aliases",),
    "synchronizedhcpd": ("dhcpd",),
    "synchronizestaticroutes": ("staticroutes", "gateways"),
    "synchronizevirtualip": ("virtualip",),
}
NOSYNC_LISTS = (("filter", "rule"), ("aliases", "alias"))
"""Plus ``nat.outbound.rule``; the other pfSense paths (nat/rule, dnsmasq/hosts, ipsec/tunnel)
are not modelled."""
SKEW_BUMP = 100
MAX_SKEW = 254
REPLACED = ("filter", "nat", "aliases", "dhcpd")
"""Sections the receiver replaces whole, even when sent empty."""


def sections_to_send(config: Config) -> tuple[str, ...]:
    out: list[str] = []
    for toggle, sections in TOGGLE_SECTIONS.items():
        if config.hasync.on(toggle):
            out += sections
    return tuple(out)


def build_payload(config: Config) -> dict[str, Any] | None:
    """The ``restore_config_section`` struct; None when this node does not push (no
    ``synchronizetoip``) or "Nothing has been configured to be synched" (no toggle on)."""
    names = sections_to_send(config)
    if not names or config.hasync.synchronizetoip is None:
        return None
    payload = {name: pfsense.to_pfsense(config, name) for name in names}
    return transform(payload, config)


def transform(payload: dict[str, Any], master: Config) -> dict[str, Any]:
    """The master's rewrites, on the pfSense-shaped payload (a deep copy is changed)."""
    out = copy.deepcopy(payload)
    for section, key in NOSYNC_LISTS:
        if section in out and isinstance(out[section], dict):
            out[section][key] = [i for i in out[section].get(key, []) if "nosync" not in i]
    outbound = out.get("nat", {}).get("outbound") if isinstance(out.get("nat"), dict) else None
    if isinstance(outbound, dict):
        outbound["rule"] = [r for r in outbound.get("rule", []) if "nosync" not in r]
    for vip in out.get("virtualip", {}).get("vip", []) if "virtualip" in out else []:
        if vip.get("advskew", "") != "":
            vip["advskew"] = str(min(int(vip["advskew"]) + SKEW_BUMP, MAX_SKEW))
        if vip.get("advbase", "") != "":
            vip["advbase"] = str(min(int(vip["advbase"]), MAX_SKEW))
    for ifname, body in out.get("dhcpd", {}).items() if "dhcpd" in out else []:
        own = master.interface(ifname)
        if body.get("failover_peerip") and own is not None:
            # the backup's peer is us: our own address on that interface (pfSense #11519)
            body["failover_peerip"] = str(own.address.ip)
    return out


def versions_match(remote: object, local: str) -> bool:
    """PHP's loose ``==`` on the config versions: numeric strings compare as numbers."""
    text = str(remote) if isinstance(remote, str | int | float) else None
    if text is None:
        return False
    try:
        return float(text) == float(local)
    except ValueError:
        return text == local


def check_version(reply: object, local: str) -> str | None:
    """None when the peer may be synced; otherwise pfSense's reason for skipping."""
    remote = reply.get("config_version") if isinstance(reply, Mapping) else None
    if remote is None:
        return "the other member's configuration version could not be determined; not syncing"
    if not versions_match(remote, local):
        return (
            f"the other member is on a different configuration version ({remote}, we are "
            f"{local}); not syncing"
        )
    return None


def is_sync_loop(local: Config, remote_addr: str) -> bool:
    """pfSense: "Disallowing CARP sync loop" when our own sync target is the caller."""
    target = local.hasync.synchronizetoip
    return target is not None and str(target) == remote_addr


def merge(local: Config, payload: Mapping[str, Any]) -> Config:
    """The receiver's new config: sent sections replace ours, the rest stays; fully validated."""
    if not isinstance(payload, Mapping):
        raise ConfigError("sections", "must be a struct of config sections")
    unknown = [k for k in payload if k not in pfsense.SECTIONS]
    if unknown:
        raise ConfigError(f"sections.{unknown[0]}", "not a section carpsim syncs")
    names = {i.name for i in local.interfaces}
    data = dump.to_data(local)
    if "filter" in payload:
        data["filter"] = pfsense.toml_filter(payload["filter"], names)
    if "nat" in payload:
        data["nat"] = pfsense.toml_nat(payload["nat"], names)
    if "aliases" in payload:
        data["aliases"] = pfsense.toml_aliases(payload["aliases"], names)
    if "dhcpd" in payload:
        data["dhcpd"] = pfsense.toml_dhcpd(payload["dhcpd"], names)
    if "virtualip" in payload:
        data["virtualip"] = pfsense.toml_virtualip(payload["virtualip"], names)
    if "staticroutes" in payload:
        data["staticroutes"] = pfsense.toml_staticroutes(
            payload["staticroutes"], payload.get("gateways")
        )
    return loader.parse(data)


@dataclass(frozen=True)
class Received:
    """What `receive` decided; `config` is None when nothing is to be applied."""

    config: Config | None
    diff: ConfigDiff
    loop: bool = False
    sections: tuple[str, ...] = ()


def receive(local: Config, payload: Mapping[str, Any], remote_addr: str) -> Received:
    """Loop guard, merge and diff; raises `ConfigError` (-> a fault) when the merge is invalid."""
    if is_sync_loop(local, remote_addr):
        return Received(None, ConfigDiff(), loop=True)
    merged = merge(local, payload)
    return Received(merged, diff(local, merged), sections=tuple(sorted(payload)))
