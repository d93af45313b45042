"""One lease per address, as ISC dhcpd 4.4 keeps it, and the in-memory lease database.

The fields are those dhcpd persists in ``dhcpd.leases`` and ships in a failover BNDUPD, so a
lease can travel between the server, the failover peer and the lease file without loss:
``tstp`` is the potential expiry we announced to the peer, ``tsfp`` the one the peer
acknowledged (ISC's ``atsfp``), ``cltt`` the client's last transaction time. Times are Unix
seconds (ints), as on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address


class BindingState(IntEnum):
    """Binding states with their failover wire values (binding-status option, ISC FTS_*)."""

    FREE = 1
    ACTIVE = 2
    EXPIRED = 3
    RELEASED = 4
    ABANDONED = 5
    RESET = 6
    BACKUP = 7


@dataclass(frozen=True, slots=True)
class Lease:
    """A binding of one address; replaced whole (``dataclasses.replace``), never mutated."""

    address: IPv4Address
    state: BindingState
    starts: int = 0
    """Start of the binding's current state (STOS), Unix seconds."""
    ends: int | None = None
    """Lease expiration given to the client (None: none, as for FREE/BACKUP)."""
    tstp: int | None = None
    """Potential expiration time we sent the peer."""
    tsfp: int | None = None
    """Potential expiration time the peer acknowledged."""
    cltt: int | None = None
    """Client last transaction time."""
    hw_type: int = 1
    """ARP hardware type of ``hw_address`` (1 = Ethernet)."""
    hw_address: bytes = b""
    client_id: bytes | None = None
    """DHCP option 61 value as the client sent it."""
    hostname: str | None = None
    """Option 12 from the client, shown in Status > DHCP Leases."""
    reserved: bool = False
    """A static mapping (pfSense ``staticmap``): never given to another client."""


class LeaseDB:
    """The pool's leases by address, with indexes by hardware address and client id.

    Pure and in memory: the edge persists every change it is told about (write and fsync
    before the client's ACK or the peer's BNDACK leaves), and loads this back at start-up.
    """

    def __init__(self, leases: Iterator[Lease] | list[Lease] | tuple[Lease, ...] = ()) -> None:
        self._by_addr: dict[IPv4Address, Lease] = {}
        self._by_hw: dict[tuple[int, bytes], IPv4Address] = {}
        self._by_cid: dict[bytes, IPv4Address] = {}
        for lease in leases:
            self.put(lease)

    def __len__(self) -> int:
        return len(self._by_addr)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._by_addr.values()))

    def __contains__(self, address: object) -> bool:
        return address in self._by_addr

    def get(self, address: IPv4Address) -> Lease | None:
        return self._by_addr.get(address)

    def put(self, lease: Lease) -> Lease | None:
        """Store `lease` (replacing the one for its address); returns the old one."""
        old = self._by_addr.get(lease.address)
        if old is not None:
            self._unindex(old)
        self._by_addr[lease.address] = lease
        if lease.hw_address:
            self._by_hw[(lease.hw_type, lease.hw_address)] = lease.address
        if lease.client_id:
            self._by_cid[lease.client_id] = lease.address
        return old

    def by_hw(self, hw_type: int, hw_address: bytes) -> Lease | None:
        """The lease last bound to this hardware address, whatever its state."""
        addr = self._by_hw.get((hw_type, hw_address))
        return None if addr is None else self._by_addr.get(addr)

    def by_client_id(self, client_id: bytes) -> Lease | None:
        addr = self._by_cid.get(client_id)
        return None if addr is None else self._by_addr.get(addr)

    def in_state(self, *states: BindingState) -> list[Lease]:
        return [lease for lease in self._by_addr.values() if lease.state in states]

    def _unindex(self, lease: Lease) -> None:
        key = (lease.hw_type, lease.hw_address)
        if lease.hw_address and self._by_hw.get(key) == lease.address:
            del self._by_hw[key]
        if lease.client_id and self._by_cid.get(lease.client_id) == lease.address:
            del self._by_cid[lease.client_id]
