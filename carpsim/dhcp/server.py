"""The DHCPv4 server machine for one interface (RFC 2131), pure.

Inputs: `receive` (a datagram from a client or relay), `ping_result` (the edge's answer to a
`PingCheck`), `on_timer` (offer holds and lease expiry) and `update_lease` (a binding learnt
from the failover peer). Every input returns a list of actions (`carpsim.dhcp.actions`). The
decision for each message comes from `server_table.TRANSITIONS`; whether an address may be
given, for how long, and whether to answer at all, from the `FailoverPolicy`.

Addresses offered (or being pinged) are held for `OFFER_HOLD` seconds so two clients in
DISCOVER never get the same one; the hold table is bounded. Lease times are Unix seconds
(``wall``); the machine remembers the offset between ``wall`` and ``now`` so lease expiry
runs off the single monotonic timer.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from carpsim.dhcp import replies
from carpsim.dhcp.actions import Action, LeaseChanged, Log, PingCheck
from carpsim.dhcp.codec import ZERO, DhcpMessage, decode
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.options import MessageType
from carpsim.dhcp.policy import FailoverPolicy
from carpsim.dhcp.server_table import TRANSITIONS, Kind, Rule, Situation, classify
from carpsim.dhcp.settings import DhcpServerSettings, StaticMapping
from carpsim.errors import ConfigError, DecodeError

OFFER_HOLD = 30.0
"""Seconds an offered address stays reserved for its client."""
PING_GUARD = 5.0
"""Seconds to wait for the edge's ping answer before forgetting the DISCOVER."""
MAX_HOLDS = 4096
MAX_PING_TRIES = 3
MAX_POOL = 65536
ACTIVE, FREE, ABANDONED = BindingState.ACTIVE, BindingState.FREE, BindingState.ABANDONED
CANDIDATE_STATES = (FREE, BindingState.BACKUP, BindingState.EXPIRED, BindingState.RELEASED)
REFUSALS_PER_LIST = 64
"""Candidates the policy may refuse in one index list before the search moves on (a
secondary walks past the primary's FREE leases to its BACKUP ones); a full scan follows only
when the bounded search found nothing."""
USED_LOOKAHEAD = 256


@dataclass
class _Hold:
    key: bytes
    until: float
    discover: DhcpMessage | None = None
    """Set while a ping runs: the DISCOVER to answer once the address is known free."""
    tries: int = 0


def _mac(chaddr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in chaddr)


