"""Binding updates: the BNDUPD queue and window, BNDACK batching, crossing updates, the pool.

`BindingSync` is the half of the failover machine that moves leases between the peers; the
machine owns the link and the state and calls in here. Rules (ISC dhcpd 4.4):
- one binding per BNDUPD, at most the peer's max-unacked in flight, xids never 0;
- received BNDUPDs are persisted at once and acknowledged in batches (half our window, or
  after 2 s), so the lease file always holds a binding before the peer hears it is acked;
- a BNDUPD for an address whose own update is still unacknowledged is a crossing update,
  decided by `incoming_wins`; the loser is rejected with reason 16;
- a BNDACK makes the potential expiry we sent the acknowledged one (``tsfp``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from carpsim.dhcp.failover.codec import BndAck, BndUpd
from carpsim.dhcp.failover.constants import (
    IP_FLAG_RESERVED,
    RejectReason,
)
from carpsim.dhcp.failover.loadbal import primary_serves
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB

B = BindingState
NEEDS_CHADDR = frozenset({B.ACTIVE, B.EXPIRED, B.RELEASED})


@dataclass(frozen=True)
class Sent:
    address: IPv4Address
    lease: Lease
    at: float = 0.0


def lease_to_bndupd(lease: Lease, xid: int, time: int) -> BndUpd:
    chaddr = bytes([lease.hw_type]) + lease.hw_address if lease.hw_address else None
    return BndUpd(
        time=time,
        xid=xid,
        assigned_ip=lease.address,
        binding_status=int(lease.state),
        client_id=lease.client_id or None,
        chaddr=chaddr,
        lease_expiration=lease.ends if lease.ends is not None else None,
        potential_expiration=lease.tstp if lease.tstp is not None else lease.ends,
        stos=lease.starts,
        cltt=lease.cltt or None,
        ip_flags=IP_FLAG_RESERVED if lease.reserved else None,
    )


def stamp(lease: Lease, wall: int) -> Lease:
    """Mark a local change as not yet acknowledged, durably: its tstp moves past the tsfp
    the peer acknowledged, so a restart (which forgets the queue) still knows to send it.
    An ACTIVE grant already carries a fresh tstp (`FailoverPolicy.grant`)."""
    if lease.tstp is not None and lease.tstp != lease.tsfp:
        return lease
    return replace(lease, tstp=max(wall, (lease.tsfp or 0) + 1))


def check_bndupd(msg: BndUpd) -> tuple[RejectReason, str] | None:
    """ISC's checks before a BNDUPD is considered (reason 3 = missing binding information)."""
    if msg.assigned_ip is None:
        return RejectReason.MISSING_BIND_INFO, "no assigned IP address"
    if msg.binding_status is None:
        return RejectReason.MISSING_BIND_INFO, "no binding status"
    try:
        state = B(msg.binding_status)
    except ValueError:
        return RejectReason.MISSING_BIND_INFO, f"binding status {msg.binding_status}"
    if state in NEEDS_CHADDR and not msg.chaddr:
        return RejectReason.MISSING_BIND_INFO, f"{state.name} without a hardware address"
    return None


def lease_from_bndupd(msg: BndUpd, old: Lease, wall: int) -> Lease:
    assert msg.assigned_ip is not None
    assert msg.binding_status is not None
    hw_type, hw = old.hw_type, old.hw_address
    if msg.chaddr:
        hw_type, hw = msg.chaddr[0], bytes(msg.chaddr[1:])
    # The peer's potential expiry is both what it announced and what we now know it knows:
    # ISC sets tsfp and atsfp from it.
    potential = msg.potential_expiration
    return replace(
        old,
        state=B(msg.binding_status),
        starts=msg.stos if msg.stos is not None else wall,
        ends=msg.lease_expiration,
        tstp=potential,
        tsfp=potential,
        cltt=msg.cltt,
        hw_type=hw_type,
        hw_address=hw,
        client_id=msg.client_id,
        hostname=old.hostname if hw == old.hw_address else None,
        reserved=bool((msg.ip_flags or 0) & IP_FLAG_RESERVED),
    )


def incoming_wins(incoming: Lease, local: Lease, peer_is_primary: bool) -> bool:
    """Crossing updates: does the peer's copy beat our unacknowledged one?

    ISC's order (``failover_lease_is_better``) with one deliberate change: a binding that is
    ACTIVE on one side beats any other state on the other, except a RELEASE by that same
    client. ISC lets an incoming EXPIRED beat a local ACTIVE; the simulator found that both
    sides then keep the other's copy (one says EXPIRED, the other ACTIVE) and that a stale
    EXPIRED from before a partition could free an address a client held. The rule must be
    antisymmetric (both peers pick the same winner), which this one is.
    """
    same_client = incoming.hw_address == local.hw_address and incoming.client_id == local.client_id
    if same_client and {incoming.state, local.state} == {B.ACTIVE, B.RELEASED}:
        return incoming.state is B.RELEASED
    if (incoming.state is B.ACTIVE) != (local.state is B.ACTIVE):
        return incoming.state is B.ACTIVE
    if incoming.state is B.ACTIVE:
        a, b = incoming.cltt or 0, local.cltt or 0
        if a != b:
            return a > b
    return peer_is_primary


