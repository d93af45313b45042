"""The binding half of the failover machine, and the DHCP policy answers.

BNDUPD out within the window, BNDUPD in (checks, crossing updates, persist, batched BNDACK),
BNDACK in, pool division and reclaiming addresses; `answers`/`serves_discover`/`may_allocate`/
`grant` are the `FailoverPolicy` the DHCP server consults.

A mixin of `FailoverMachine`, split out to keep each module readable; it uses the machine's
link helpers (`_send`, `_count`, `_wall`) and state.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from carpsim.dhcp.failover.bindings import (
    BindingSync,
    check_bndupd,
    incoming_wins,
    lease_from_bndupd,
    lease_to_bndupd,
    lts_candidates,
    stamp,
)
from carpsim.dhcp.failover.codec import BndAck, BndUpd, Message, UpdDone
from carpsim.dhcp.failover.constants import (
    ACK_FLUSH_DELAY,
    CLOCK_SKEW_LIMIT,
    FailoverState,
    RejectReason,
)
from carpsim.dhcp.failover.events import Action, CountDrop, PersistLease, Send
from carpsim.dhcp.failover.loadbal import primary_serves
from carpsim.dhcp.failover.transitions import PEER_DEMANDS_SILENCE, SERVING
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.settings import FailoverSettings

S = FailoverState
B = BindingState


class BindingExchange:
    settings: FailoverSettings
    db: LeaseDB
    sync: BindingSync
    primary: bool
    state: FailoverState
    stos: int
    mclt: int
    hba: bytes
    peer_state: FailoverState | None
    peer_max_unacked: int
    _connected: bool
    _timers: dict[str, float]

    # ---------------------------------------------------------------- the DHCP policy

    def answers(self) -> bool:
        if self.state not in SERVING:
            return False
        return not (self._connected and self.peer_state in PEER_DEMANDS_SILENCE)

    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        if not self.answers():
            return False
        if self.state is not S.NORMAL:
            return True
        if secs > self.settings.load_balance_max_seconds:
            return True  # the peer looks slow: both answer (ISC load balance max seconds)
        return primary_serves(self.hba, client_key) == self.primary

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        if not self.answers() or lease.reserved:
            return False
        mine = B.FREE if self.primary else B.BACKUP
        if lease.state is mine:
            return True
        if self.state is not S.PARTNER_DOWN:
            return False
        if lease.state in (B.FREE, B.BACKUP):
            return wall > max(self.stos, lease.tsfp or 0) + self.mclt
        if lease.state in (B.EXPIRED, B.RELEASED):
            return lease.tsfp is not None and wall > lease.tsfp
        return False

    def grant(self, lease: Lease, desired: int, wall: int) -> tuple[int, int | None]:
        """ISC's MCLT cap: lease time and the potential expiry (tstp) to announce."""
        mclt = self.mclt
        if desired <= mclt:
            granted = desired
        elif lease.tsfp is None or lease.tsfp <= wall:
            granted = mclt
        else:
            granted = max(0, min(desired, lease.tsfp + mclt - wall))
        return granted, wall + desired + granted // 2

    def _send(self, now: float, messages: list[Message], xid: int | None = None) -> Send:
        raise NotImplementedError

    def _count(self, reason: str, detail: str = "") -> CountDrop:
        raise NotImplementedError

    def _wall(self, now: float) -> int:
        raise NotImplementedError

    def _next_xid(self) -> int:
        raise NotImplementedError

    def _pump(self, now: float) -> list[Action]:
        """Send queued BNDUPDs within the window; UPDDONE once an answered request drained."""
        if not self._connected or self.state is S.STARTUP:
            return []
        wall = self._wall(now)
        msgs: list[Message] = []
        for lease in self.sync.next_updates(self.peer_max_unacked, None):
            xid = self._next_xid()
            self.sync.sent(xid, lease, now)
            msgs.append(lease_to_bndupd(lease, xid, wall))
        if self.sync.updone_owed is not None and self.sync.idle():
            msgs.append(UpdDone(xid=self.sync.updone_owed))
            self.sync.updone_owed = None
        return [self._send(now, msgs)] if msgs else []

    def _on_bndack(self, now: float, wall: int, msg: BndAck) -> list[Action]:
        updated, sent = self.sync.ack_received(msg)
        actions: list[Action] = []
        if sent is not None:
            self.sync.ack_latency(sent, now)
        if sent is None:
            actions.append(self._count("unmatched_bndack", str(msg.assigned_ip)))
        elif msg.reject_reason is not None:
            actions.append(self._count(f"bndupd_rejected_{msg.reject_reason}", msg.message or ""))
        if updated is not None:
            actions.append(PersistLease(updated))
        if sent is not None and msg.reject_reason is None:
            actions += self._reclaim(now, wall, sent.address)
        return actions + self._pump(now)

    def _on_bndupd(self, now: float, wall: int, msg: BndUpd) -> list[Action]:
        problem = check_bndupd(msg)
        old = self.db.get(msg.assigned_ip) if msg.assigned_ip is not None else None
        if problem is None and old is None:
            problem = RejectReason.ILLEGAL_IP, f"{msg.assigned_ip} is not in the pool"
        actions: list[Action] = []
        if problem is None:
            assert old is not None
            incoming = lease_from_bndupd(msg, old, wall)
            pending = old.address in self.sync.queue or self.sync.in_flight_for(old.address)
            if pending and not incoming_wins(incoming, old, peer_is_primary=not self.primary):
                problem = RejectReason.LESS_CRITICAL, "our unacknowledged update wins"
            else:
                self.sync.queue.pop(old.address, None)
                self.sync.unacked.discard(old.address)
                self.db.put(incoming)
                actions.append(PersistLease(incoming))
        ack = BndAck(xid=msg.xid, assigned_ip=msg.assigned_ip)
        if problem is not None:
            reason, text = problem
            actions.append(self._count(f"bndupd_{reason.name.lower()}", text))
            ack = replace(ack, reject_reason=int(reason), message=text)
        self.sync.queue_ack(ack, now)
        if len(self.sync.acks) >= max(1, self.settings.max_unacked_updates // 2):
            actions += self._flush_acks(now)
        else:
            self._timers.setdefault("acks", now + ACK_FLUSH_DELAY)
        if problem is None and msg.assigned_ip is not None:
            actions += self._reclaim(now, wall, msg.assigned_ip)
        return actions

    def _flush_acks(self, now: float) -> list[Action]:
        self._timers.pop("acks", None)
        acks = self.sync.take_acks()
        if not acks or not self._connected:
            return []
        return [self._send(now, list(acks)), *self._pump(now)]

    def _reclaim(self, now: float, wall: int, address: IPv4Address) -> list[Action]:
        """Primary in NORMAL: an expired or released address both peers know of becomes free
        again, handed straight to the secondary when its last client hashes there."""
        lease = self.db.get(address)
        if not (self.primary and self.state is S.NORMAL and lease is not None):
            return []
        if lease.state not in (B.EXPIRED, B.RELEASED) or address in self.sync.unacked:
            return []
        if lease.state is B.EXPIRED and (lease.ends or 0) + CLOCK_SKEW_LIMIT > wall:
            # The end may be in the other server's clock, up to 60 s off ours: wait until
            # even that clock agrees (`reclaim_expired` comes back for it).
            return []
        key = lease.client_id or lease.hw_address
        theirs = bool(key) and not primary_serves(self.hba, key)
        new = stamp(
            replace(lease, state=B.BACKUP if theirs else B.FREE, starts=wall, ends=None), wall
        )
        self.db.put(new)
        self.sync.changed(address)
        return [PersistLease(new), *self._pump(now)]

    def _reclaim_expired(self, now: float) -> list[Action]:
        wall = self._wall(now)
        actions: list[Action] = []
        for lease in self.db.in_state(B.EXPIRED):
            actions += self._reclaim(now, wall, lease.address)
        return actions

    def _balance(self, now: float) -> list[Action]:
        """Primary entering NORMAL: hand (free - backup) / 2 addresses to the secondary."""
        wall = self._wall(now)
        _lts, chosen = lts_candidates(self.db, self.hba)
        actions: list[Action] = []
        for lease in chosen:
            new = stamp(replace(lease, state=B.BACKUP, starts=wall), wall)
            self.db.put(new)
            self.sync.changed(new.address)
            actions.append(PersistLease(new))
        return actions

    def _hold_until_safe(self, lease: Lease) -> list[Action]:
        """PARTNER-DOWN: an expired/released address may be reused only after
        max(STOS of partner-down, what the partner knew) + MCLT."""
        floor = max(self.stos, lease.tsfp or 0) + self.mclt
        if lease.tsfp is not None and lease.tsfp >= floor:
            return []
        new = replace(lease, tsfp=floor)
        self.db.put(new)
        return [PersistLease(new)]
