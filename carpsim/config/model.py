"""The node's configuration by pfSense section, as frozen dataclasses.

One `Config` is the whole document a node runs from (docs/config.md: the node owns its
configuration). Section and field names follow pfSense's config.xml where pfSense has the
concept (``virtualip.vip``, ``filter.rule``, ``nat.outbound.rule``, ``dhcpd.<if>``, ``hasync``),
so a config.xml maps onto it and the XML-RPC sync can send the same sections pfSense sends.
Values here are already validated: `carpsim.config.loader` builds them, `validate` checks the
cross-section rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from carpsim.web.config import WebConfig

DEFAULT_CONTROL = "/run/carpsim/carpsim.sock"
CONFIG_VERSION = "23.3"
"""pfSense's ``<version>`` of 2.7.1/2.7.2: what `host_firmware_version` reports as
``config_version`` and what the sync compares (pfSense rc.filter_synchronize)."""
HA_SYNC_PRIVILEGE = "system-xmlrpc-ha-sync"


class Action(Enum):
    PASS = "pass"  # noqa: S105 - a rule action, not a secret
    BLOCK = "block"
    REJECT = "reject"


class NatMode(Enum):
    AUTOMATIC = "automatic"
    HYBRID = "hybrid"
    MANUAL = "manual"
    """pfSense stores this mode as ``advanced``."""
    DISABLED = "disabled"


class AliasType(Enum):
    HOST = "host"
    NETWORK = "network"
    PORT = "port"


@dataclass(frozen=True)
class NodeSettings:
    """``[node]``: the daemon's own settings (unchanged from the original node config)."""

    name: str
    control: str = DEFAULT_CONTROL
    events_json: str | None = None
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    upscript: str | None = None
    downscript: str | None = None
    neutral: bool = False
    shutdown_scripts: bool = False


@dataclass(frozen=True)
class CarpDefaults:
    """``[carp]``: defaults every VIP inherits unless it sets the field itself."""

    password: str = ""
    advbase: int = 1
    advskew: int = 0
    preempt: bool = False
    master_down_formula: str = "freebsd"
    real_mac: bool = False
    deadratio: int = 3
    demote: int = 0
    strict: bool = False
    """carpsim-only strict adverts (docs/security.md); off = wire-compatible with BSD/ucarp."""


@dataclass(frozen=True)
class User:
    """``[[system.user]]``: a login the XML-RPC server accepts (besides ``hasync``'s own)."""

    name: str
    password: str
    privileges: tuple[str, ...] = ()


@dataclass(frozen=True)
class System:
    hostname: str = ""
    version: str = CONFIG_VERSION
    """The config version the sync compares; peers with a different one are refused."""
    webgui_port: int = 443
    """pfSense syncs to the *local* GUI port on the peer; carpsim's XML-RPC server listens on it."""
    users: tuple[User, ...] = ()


@dataclass(frozen=True)
class Interface:
    """``interfaces.<name>``: a logical interface (``wan``, ``lan``, ``opt1``...) on a device."""

    name: str
    device: str
    address: IPv4Interface
    descr: str = ""
    gateway: IPv4Address | None = None
    """The upstream gateway on this interface (pfSense: a WAN-type interface)."""
    carp_peers: tuple[IPv4Address, ...] = ()
    """The other cluster nodes' addresses here: when set, CARP (112) is accepted on this
    interface only from them and this node, and dropped (counted) from anyone else."""

    @property
    def network(self) -> IPv4Network:
        return self.address.network


