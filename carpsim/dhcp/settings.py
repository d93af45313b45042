"""Per-interface DHCP server settings, by pfSense's ``dhcpd/<if>`` section.

Frozen and validated at construction: every error is a `ConfigError` naming the field (relative
to the section: the config loader prefixes ``dhcpd.<if>.``). Defaults are pfSense's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Network

from carpsim.errors import ConfigError


class FailoverRole(Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


PFSENSE_PRIMARY_PORT = 519
PFSENSE_SECONDARY_PORT = 520


@dataclass(frozen=True)
class StaticMapping:
    """pfSense ``staticmap``: this MAC always gets this address."""

    mac: bytes
    ipaddr: IPv4Address
    hostname: str | None = None
    descr: str = ""


@dataclass(frozen=True)
class FailoverSettings:
    """The ``failover peer "dhcp_<if>"`` block pfSense generates (services.inc)."""

    peer: IPv4Address
    """The other node's address on this interface (never the VIP)."""
    role: FailoverRole
    """pfSense: primary on the node whose VIP on this interface has advskew < 20."""
    address: IPv4Address | None = None
    """Our own address the link binds to (None: the interface address)."""
    name: str = ""
    """Relationship name; pfSense uses ``dhcp_<if>`` (filled in by the loader when empty)."""
    port: int | None = None
    """Our listening port (None: 519 as primary, 520 as secondary)."""
    peer_port: int | None = None
    mclt: int = 600
    split: int = 128
    """Buckets 0..split-1 are the primary's (RFC 3074, ISC semantics); 0..256."""
    max_response_delay: int = 10
    max_unacked_updates: int = 10
    load_balance_max_seconds: int = 3
    auto_partner_down: int = 0
    """Seconds in communications-interrupted before partner-down; 0 = off (pfSense)."""

    def __post_init__(self) -> None:
        if not 0 <= self.split <= 256:
            raise ConfigError("failover.split", f"must be 0..256, not {self.split}")
        for name in ("mclt", "max_response_delay", "max_unacked_updates"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"failover.{name}", "must be > 0")
        for name in ("load_balance_max_seconds", "auto_partner_down"):
            if getattr(self, name) < 0:
                raise ConfigError(f"failover.{name}", "must be >= 0")
        for name in ("port", "peer_port"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(f"failover.{name}", f"must be 1..65535, not {value}")

    @property
    def my_port(self) -> int:
        if self.port is not None:
            return self.port
        primary = self.role is FailoverRole.PRIMARY
        return PFSENSE_PRIMARY_PORT if primary else PFSENSE_SECONDARY_PORT

    @property
    def their_port(self) -> int:
        if self.peer_port is not None:
            return self.peer_port
        primary = self.role is FailoverRole.PRIMARY
        return PFSENSE_SECONDARY_PORT if primary else PFSENSE_PRIMARY_PORT


@dataclass(frozen=True)
class DhcpServerSettings:
    """One interface's DHCP server."""

    interface: str
    subnet: IPv4Network
    interface_address: IPv4Address
    """The node's own address on the interface: server identifier, and pfSense's default
    gateway and DNS when those are left empty (the HA pitfall `carpsim lint` reports)."""
    range_start: IPv4Address
    range_end: IPv4Address
    gateway: IPv4Address | None = None
    """Router option; None = the interface's own address (pfSense behaviour)."""
    dns_servers: tuple[IPv4Address, ...] = ()
    """Empty = the interface's own address (pfSense behaviour)."""
    domain: str = ""
    default_lease_time: int = 7200
    max_lease_time: int = 86400
    staticmaps: tuple[StaticMapping, ...] = ()
    failover: FailoverSettings | None = None
    ping_check: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.interface_address not in self.subnet:
            raise ConfigError("interface_address", f"{self.interface_address} not in {self.subnet}")
        for name in ("range_start", "range_end"):
            if getattr(self, name) not in self.subnet:
                raise ConfigError(f"range.{name.removeprefix('range_')}", "outside the subnet")
        if self.range_end < self.range_start:
            raise ConfigError("range.end", "before range.start")
        if self.default_lease_time <= 0:
            raise ConfigError("default_lease_time", "must be > 0")
        if self.max_lease_time < self.default_lease_time:
            raise ConfigError("max_lease_time", "must be >= default_lease_time")
        if self.failover is not None and self.failover.peer not in self.subnet:
            raise ConfigError("failover.peer", f"{self.failover.peer} not on {self.subnet}")
        seen: set[IPv4Address] = set()
        for i, m in enumerate(self.staticmaps):
            if m.ipaddr not in self.subnet:
                raise ConfigError(f"staticmap[{i}].ipaddr", f"{m.ipaddr} not in {self.subnet}")
            if m.ipaddr in seen:
                raise ConfigError(f"staticmap[{i}].ipaddr", f"{m.ipaddr} mapped twice")
            seen.add(m.ipaddr)

    @property
    def router(self) -> IPv4Address:
        """What clients get as option 3."""
        return self.gateway if self.gateway is not None else self.interface_address

    @property
    def dns(self) -> tuple[IPv4Address, ...]:
        return self.dns_servers or (self.interface_address,)

    @property
    def gateway_is_physical(self) -> bool:
        """True when clients are handed this node's own address: it dies with the node."""
        return self.router == self.interface_address
