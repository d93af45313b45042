"""Cross-section validation: every reference resolves before anything is applied.

The loader checks each value on its own; this checks how sections refer to each other (a VIP on
an interface that exists, VHIDs unique per interface, aliases that resolve, NAT targets that are
VIPs of this node ...). Only what makes a config unusable is an error here; what is valid but
breaks HA (the seed's mistakes) is `carpsim.config.lint`'s business.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from carpsim.config import derive
from carpsim.config.model import AliasType, Config, Endpoint
from carpsim.errors import ConfigError


def validate(config: Config) -> None:
    _interfaces(config)
    _vips(config)
    _aliases(config)
    for i, rule in enumerate(config.filter.rules):
        where = f"filter.rule[{i}]"
        _interface_ref(config, rule.interface, f"{where}.interface")
        _endpoint(config, rule.source, f"{where}.source")
        _endpoint(config, rule.destination, f"{where}.destination")
    for i, nat in enumerate(config.nat.rules):
        where = f"nat.outbound.rule[{i}]"
        _interface_ref(config, nat.interface, f"{where}.interface")
        _endpoint(config, nat.source, f"{where}.source")
        _endpoint(config, nat.destination, f"{where}.destination")
        if nat.target is not None and nat.target not in _vip_addresses(config):
            raise ConfigError(f"{where}.target", f"{nat.target} is not a VIP of this node")
    seen_dhcp: set[str] = set()
    for d in config.dhcpd:
        derive.dhcp_settings(config, d)
        seen_dhcp.add(d.interface)
    for i, route in enumerate(config.staticroutes):
        if not any(route.gateway in iface.network for iface in config.interfaces):
            raise ConfigError(
                f"staticroutes.route[{i}].gateway", f"{route.gateway} is on no interface's subnet"
            )
    _hasync(config)


def _interfaces(config: Config) -> None:
    devices: dict[str, str] = {}
    for iface in config.interfaces:
        where = f"interfaces.{iface.name}"
        if iface.device in devices:
            raise ConfigError(
                f"{where}.device", f"{iface.device} is also interfaces.{devices[iface.device]}"
            )
        devices[iface.device] = iface.name
        for other in config.interfaces:
            if other is iface:
                break
            if other.network.overlaps(iface.network):
                raise ConfigError(
                    f"{where}.address", f"{iface.network} overlaps interfaces.{other.name}"
                )


def _vips(config: Config) -> None:
    seen: dict[tuple[str, int], int] = {}
    addresses: dict[IPv4Address, str] = {
        i.address.ip: f"interfaces.{i.name}" for i in config.interfaces
    }
    for i, vip in enumerate(config.virtualip):
        where = f"virtualip.vip[{i}]"
        _interface_ref(config, vip.interface, f"{where}.interface")
        if vip.key in seen:
            raise ConfigError(
                f"{where}.vhid",
                f"VHID {vip.vhid} is already virtualip.vip[{seen[vip.key]}] on {vip.interface}",
            )
        seen[vip.key] = i
        iface = config.interface(vip.interface)
        assert iface is not None
        for address in vip.addresses:
            if address.ip not in iface.network and address.network.prefixlen != 32:
                raise ConfigError(f"{where}.subnet", f"{address} is not on {iface.network}")
            if address.ip in addresses:
                raise ConfigError(
                    f"{where}.subnet", f"{address.ip} is already {addresses[address.ip]}"
                )
            addresses[address.ip] = where
        derive.carp_vhid(config, vip, where)


def _aliases(config: Config) -> None:
    names: set[str] = set()
    for alias in config.aliases:
        where = f"aliases.{alias.name}"
        if alias.name.lower() in names:
            raise ConfigError(where, "defined twice (alias names are case-insensitive)")
        names.add(alias.name.lower())
        if config.interface(alias.name.lower()) is not None and alias.name.lower() == alias.name:
            raise ConfigError(where, "an alias must not be named like an interface")
        allowed = {
            AliasType.HOST: frozenset({AliasType.HOST}),
            AliasType.NETWORK: derive.ADDRESS_ALIASES,
            AliasType.PORT: derive.PORT_ALIASES,
        }[alias.type]
        entries = derive.resolve_alias(config, alias.name, f"{where}.address", allowed)
        if alias.type is not AliasType.PORT:
            clash = derive.overlapping(entries)
            if clash is not None:
                raise ConfigError(f"{where}.address", f"{clash[0]} overlaps {clash[1]}")


def _interface_ref(config: Config, name: str, where: str) -> None:
    if config.interface(name) is None:
        known = ", ".join(i.name for i in config.interfaces) or "none"
        raise ConfigError(where, f'unknown interface "{name}" (interfaces: {known})')


def _endpoint(config: Config, ep: Endpoint, where: str) -> None:
    entries = derive.endpoint_addresses(config, ep, where)
    if entries is not None and len(entries) > 1 and ep.network != "(self)":
        clash = derive.overlapping(entries)
        if clash is not None:
            raise ConfigError(where, f"{clash[0]} overlaps {clash[1]}")
    derive.endpoint_ports(config, ep, where)


def _vip_addresses(config: Config) -> set[IPv4Address]:
    return {a.ip for v in config.virtualip for a in v.addresses}


def _hasync(config: Config) -> None:
    h = config.hasync
    if h.pfsyncinterface is not None:
        _interface_ref(config, h.pfsyncinterface, "hasync.pfsyncinterface")
    if h.pfsyncenabled and h.pfsyncinterface is None:
        raise ConfigError("hasync.pfsyncinterface", "required when pfsyncenabled = true")
    if h.synchronizetoip is not None and not h.password:
        raise ConfigError("hasync.password", "required when synchronizetoip is set")
    sync = config.statesync
    if h.pfsyncenabled and sync is not None and h.pfsyncinterface is not None:
        iface = config.interface(h.pfsyncinterface)
        assert iface is not None
        if sync.interface != iface.device:
            raise ConfigError(
                "statesync.interface",
                f"{sync.interface}, but hasync.pfsyncinterface is on {iface.device}",
            )
        if h.pfsyncpeerip is not None and sync.peer != h.pfsyncpeerip:
            raise ConfigError(
                "statesync.peer", f"{sync.peer} but hasync.pfsyncpeerip is {h.pfsyncpeerip}"
            )
