"""What the DHCP server asks of failover before it answers a client.

The server machine (`carpsim.dhcp.server`) never decides failover rules itself: it asks a
`FailoverPolicy`. `Standalone` is the policy of a server without a peer; the failover machine
(`carpsim.dhcp.failover`) implements the same protocol from its state (service state, load
balancing by the RFC 3074 hash, own pool only, the MCLT rule). Lease changes flow the other way
as actions the node routes to the failover machine (which queues a BNDUPD) and to the lease
file. ``wall`` is Unix seconds, as lease times are.
"""

from __future__ import annotations

from typing import Protocol

from carpsim.dhcp.lease import BindingState, Lease

AVAILABLE_STANDALONE = frozenset(
    {BindingState.FREE, BindingState.BACKUP, BindingState.EXPIRED, BindingState.RELEASED}
)


class FailoverPolicy(Protocol):
    def answers(self) -> bool:
        """May this server answer DHCP clients at all (ISC's service state)?"""
        ...

    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        """Is this DISCOVER ours (load balancing; `client_key` = client id, else chaddr)?"""
        ...

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        """May an address in this binding be given to a new client now (own pool, MCLT)?"""
        ...

    def grant(self, lease: Lease, desired: int, wall: int) -> tuple[int, int | None]:
        """Seconds to grant for `desired`, and the potential expiry (tstp) to announce."""
        ...


class Standalone:
    """No failover peer: every free address is ours and every lease time is granted."""

    def answers(self) -> bool:
        return True

    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        return True

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        return lease.state in AVAILABLE_STANDALONE and not lease.reserved

    def grant(self, lease: Lease, desired: int, wall: int) -> tuple[int, int | None]:
        return desired, None
