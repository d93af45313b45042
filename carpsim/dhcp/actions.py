"""What the DHCP server machine asks the edge to do (frozen; executed in list order).

Order matters: a `LeaseChanged` always precedes the `Transmit` that tells a client about it,
and the edge makes the change durable (write + fsync) before it sends anything after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.lease import Lease


@dataclass(frozen=True)
class Transmit:
    """Send `message` (RFC 2131 §4.1 addressing already decided by the machine).

    ``dst_mac`` set: the client has no address yet, so the edge builds the Ethernet frame
    itself (dhcpd's LPF path) and sends it to that MAC. ``broadcast``: to 255.255.255.255 and
    ff:ff:ff:ff:ff:ff. Neither: an ordinary UDP datagram (relay on port 67, or a client that
    has an address: ciaddr).
    """

    message: DhcpMessage
    dst_ip: IPv4Address
    dst_port: int
    dst_mac: bytes | None = None
    broadcast: bool = False
    max_size: int | None = None
    """The client's option 57, for the encoder's overload decision."""


@dataclass(frozen=True)
class LeaseChanged:
    """A binding changed: persist it (lease file) and tell failover (BNDUPD)."""

    lease: Lease
    old: Lease | None
    in_pool: bool = True
    """False for a static mapping outside the range: a failover peer must not get it."""


@dataclass(frozen=True)
class PingCheck:
    """ICMP-echo `address` before offering it; answer with `DhcpServer.ping_result`."""

    address: IPv4Address


@dataclass(frozen=True)
class Log:
    """A dhcpd-style log line (``DHCPDISCOVER from ... via eth0``)."""

    text: str


Action = Transmit | LeaseChanged | PingCheck | Log