@dataclass(frozen=True)
class VirtualIp:
    """``virtualip.vip`` of mode carp; the carpsim-only fields travel in the sync too."""

    interface: str
    vhid: int
    subnet: IPv4Interface
    """The VIP with the interface's prefix (pfSense: ``subnet`` + ``subnet_bits``)."""
    password: str
    advbase: int = 1
    advskew: int = 0
    descr: str = ""
    extra_subnets: tuple[IPv4Interface, ...] = ()
    """More addresses on the same VHID (old node configs allowed a list)."""
    preempt: bool = False
    master_down_formula: str = "freebsd"
    deadratio: int = 3
    demote: int = 0
    real_mac: bool = False
    peer: IPv4Address | None = None
    """Unicast adverts to this address instead of 224.0.0.18."""
    strict: bool = False
    """Strict adverts (a MAC over the whole advert, replay refused): carpsim peers only."""

    @property
    def key(self) -> tuple[str, int]:
        """VHIDs are unique per interface, not per node."""
        return (self.interface, self.vhid)

    @property
    def addresses(self) -> tuple[IPv4Interface, ...]:
        return (self.subnet, *self.extra_subnets)

    def carp_fields(self) -> tuple[object, ...]:
        """What decides whether the kernel side must be redone (pfSense's unchanged-VIP test)."""
        return (
            self.password, self.advskew, self.advbase, self.addresses, self.preempt,
            self.master_down_formula, self.deadratio, self.demote, self.real_mac, self.peer,
            self.strict,
        )  # fmt: skip


@dataclass(frozen=True)
class Endpoint:
    """A rule's source or destination, in pfSense's terms.

    Exactly one of: ``any``; ``network`` = an interface macro (``lan`` = "LAN net", ``lanip`` =
    "LAN address", ``(self)`` = every address of this firewall); ``address`` = an IPv4 address,
    a CIDR or an alias name. ``port`` is a port, a range ``a-b`` or a port alias.
    """

    any: bool = True
    network: str | None = None
    address: str | None = None
    port: str | None = None
    negate: bool = False

    def text(self) -> str:
        """The TOML spelling (``any``, ``lan net``, ``lan address``, ``(self)``, ``!10/8``)."""
        if self.network is not None:
            if self.network == "(self)":
                body = "(self)"
            elif self.network.endswith("ip"):
                body = f"{self.network[:-2]} address"
            else:
                body = f"{self.network} net"
        else:
            body = self.address if self.address is not None else "any"
        return ("!" if self.negate else "") + body


ANY = Endpoint()


@dataclass(frozen=True)
class FilterRule:
    interface: str
    action: Action = Action.PASS
    protocol: str | None = None
    """None = any; ``tcp``, ``udp``, ``tcp/udp``, ``icmp`` or another IP protocol name."""
    source: Endpoint = ANY
    destination: Endpoint = ANY
    icmptype: tuple[str, ...] = ()
    descr: str = ""
    nosync: bool = False
    disabled: bool = False
    log: bool = False
    tracker: int = 0
    """pfSense's unique rule id: how a diff recognises the same rule after edits elsewhere."""


@dataclass(frozen=True)
class FilterSection:
    rules: tuple[FilterRule, ...] = ()
    syn_only: bool = True
    """A new TCP flow only from a SYN (pf's ``flags S/SA``)."""
    tcp_loose: bool = False
    """conntrack's mid-stream pickup (``nf_conntrack_tcp_loose``); off as pf does."""


@dataclass(frozen=True)
class NatRule:
    """``nat.outbound.rule``: source NAT on the way out of `interface`."""

    interface: str
    source: Endpoint
    destination: Endpoint = ANY
    protocol: str | None = None
    target: IPv4Address | None = None
    """None = the interface's own address (pfSense: empty target); else a VIP."""
    static_port: bool = False
    """Keep source ports (pfSense ``staticnatport``); off = random ports, as pf rewrites them."""
    nonat: bool = False
    """pfSense "Do not NAT": matching traffic leaves untranslated."""
    descr: str = ""
    nosync: bool = False
    disabled: bool = False
    tracker: int = 0


@dataclass(frozen=True)
class NatSection:
    mode: NatMode = NatMode.AUTOMATIC
    rules: tuple[NatRule, ...] = ()