class BindingSync:
    """Queue, window and acknowledgements for one failover relationship."""

    def __init__(self, db: LeaseDB) -> None:
        self.db = db
        self.queue: dict[IPv4Address, None] = {}
        self.inflight: dict[int, Sent] = {}
        self.unacked: set[IPv4Address] = set()
        self.acks: list[BndAck] = []
        self.acks_since: float | None = None
        self.updone_owed: int | None = None
        """xid of the peer's UPDREQALL/UPDREQ to answer with UPDDONE once all is acked."""
        self.acked = 0
        self.rejected = 0
        self.latency_last = 0.0
        self.latency_max = 0.0
        self.latency_sum = 0.0
        for lease in db:
            # A restart forgets the queue; a potential expiry (tstp) the peer never
            # acknowledged (tsfp) marks a binding it may not know: see `stamp`.
            if lease.tstp is not None and lease.tstp != lease.tsfp:
                self.unacked.add(lease.address)
                self.queue[lease.address] = None

    def changed(self, address: IPv4Address) -> None:
        self.unacked.add(address)
        self.queue[address] = None

    def request_all(self) -> None:
        for lease in self.db:
            self.queue[lease.address] = None

    def request_unacked(self) -> None:
        for address in sorted(self.unacked):
            self.queue[address] = None

    def link_lost(self) -> None:
        """Unacked updates go back to the queue; half-done duties die with the link."""
        for sent in self.inflight.values():
            self.queue[sent.address] = None
        self.inflight.clear()
        self.acks.clear()
        self.acks_since = None
        self.updone_owed = None

    def in_flight_for(self, address: IPv4Address) -> bool:
        return any(s.address == address for s in self.inflight.values())

    def next_updates(self, window: int, take_xid: object) -> list[Lease]:
        """Leases to send now, within the peer's window (the caller numbers them)."""
        out: list[Lease] = []
        while self.queue and len(self.inflight) + len(out) < window:
            address = next(iter(self.queue))
            del self.queue[address]
            lease = self.db.get(address)
            if lease is not None:
                out.append(lease)
        return out

    def sent(self, xid: int, lease: Lease, now: float = 0.0) -> None:
        self.inflight[xid] = Sent(lease.address, lease, now)

    def ack_latency(self, sent: Sent, now: float) -> None:
        """BNDUPD -> BNDACK time (the peer's batching included), for status and metrics."""
        took = max(0.0, now - sent.at)
        self.latency_last = took
        self.latency_max = max(self.latency_max, took)
        self.latency_sum += took

    def ack_received(self, msg: BndAck) -> tuple[Lease | None, Sent | None]:
        """Match a BNDACK; returns the lease to persist (tsfp updated) and what it acked."""
        sent = self.inflight.pop(msg.xid, None)
        if sent is None and msg.assigned_ip is not None:
            for xid, s in list(self.inflight.items()):
                if s.address == msg.assigned_ip:
                    sent = self.inflight.pop(xid)
                    break
        if sent is None:
            return None, None
        if msg.reject_reason is not None:
            self.rejected += 1
            return None, sent
        self.acked += 1
        current = self.db.get(sent.address)
        if current is None:
            return None, sent
        if current == sent.lease and sent.address not in self.queue:
            self.unacked.discard(sent.address)
        potential = sent.lease.tstp if sent.lease.tstp is not None else sent.lease.ends
        if potential is None or current.tsfp == potential or current != sent.lease:
            return None, sent
        updated = replace(current, tsfp=potential)
        self.db.put(updated)
        return updated, sent

    def queue_ack(self, ack: BndAck, now: float) -> None:
        if not self.acks:
            self.acks_since = now
        self.acks.append(ack)

    def take_acks(self) -> list[BndAck]:
        acks, self.acks, self.acks_since = self.acks, [], None
        return acks

    def idle(self) -> bool:
        return not self.queue and not self.inflight


def lts_candidates(db: LeaseDB, hba: bytes) -> tuple[int, list[Lease]]:
    """Pool division at the primary: how many FREE to hand over and which ones first.

    (free - backup) / 2 leases, those whose last client hashes to the secondary first
    (ISC's MAC affinity), then the oldest.
    """
    free = [x for x in db.in_state(B.FREE) if not x.reserved]
    backup = db.in_state(B.BACKUP)
    lts = (len(free) - len(backup)) // 2
    if lts <= 0:
        return 0, []

    def affinity(lease: Lease) -> tuple[int, int, IPv4Address]:
        key = lease.client_id or lease.hw_address
        theirs = bool(key) and not primary_serves(hba, key)
        return (0 if theirs else 1, lease.starts, lease.address)

    return lts, sorted(free, key=affinity)[:lts]
