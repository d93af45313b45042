"""What the node's subsystems are built from, derived from one `Config`.

CARP gets one `CarpVhid` per VIP (the pure `CarpConfig` plus the device it lives on), the DHCP
server one `DhcpServerSettings` per enabled ``dhcpd.<if>``. Building them is also validation: the
protocol types check their own ranges, and their errors come back naming the config field.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from carpsim.config.model import AliasType, Config, Dhcpd, Endpoint, VirtualIp
from carpsim.dhcp.settings import (
    DhcpServerSettings,
    FailoverRole,
    FailoverSettings,
    StaticMapping,
)
from carpsim.errors import ConfigError
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CARP_GROUP_V4, MasterDownFormula

PRIMARY_SKEW_BELOW = 20
"""pfSense makes a node the DHCP failover primary when its VIP there has advskew < 20."""
MAX_ALIAS_DEPTH = 8


@dataclass(frozen=True)
class CarpVhid:
    """One VHID as the edge needs it (the same shape as runtime.nodeconfig.VhidSpec)."""

    carp: CarpConfig
    interface: str
    """The device (parent interface) the VHID lives on."""
    real_mac: bool = False
    peer: IPv4Address | None = None


def carp_vhid(config: Config, vip: VirtualIp, where: str) -> CarpVhid:
    iface = config.interface(vip.interface)
    if iface is None:
        raise ConfigError(f"{where}.interface", f"no interfaces.{vip.interface}")
    if not vip.password:
        raise ConfigError(f"{where}.password", "a password is required (ucarp refuses none)")
    try:
        carp = CarpConfig(
            vhid=vip.vhid,
            vips=vip.addresses,
            srcip=iface.address.ip,
            password=vip.password.encode(),
            advbase=vip.advbase,
            advskew=vip.advskew,
            preempt=vip.preempt,
            deadratio=vip.deadratio,
            master_down_formula=MasterDownFormula(vip.master_down_formula),
            demote=vip.demote,
            dst=vip.peer if vip.peer is not None else CARP_GROUP_V4,
            strict=vip.strict,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.field}", exc.message) from exc
    return CarpVhid(carp, iface.device, vip.real_mac, vip.peer)


def carp_vhids(config: Config) -> tuple[CarpVhid, ...]:
    return tuple(
        carp_vhid(config, v, f"virtualip.vip[{i}]") for i, v in enumerate(config.virtualip)
    )


def failover_role(config: Config, interface: str) -> FailoverRole:
    """pfSense (services.inc): primary iff a CARP VIP on the interface has advskew < 20."""
    skews = [v.advskew for v in config.vips_on(interface)]
    return (
        FailoverRole.PRIMARY
        if any(s < PRIMARY_SKEW_BELOW for s in skews)
        else FailoverRole.SECONDARY
    )


def dhcp_settings(config: Config, d: Dhcpd) -> DhcpServerSettings:
    where = f"dhcpd.{d.interface}"
    iface = config.interface(d.interface)
    if iface is None:
        raise ConfigError(where, f"no interfaces.{d.interface} to serve on")
    failover = None
    try:
        if d.failover_peerip is not None:
            failover = FailoverSettings(
                peer=d.failover_peerip,
                role=failover_role(config, d.interface),
                name=f"dhcp_{d.interface}",
            )
        return DhcpServerSettings(
            interface=iface.device,
            subnet=iface.network,
            interface_address=iface.address.ip,
            range_start=d.range_from,
            range_end=d.range_to,
            gateway=d.gateway,
            dns_servers=d.dnsservers,
            domain=d.domain,
            default_lease_time=d.defaultleasetime,
            max_lease_time=d.maxleasetime,
            staticmaps=tuple(
                StaticMapping(bytes.fromhex(m.mac.replace(":", "")), m.ipaddr, m.hostname, m.descr)
                for m in d.staticmaps
            ),
            failover=failover,
        )
    except ConfigError as exc:
        # name the field as the file spells it
        field = {"failover.peer": "failover_peerip", "range.start": "range.from",
                 "range.end": "range.to"}.get(exc.field, exc.field)  # fmt: skip
        raise ConfigError(f"{where}.{field}", exc.message) from exc


def dhcp_servers(config: Config) -> tuple[DhcpServerSettings, ...]:
    """The DHCP server's settings, one per enabled ``dhcpd.<if>``."""
    return tuple(dhcp_settings(config, d) for d in config.dhcpd if d.enable)


def resolve_alias(
    config: Config, name: str, where: str, allowed: frozenset[AliasType], depth: int = 0
) -> tuple[str, ...]:
    """The alias's entries with nested aliases expanded (pfSense allows nesting)."""
    alias = config.alias(name)
    if alias is None:
        raise ConfigError(where, f'unknown alias "{name}"')
    if alias.type not in allowed:
        kinds = " or ".join(sorted(k.value for k in allowed))
        raise ConfigError(where, f'alias "{name}" is a {alias.type.value} alias, need {kinds}')
    if depth > MAX_ALIAS_DEPTH:
        raise ConfigError(where, f'alias "{name}" nests deeper than {MAX_ALIAS_DEPTH} (a loop?)')
    out: list[str] = []
    for entry in alias.entries:
        if entry[0].isdigit():
            out.append(entry)
        else:
            out += resolve_alias(config, entry, where, allowed, depth + 1)
    return tuple(dict.fromkeys(out))


ADDRESS_ALIASES = frozenset({AliasType.HOST, AliasType.NETWORK})
PORT_ALIASES = frozenset({AliasType.PORT})


def endpoint_addresses(config: Config, ep: Endpoint, where: str) -> tuple[str, ...] | None:
    """The addresses/networks an endpoint stands for; None = any."""
    if ep.any:
        return None
    if ep.network is not None:
        if ep.network == "(self)":
            return tuple(str(a) for a in config.own_addresses())
        address = ep.network.endswith("ip")  # interface names never end in "ip" (loader)
        name = ep.network.removesuffix("ip")
        iface = config.interface(name)
        if iface is None:
            raise ConfigError(where, f'unknown interface "{name}" in "{ep.text()}"')
        return (str(iface.address.ip),) if address else (str(iface.network),)
    assert ep.address is not None
    if ep.address[0].isdigit():
        return (ep.address,)
    return resolve_alias(config, ep.address, where, ADDRESS_ALIASES)


def endpoint_ports(config: Config, ep: Endpoint, where: str) -> tuple[str, ...] | None:
    if ep.port is None:
        return None
    if ep.port[0].isdigit():
        return (ep.port,)
    return resolve_alias(config, ep.port, where + "_port", PORT_ALIASES)


def overlapping(entries: tuple[str, ...]) -> tuple[str, str] | None:
    """Two entries of one set that overlap (nft refuses such an anonymous set)."""
    nets = [IPv4Network(e) for e in entries]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.overlaps(b):
                return (str(a), str(b))
    return None