@dataclass(frozen=True)
class Alias:
    name: str
    type: AliasType
    entries: tuple[str, ...]
    """Addresses, CIDRs, ports or ranges, or names of other aliases (resolved when used)."""
    descr: str = ""
    nosync: bool = False


@dataclass(frozen=True)
class StaticMap:
    mac: str
    ipaddr: IPv4Address
    hostname: str | None = None
    descr: str = ""


@dataclass(frozen=True)
class Dhcpd:
    """``dhcpd.<if>``; `carpsim.config.dhcp.server_settings` turns it into the server's type."""

    interface: str
    enable: bool
    range_from: IPv4Address
    range_to: IPv4Address
    gateway: IPv4Address | None = None
    dnsservers: tuple[IPv4Address, ...] = ()
    domain: str = ""
    defaultleasetime: int = 7200
    maxleasetime: int = 86400
    failover_peerip: IPv4Address | None = None
    staticmaps: tuple[StaticMap, ...] = ()


@dataclass(frozen=True)
class StaticRoute:
    network: IPv4Network
    gateway: IPv4Address
    descr: str = ""
    disabled: bool = False


SYNC_TOGGLES = (
    "synchronizerules",
    "synchronizenat",
    "synchronizealiases",
    "synchronizedhcpd",
    "synchronizestaticroutes",
    "synchronizevirtualip",
)
"""pfSense's per-section toggles for the sections carpsim models (pfSense system_hasync.php)."""


@dataclass(frozen=True)
class HaSync:
    pfsyncenabled: bool = False
    pfsyncinterface: str | None = None
    pfsyncpeerip: IPv4Address | None = None
    synchronizetoip: IPv4Address | None = None
    username: str = "admin"
    password: str = ""
    """What we present to the peer and, equally, what our own XML-RPC server accepts."""
    toggles: frozenset[str] = frozenset()
    """The `SYNC_TOGGLES` that are on."""

    def on(self, toggle: str) -> bool:
        return toggle in self.toggles


@dataclass(frozen=True)
class StateSync:
    """``[statesync]`` as the original node config has it (docs/node-config.md)."""

    interface: str
    """The device of the SYNC link."""
    peer: IPv4Address | None = None
    enabled: bool = True
    group: bool = False
    demote: int = 32
    tuning: tuple[tuple[str, float | int | bool], ...] = ()
    """The replicator knobs given in the file (flush_interval, mtu, reliable ...)."""
    key: str | None = field(default=None, repr=False)
    """The shared sync key (docs/security.md); never in a repr or a log."""


@dataclass(frozen=True)
class Config:
    node: NodeSettings
    carp: CarpDefaults = field(default_factory=CarpDefaults)
    system: System = field(default_factory=System)
    interfaces: tuple[Interface, ...] = ()
    virtualip: tuple[VirtualIp, ...] = ()
    aliases: tuple[Alias, ...] = ()
    filter: FilterSection = field(default_factory=FilterSection)
    nat: NatSection = field(default_factory=NatSection)
    dhcpd: tuple[Dhcpd, ...] = ()
    staticroutes: tuple[StaticRoute, ...] = ()
    hasync: HaSync = field(default_factory=HaSync)
    statesync: StateSync | None = None
    web: WebConfig | None = None
    """``[web]``: the node's status pages (carpsim.web.config), kept as the node config has it."""

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def interface_by_device(self, device: str) -> Interface | None:
        return next((i for i in self.interfaces if i.device == device), None)

    def alias(self, name: str) -> Alias | None:
        return next((a for a in self.aliases if a.name == name), None)

    def vips_on(self, interface: str) -> tuple[VirtualIp, ...]:
        return tuple(v for v in self.virtualip if v.interface == interface)

    def own_addresses(self) -> tuple[IPv4Address, ...]:
        """Every address of this firewall: interface addresses, then VIPs ("(self)")."""
        out = [i.address.ip for i in self.interfaces]
        out += [a.ip for v in self.virtualip for a in v.addresses]
        return tuple(out)
