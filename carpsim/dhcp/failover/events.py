"""Actions the failover machine asks its driver to carry out, in list order."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.lease import Lease


@dataclass(frozen=True)
class StateRecord:
    """The ``failover peer "x" state { my state; partner state; }`` block of dhcpd.leases."""

    my_state: FailoverState
    my_stos: int
    partner_state: FailoverState | None = None
    partner_stos: int | None = None
    mclt: int | None = None
    """The MCLT in force (a secondary learns it from CONNECT), so PARTNER-DOWN rules survive a
    restart before the peer is met again."""


@dataclass(frozen=True)
class Send:
    """Write these bytes (one or more whole messages) on the failover link."""

    data: bytes
    types: tuple[str, ...] = ()
    """Message type names in `data`, for metrics and logs."""


@dataclass(frozen=True)
class Connect:
    """Open a TCP connection to the peer (the edge ignores it while a link is up)."""

    peer: IPv4Address
    port: int


@dataclass(frozen=True)
class Close:
    """Drop the link (RST/FIN); `reason` is a short word for the log."""

    reason: str


@dataclass(frozen=True)
class PersistLease:
    """Write this lease to the lease file (durably, before the BNDACK that follows it)."""

    lease: Lease


@dataclass(frozen=True)
class PersistFailoverState:
    record: StateRecord


@dataclass(frozen=True)
class StateChanged:
    old: FailoverState
    new: FailoverState
    reason: str


@dataclass(frozen=True)
class PeerStateChanged:
    old: FailoverState | None
    new: FailoverState
    startup: bool


@dataclass(frozen=True)
class CountDrop:
    """Something received was refused or malformed; count under `reason`."""

    reason: str
    detail: str = ""


Action = (
    Send
    | Connect
    | Close
    | PersistLease
    | PersistFailoverState
    | StateChanged
    | PeerStateChanged
    | CountDrop
)