class DhcpServer:
    def __init__(
        self, settings: DhcpServerSettings, policy: FailoverPolicy, db: LeaseDB | None = None
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.db = db if db is not None else LeaseDB()
        self.drops: Counter[str] = Counter()
        self.last_rule: tuple[Kind, Situation] | None = None
        self._holds: dict[IPv4Address, _Hold] = {}
        self._hold_of: dict[bytes, IPv4Address] = {}
        self._static_by_mac = {m.mac: m for m in settings.staticmaps}
        self._static_addrs = {m.ipaddr for m in settings.staticmaps}
        self._wall_offset: float | None = None
        self._expiry: list[tuple[int, IPv4Address]] = []
        # Lazy heaps: stale entries are skipped when they surface; both are rebuilt when they
        # outgrow what they index, so a renewal flood cannot grow them without bound.
        self._hold_heap: list[tuple[float, int, IPv4Address]] = []
        self._hold_seq = 0
        first, last = int(settings.range_start), int(settings.range_end)
        if last - first + 1 > MAX_POOL:
            raise ConfigError("range", f"more than {MAX_POOL} addresses")
        self._pool = [IPv4Address(a) for a in range(first, last + 1)]
        # Never hand out the addresses the server itself stands for.
        self._never = {settings.interface_address, settings.router, *settings.dns}
        # Sorted candidate lists per (state, never bound) so a DISCOVER does not walk the pool.
        self._index: dict[tuple[BindingState, bool], list[int]] = {
            (state, fresh): [] for state in CANDIDATE_STATES for fresh in (True, False)
        }
        self._indexed: dict[int, tuple[BindingState, bool]] = {}
        for address in self._pool:
            if address not in self.db:
                self.db.put(Lease(address, FREE))
            self._reindex(self.db.get(address))
        for lease in self.db.in_state(ACTIVE):
            if lease.ends is not None:
                self._push_expiry(lease.ends, lease.address)

    # ---- inputs -------------------------------------------------------------------------

    def receive(
        self, now: float, wall: int, data: bytes, to_broadcast: bool = False
    ) -> list[Action]:
        """A datagram on port 67; `to_broadcast`: it was sent to a broadcast address."""
        self._wall_offset = wall - now
        try:
            msg = decode(data)
            return self.handle(now, wall, msg, to_broadcast)
        except DecodeError as err:
            self.drops[err.reason] += 1
            return []

    def handle(
        self, now: float, wall: int, msg: DhcpMessage, to_broadcast: bool = False
    ) -> list[Action]:
        self._wall_offset = wall - now
        if msg.giaddr != ZERO and msg.giaddr not in self.settings.subnet:
            self.drops["wrongnet"] += 1
            return []
        if not msg.client_key:
            self.drops["noclientkey"] += 1  # no chaddr, no client id: nothing to bind to
            return []
        key = classify(msg, self.settings.interface_address, self.policy, to_broadcast)
        self.last_rule = key
        rule = TRANSITIONS[key]
        handler = getattr(self, rule.handler)
        actions: list[Action] = handler(now, wall, msg, rule)
        return actions

    def ping_result(
        self, now: float, wall: int, address: IPv4Address, answered: bool
    ) -> list[Action]:
        self._wall_offset = wall - now
        hold = self._holds.get(address)
        if hold is None or hold.discover is None:
            return []  # too late: the hold expired, or the client moved on
        msg = hold.discover
        if not answered:
            hold.discover = None
            self._arm(address, hold, now + OFFER_HOLD)
            return self._offer(msg, address, wall)
        self._unhold(address)
        old = self.db.get(address)
        actions: list[Action] = [Log(f"Abandoning IP address {address}: pinged before offer")]
        if old is not None:
            actions += self._change(replace(old, state=ABANDONED, starts=wall, ends=None))
        if hold.tries + 1 >= MAX_PING_TRIES:
            self.drops["pingexhausted"] += 1
            return actions
        return actions + self._allocate(now, wall, msg, hold.tries + 1)

    def update_lease(self, lease: Lease) -> None:
        """A binding from the failover peer (already persisted by whoever received it).

        Changes to the shared `LeaseDB` must come through here (or the server's own
        actions): the candidate index follows them.
        """
        self.db.put(lease)
        self._reindex(lease)
        hold = self._holds.get(lease.address)
        if lease.state is ACTIVE and hold is not None and not self._owns_key(lease, hold.key):
            self._unhold(lease.address)
        if lease.state is ACTIVE and lease.ends is not None:
            self._push_expiry(lease.ends, lease.address)

    def clock(self, now: float, wall: int) -> list[Action]:
        """Tell the machine the wall clock (at start): runs expiry of loaded leases."""
        self._wall_offset = wall - now
        return self.on_timer(now)

    def on_timer(self, now: float) -> list[Action]:
        while (first := self._first_hold()) is not None and first[0] <= now:
            self._unhold(first[1])
        if self._wall_offset is None:
            return []
        # Float slack: the deadline handed out is ends - offset, which must count as reached.
        wall_f = now + self._wall_offset + 1e-3
        wall = int(wall_f)
        actions: list[Action] = []
        while self._expiry and self._expiry[0][0] <= wall_f:
            ends, address = heapq.heappop(self._expiry)
            lease = self.db.get(address)
            if lease is not None and lease.state is ACTIVE and lease.ends == ends:
                actions += self._change(
                    replace(lease, state=BindingState.EXPIRED, starts=wall, tstp=lease.tstp)
                )
        return actions

    def next_deadline(self) -> float | None:
        first = self._first_hold()
        times = [] if first is None else [first[0]]
        if self._expiry and self._wall_offset is not None:
            times.append(self._expiry[0][0] - self._wall_offset)
        return min(times) if times else None

    # ---- handlers (named by the transition table) ---------------------------------------

    def _drop(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        self.drops[rule.drop] += 1
        if rule.drop == "loadbalance":
            return [Log(f"DHCPDISCOVER from {_mac(msg.chaddr)} via {self._if}: {rule.why}")]
        return []

    def _discover(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        log: list[Action] = [Log(f"DHCPDISCOVER from {_mac(msg.chaddr)} via {self._if}")]
        return log + self._allocate(now, wall, msg, 0)

    def _selecting(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        address = msg.requested_ip
        assert address is not None  # classify: SELECTING has a requested address
        static = self._static_for(msg)
        if static is not None:
            ok = static.ipaddr == address
        else:
            hold = self._holds.get(address)
            mine = hold is not None and hold.key == msg.client_key and hold.discover is None
            ok = mine or self._can_give(address, msg, wall)
        if not ok:
            return self._nak(msg, address, "requested address not available")
        return self._ack(msg, address, wall, static)

    def _selected_other(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        address = self._hold_of.get(msg.client_key)
        if address is not None:
            self._unhold(address)
        return []

    def _init_reboot(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        address = msg.requested_ip
        assert address is not None
        return self._confirm(msg, address, wall, silent_if_unknown=False)

    def _renew(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        return self._confirm(msg, msg.ciaddr, wall, silent_if_unknown=False)

    def _rebind(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        # RFC 2131 §4.3.2: a rebinding client may hold another server's lease; say nothing.
        return self._confirm(msg, msg.ciaddr, wall, silent_if_unknown=True)

    def _decline(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        address = msg.requested_ip
        lease = None if address is None else self.db.get(address)
        if address is None or lease is None or lease.reserved:
            self.drops["declineunknown"] += 1
            return []
        hold = self._holds.get(address)
        held = hold is not None and hold.key == msg.client_key
        if not held and not self._owns(lease, msg):
            self.drops["declineunknown"] += 1
            return []
        self._unhold(address)
        abandoned = Lease(address, ABANDONED, starts=wall, tstp=lease.tstp, tsfp=lease.tsfp)
        text = f"DHCPDECLINE of {address} from {_mac(msg.chaddr)} via {self._if}: abandoned"
        return [Log(text), *self._change(abandoned)]

    def _release(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        lease = self.db.get(msg.ciaddr)
        if lease is None or lease.state is not ACTIVE or not self._owns(lease, msg):
            self.drops["releaseunknown"] += 1
            return []
        released = replace(lease, state=BindingState.RELEASED, starts=wall, ends=wall, cltt=wall)
        text = f"DHCPRELEASE of {msg.ciaddr} from {_mac(msg.chaddr)} via {self._if}"
        return [Log(text), *self._change(released)]

    def _inform(self, now: float, wall: int, msg: DhcpMessage, rule: Rule) -> list[Action]:
        ack = replies.reply(msg, MessageType.ACK, self.settings)
        text = f"DHCPINFORM from {msg.ciaddr} via {self._if}"
        return [Log(text), replies.transmit(msg, ack)]

    # ---- decisions ----------------------------------------------------------------------

    @property
    def _if(self) -> str:
        return self.settings.interface

    def _static_for(self, msg: DhcpMessage) -> StaticMapping | None:
        return self._static_by_mac.get(msg.chaddr) if msg.htype == 1 else None

    @staticmethod
    def _owns(lease: Lease, msg: DhcpMessage) -> bool:
        """Is `lease` bound to this client? By client id when both have one, else by MAC."""
        cid = msg.client_id
        if cid is not None and lease.client_id is not None:
            return cid == lease.client_id
        return bool(lease.hw_address) and (lease.hw_address, lease.hw_type) == (
            msg.chaddr,
            msg.htype,
        )

    @staticmethod
    def _owns_key(lease: Lease, key: bytes) -> bool:
        """The same, from a hold's client key (client id, else chaddr)."""
        return bool(key) and key in (lease.client_id, lease.hw_address)

    def _active_for_other(self, lease: Lease, msg: DhcpMessage) -> bool:
        return lease.state is ACTIVE and not self._owns(lease, msg)

    def _held_by_other(self, address: IPv4Address, key: bytes) -> bool:
        hold = self._holds.get(address)
        return hold is not None and hold.key != key

    def _can_give(self, address: IPv4Address, msg: DhcpMessage, wall: int) -> bool:
        """May `address` be bound to this client now (not its static one)?"""
        if address in self._static_addrs or address in self._never:
            return False
        lease = self.db.get(address)
        if lease is None or lease.reserved or lease.state is ABANDONED:
            return False
        if self._held_by_other(address, msg.client_key):
            return False
        if lease.state is ACTIVE:
            return self._owns(lease, msg)
        return self.policy.may_allocate(lease, wall)

    def _choose(self, msg: DhcpMessage, wall: int) -> IPv4Address | None:
        """The address to offer: the client's last one, the one it asks for, else a free one."""
        prev = self._client_lease(msg)
        if prev is not None and self._can_give(prev.address, msg, wall):
            return prev.address
        wanted = msg.requested_ip
        if wanted is not None and self._can_give(wanted, msg, wall):
            return wanted
        found = self._search(msg, wall)
        return found if found is not None else self._scan_all(msg, wall)

    def _search(self, msg: DhcpMessage, wall: int) -> IPv4Address | None:
        """Never-bound addresses first (no earlier client comes back for them), lowest first;
        then, among previously bound ones, the one free the longest, as dhcpd does."""
        for state in CANDIDATE_STATES:
            for value in self._index[(state, True)][:REFUSALS_PER_LIST]:
                address = IPv4Address(value)
                if self._can_give(address, msg, wall):
                    return address
        best: Lease | None = None
        for state in CANDIDATE_STATES:
            refused = accepted = 0
            for value in self._index[(state, False)]:
                address = IPv4Address(value)
                if not self._can_give(address, msg, wall):
                    refused += 1
                    if refused >= REFUSALS_PER_LIST:
                        break
                    continue
                lease = self.db.get(address)
                assert lease is not None
                if best is None or lease.starts < best.starts:
                    best = lease
                accepted += 1
                if accepted >= USED_LOOKAHEAD:
                    break
        return None if best is None else best.address

    def _scan_all(self, msg: DhcpMessage, wall: int) -> IPv4Address | None:
        """Every pool address, for when the bounded search came back empty."""
        reused: Lease | None = None
        for address in self._pool:
            lease = self.db.get(address)
            if lease is None or lease.state is ACTIVE or not self._can_give(address, msg, wall):
                continue
            if not lease.hw_address and lease.client_id is None:
                return address
            if reused is None or lease.starts < reused.starts:
                reused = lease
        return None if reused is None else reused.address

    def _reindex(self, lease: Lease | None) -> None:
        if lease is None:
            return
        value = int(lease.address)
        old = self._indexed.pop(value, None)
        if old is not None:
            items = self._index[old]
            i = bisect.bisect_left(items, value)
            if i < len(items) and items[i] == value:
                del items[i]
        if lease.state in CANDIDATE_STATES and not lease.reserved:
            if not (int(self.settings.range_start) <= value <= int(self.settings.range_end)):
                return
            key = (lease.state, not lease.hw_address and lease.client_id is None)
            bisect.insort(self._index[key], value)
            self._indexed[value] = key

    def _client_lease(self, msg: DhcpMessage) -> Lease | None:
        cid = msg.client_id
        lease = self.db.by_client_id(cid) if cid is not None else None
        if lease is None:
            lease = self.db.by_hw(msg.htype, msg.chaddr)
        return lease if lease is not None and self._owns(lease, msg) else None

    def _allocate(self, now: float, wall: int, msg: DhcpMessage, tries: int) -> list[Action]:
        static = self._static_for(msg)
        if static is not None:
            return self._offer(msg, static.ipaddr, wall)
        current = self._hold_of.get(msg.client_key)
        if current is not None:
            hold = self._holds[current]
            if hold.discover is not None:
                return []  # a retransmitted DISCOVER while its ping is still out
            if self._can_give(current, msg, wall):
                self._arm(current, hold, now + OFFER_HOLD)
                return self._offer(msg, current, wall)
        address = self._choose(msg, wall)
        if address is None:
            self.drops["nofree"] += 1
            return [Log(f"DHCPDISCOVER from {_mac(msg.chaddr)} via {self._if}: no free leases")]
        lease = self.db.get(address)
        assert lease is not None
        known = self._owns(lease, msg)
        if self.settings.ping_check and not known:
            self._hold(address, msg.client_key, now + PING_GUARD, msg, tries)
            return [PingCheck(address)]
        self._hold(address, msg.client_key, now + OFFER_HOLD)
        return self._offer(msg, address, wall)

    def _offer(self, msg: DhcpMessage, address: IPv4Address, wall: int) -> list[Action]:
        static = self._static_for(msg)
        secs = self._desired(msg)
        lease = self.db.get(address)
        if static is None and lease is not None:
            secs, _ = self.policy.grant(lease, secs, wall)
        offer = replies.reply(
            msg, MessageType.OFFER, self.settings, yiaddr=address, lease_secs=secs
        )
        text = f"DHCPOFFER on {address} to {_mac(msg.chaddr)} via {self._if}"
        return [Log(text), replies.transmit(msg, offer)]

    def _confirm(
        self, msg: DhcpMessage, address: IPv4Address, wall: int, silent_if_unknown: bool
    ) -> list[Action]:
        """INIT-REBOOT / RENEWING / REBINDING: is the client's idea of its address right?"""
        if address not in self.settings.subnet:
            return self._nak(msg, address, "wrong network")
        static = self._static_for(msg)
        if static is not None:
            if static.ipaddr == address:
                return self._ack(msg, address, wall, static)
            return self._nak(msg, address, "address reserved elsewhere for this client")
        lease = self.db.get(address)
        if lease is None or address in self._static_addrs or address in self._never:
            return self._nak(msg, address, "address not in pool")
        if self._owns(lease, msg) and lease.state is not ABANDONED:
            if lease.state is ACTIVE or self.policy.may_allocate(lease, wall):
                return self._ack(msg, address, wall, None)
            self.drops["peerlease"] += 1
            return []  # ours to judge only once failover lets us reallocate it
        if self._active_for_other(lease, msg):
            return self._nak(msg, address, "lease in use by another client")
        if not self.policy.may_allocate(lease, wall):
            self.drops["peerlease"] += 1
            return []  # the partner's address: its answer, not ours
        if silent_if_unknown:
            self.drops["unknownlease"] += 1
            return []
        return self._nak(msg, address, "lease unknown")

    def _desired(self, msg: DhcpMessage) -> int:
        asked = msg.lease_time
        s = self.settings
        if asked is None or asked <= 0:
            return s.default_lease_time
        return min(asked, s.max_lease_time)

    def _ack(
        self, msg: DhcpMessage, address: IPv4Address, wall: int, static: StaticMapping | None
    ) -> list[Action]:
        old = self.db.get(address)
        base = old if old is not None else Lease(address, FREE)
        desired = self._desired(msg)
        if static is not None:
            secs, tstp = desired, None
        else:
            secs, tstp = self.policy.grant(base, desired, wall)
        hostname = msg.hostname or (static.hostname if static is not None else None)
        new = replace(
            base,
            state=ACTIVE,
            starts=wall,
            ends=wall + secs,
            tstp=tstp if tstp is not None else base.tstp,
            cltt=wall,
            hw_type=msg.htype,
            hw_address=msg.chaddr,
            client_id=msg.client_id,
            hostname=hostname,
            reserved=static is not None,
        )
        self._unhold(address)
        previous = self._hold_of.get(msg.client_key)
        if previous is not None:
            self._unhold(previous)
        ack = replies.reply(msg, MessageType.ACK, self.settings, yiaddr=address, lease_secs=secs)
        text = f"DHCPACK on {address} to {_mac(msg.chaddr)} via {self._if}"
        in_pool = static is None or address in self.db
        return [*self._change(new, in_pool), Log(text), replies.transmit(msg, ack)]

    def _nak(self, msg: DhcpMessage, address: IPv4Address, why: str) -> list[Action]:
        nak = replies.reply(msg, MessageType.NAK, self.settings, text=why)
        text = f"DHCPNAK on {address} to {_mac(msg.chaddr)} via {self._if}: {why}"
        return [Log(text), replies.transmit(msg, nak)]

    def _change(self, new: Lease, in_pool: bool = True) -> list[Action]:
        old = self.db.get(new.address) if in_pool else None
        if in_pool:
            self.db.put(new)
            self._reindex(new)
        if new.state is ACTIVE and new.ends is not None:
            self._push_expiry(new.ends, new.address)
        return [LeaseChanged(new, old, in_pool)]

    # ---- offer holds --------------------------------------------------------------------

    def _hold(
        self,
        address: IPv4Address,
        key: bytes,
        until: float,
        discover: DhcpMessage | None = None,
        tries: int = 0,
    ) -> None:
        previous = self._hold_of.get(key)
        if previous is not None and previous != address:
            self._unhold(previous)
        if len(self._holds) >= MAX_HOLDS and address not in self._holds:
            # Bounded: the hold closest to expiry makes room (its client will retry).
            first = self._first_hold()
            assert first is not None
            self._unhold(first[1])
            self.drops["holdevicted"] += 1
        hold = _Hold(key, until, discover, tries)
        self._holds[address] = hold
        self._hold_of[key] = address
        self._arm(address, hold, until)

    def _arm(self, address: IPv4Address, hold: _Hold, until: float) -> None:
        hold.until = until
        self._hold_seq += 1
        heapq.heappush(self._hold_heap, (until, self._hold_seq, address))
        if len(self._hold_heap) > 4 * len(self._holds) + 64:
            self._hold_heap = [(h.until, i, a) for i, (a, h) in enumerate(self._holds.items())]
            heapq.heapify(self._hold_heap)

    def _first_hold(self) -> tuple[float, IPv4Address] | None:
        """The hold that ends first (dropping stale heap entries on the way)."""
        heap = self._hold_heap
        while heap:
            until, _, address = heap[0]
            hold = self._holds.get(address)
            if hold is not None and hold.until == until:
                return until, address
            heapq.heappop(heap)
        return None

    def _push_expiry(self, ends: int, address: IPv4Address) -> None:
        heapq.heappush(self._expiry, (ends, address))
        if len(self._expiry) > 4 * len(self.db) + 1024:
            self._expiry = [
                (lease.ends, lease.address)
                for lease in self.db.in_state(ACTIVE)
                if lease.ends is not None
            ]
            heapq.heapify(self._expiry)

    def _unhold(self, address: IPv4Address) -> None:
        hold = self._holds.pop(address, None)
        if hold is not None and self._hold_of.get(hold.key) == address:
            del self._hold_of[hold.key]

    def held(self) -> dict[IPv4Address, bytes]:
        """Addresses currently offered or being pinged, with their client key."""
        return {a: h.key for a, h in self._holds.items()}
