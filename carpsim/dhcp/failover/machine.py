"""The failover peer machine, sans-IO: link handling, server states, and the DHCP policy.

Inputs take `now` (monotonic seconds, for timers) and, where lease times are involved, `wall`
(Unix seconds, as ISC keeps lease times); `on_timer(now)` derives wall time from the last
offset seen. Each input returns actions in order. All state moves go through `TRANSITIONS`.

The machine shares the node's `LeaseDB` with the DHCP server: the server writes a lease and
calls `lease_changed`; the machine writes leases it learns from the peer and says so with
`PersistLease` (always before the BNDACK that acknowledges them).

It is also the server's `FailoverPolicy`: service by state, RFC 3074 load balancing in
NORMAL, own pool only outside PARTNER-DOWN, partner's pool after MCLT in PARTNER-DOWN, and
the MCLT cap on lease times.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from carpsim.dhcp.failover import codec
from carpsim.dhcp.failover.bindings import (
    BindingSync,
    stamp,
)
from carpsim.dhcp.failover.codec import (
    BndAck,
    BndUpd,
    Connect,
    ConnectAck,
    Contact,
    Disconnect,
    Message,
    PoolReq,
    PoolResp,
    State,
    StreamFramer,
    UpdDone,
    UpdReq,
    UpdReqAll,
)
from carpsim.dhcp.failover.constants import (
    CLOCK_SKEW_LIMIT,
    CONNECT_WAIT,
    HBA_SIZE,
    PROTOCOL_VERSION,
    RECONNECT_INTERVAL,
    SERVER_FLAG_STARTUP,
    STARTUP_TIME,
    VENDOR_CLASS,
    FailoverState,
    RejectReason,
)
from carpsim.dhcp.failover.events import (
    Action,
    Close,
    CountDrop,
    PeerStateChanged,
    PersistFailoverState,
    PersistLease,
    Send,
    StateChanged,
    StateRecord,
)
from carpsim.dhcp.failover.events import Connect as ConnectTo
from carpsim.dhcp.failover.exchange import BindingExchange
from carpsim.dhcp.failover.loadbal import hba_from_split
from carpsim.dhcp.failover.transitions import (
    LINK_LOST_MOVES,
    STARTUP_OVERRIDES,
    TRANSITIONS,
    FoInput,
    peer_input,
    peer_outcome,
)
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings

S = FailoverState
B = BindingState
RECLAIM_INTERVAL = 5.0
"""How often a primary in NORMAL looks for expired addresses to put back in the pool."""


class FailoverMachine(BindingExchange):
    """One failover relationship (``failover peer "dhcp_<if>"``) over one TCP link."""

    def __init__(
        self,
        settings: FailoverSettings,
        db: LeaseDB,
        pool: list[IPv4Address] | tuple[IPv4Address, ...] = (),
    ) -> None:
        self.settings = settings
        self.db = db
        self.primary = settings.role is FailoverRole.PRIMARY
        self.name = settings.name or "dhcp"
        for address in pool:
            # dhcpd knows every address of a failover pool; an unknown one starts FREE.
            if address not in db:
                db.put(Lease(address, B.FREE))
        self.sync = BindingSync(db)
        self.state = S.STARTUP
        self.stos = 0
        self.saved = S.RECOVER
        self.saved_stos = 0
        self.peer_state: FailoverState | None = None
        self.peer_stos: int | None = None
        self.peer_startup = False
        self.mclt = settings.mclt
        self.hba = hba_from_split(settings.split)
        self.peer_max_unacked = 1
        self.peer_receive_timer = settings.max_response_delay
        self._offset = 0.0
        self._started = False
        self._link = False
        self._connected = False
        self._framer = StreamFramer()
        self._xid = 0
        self._timers: dict[str, float] = {}
        self.last_rx: float | None = None
        self.last_contact_wall: int | None = None
        self.drops: dict[str, int] = {}
        self.messages_in: dict[str, int] = {}
        self.messages_out: dict[str, int] = {}

    def share_db(self, db: LeaseDB) -> None:
        """Use the DHCP server's `LeaseDB` (before `start`): both must see one database.

        Every `PersistLease` this machine emits has already been written to it; the node
        hands it to the lease file and to `DhcpServer.update_lease` (its indexes follow).
        """
        for lease in self.db:
            if lease.address not in db:
                db.put(lease)
        self.db = db
        self.sync = BindingSync(db)

    # ---------------------------------------------------------------- inputs

    def start(self, now: float, wall: int, saved: StateRecord | None = None) -> list[Action]:
        """Process start: STARTUP, remembering the saved state (RECOVER for a fresh file)."""
        self._offset = wall - now
        self._started = True
        if saved is None:
            saved = StateRecord(S.RECOVER, wall)
        self.saved, self.saved_stos = saved.my_state, saved.my_stos
        if self.saved is S.STARTUP:
            self.saved = S.RECOVER
        self.peer_state, self.peer_stos = saved.partner_state, saved.partner_stos
        if saved.mclt is not None and not self.primary:
            self.mclt = saved.mclt
        self.state, self.stos = S.STARTUP, self.saved_stos
        self._timers["startup"] = now + STARTUP_TIME
        return [
            *self._persist(),
            StateChanged(self.saved, S.STARTUP, "start"),
            *self._try_connect(now),
        ]

    def connection_up(self, now: float, wall: int) -> list[Action]:
        """A TCP link to the peer is established (ours or accepted)."""
        self._offset = wall - now
        if self._link:
            return [CountDrop("duplicate_link")]
        self._link = True
        self._connected = False
        self._framer = StreamFramer()
        self.last_rx = now
        self._timers.pop("reconnect", None)
        self._timers["rx_timeout"] = now + self.settings.max_response_delay
        if not self.primary:
            self._timers["connect_wait"] = now + CONNECT_WAIT
            return []
        msg = Connect(
            relationship_name=self.name,
            max_unacked=self.settings.max_unacked_updates,
            receive_timer=self.settings.max_response_delay,
            vendor_class=VENDOR_CLASS,
            protocol_version=PROTOCOL_VERSION,
            tls_request=0,
            mclt=self.mclt,
            hba=self.hba,
        )
        return [self._send(now, [msg], xid=0)]

    def connection_lost(self, now: float, wall: int, reason: str = "closed") -> list[Action]:
        self._offset = wall - now
        if not self._link:
            # A failed connect attempt: try again later.
            self._timers.setdefault("reconnect", now + RECONNECT_INTERVAL)
            return []
        return self._drop_link(now, reason, close=False)

    def data_received(self, now: float, wall: int, data: bytes) -> list[Action]:
        self._offset = wall - now
        if not self._link:
            return [CountDrop("no_link")]
        self.last_rx = now
        self.last_contact_wall = wall
        self._timers["rx_timeout"] = now + self.settings.max_response_delay
        messages, error = self._framer.feed(data)
        actions: list[Action] = []
        for msg in messages:
            self.messages_in[msg.name] = self.messages_in.get(msg.name, 0) + 1
            actions += self._message(now, wall, msg)
            if not self._link:
                return actions
        if error is not None:
            actions.append(self._count(error.reason, error.detail))
            actions += self._drop_link(now, f"protocol error: {error.reason}", close=True)
        return actions

    def lease_changed(self, now: float, wall: int, lease: Lease) -> list[Action]:
        """The server changed `lease` (already in the shared LeaseDB and persisted)."""
        self._offset = wall - now
        actions: list[Action] = []
        marked = stamp(lease, wall)
        if marked != lease:
            self.db.put(marked)
            actions.append(PersistLease(marked))
        if self.state is S.PARTNER_DOWN and marked.state in (B.EXPIRED, B.RELEASED):
            actions += self._hold_until_safe(marked)
        self.sync.changed(lease.address)
        return actions + self._pump(now)

    def admin_partner_down(self, now: float, wall: int) -> list[Action]:
        self._offset = wall - now
        return self._dispatch(now, FoInput.ADMIN_PARTNER_DOWN)

    def next_deadline(self) -> float | None:
        return min(self._timers.values(), default=None)

    def on_timer(self, now: float) -> list[Action]:
        due = {name for name, at in self._timers.items() if at <= now}
        for name in due:
            del self._timers[name]
        actions: list[Action] = []
        if "rx_timeout" in due and self._link:
            actions += self._drop_link(now, "timeout waiting for failover peer", close=True)
        if "connect_wait" in due and self._link and not self._connected:
            actions += self._drop_link(now, "no CONNECT from the primary", close=True)
        if "reconnect" in due and not self._link:
            actions += self._try_connect(now)
        if "startup" in due:
            actions += self._dispatch(now, FoInput.STARTUP_TIMEOUT)
        if "auto_partner_down" in due:
            actions += self._dispatch(now, FoInput.AUTO_PARTNER_DOWN)
        if "recover_wait" in due:
            actions += self._dispatch(now, FoInput.RECOVER_WAIT_ELAPSED)
        if "acks" in due:
            actions += self._flush_acks(now)
        if "reclaim" in due and self.primary and self.state is S.NORMAL:
            self._timers["reclaim"] = now + RECLAIM_INTERVAL
            actions += self._reclaim_expired(now)
        if "contact" in due and self._connected:
            actions.append(self._send(now, [Contact()]))
        return actions

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, object]:
        """pfSense "Failover Status" words plus the queue figures."""
        peer = self.peer_state.word if self.peer_state is not None else "unknown-state"
        return {
            "name": self.name,
            "role": "primary" if self.primary else "secondary",
            "my_state": self.state.word,
            "peer_state": peer,
            "my_state_since": self.stos,
            "peer_state_since": self.peer_stos,
            "mclt": self.mclt,
            "split": self.settings.split,
            "link": "connected" if self._connected else ("tcp" if self._link else "down"),
            "serving": self.answers(),
            "bndupd_queue": len(self.sync.queue),
            "unacked": len(self.sync.inflight),
            "acks_pending": len(self.sync.acks),
            "bndupd_acked": self.sync.acked,
            "bndupd_rejected": self.sync.rejected,
            "ack_latency_last": round(self.sync.latency_last, 6),
            "ack_latency_max": round(self.sync.latency_max, 6),
            "ack_latency_avg": round(
                self.sync.latency_sum / max(1, self.sync.acked + self.sync.rejected), 6
            ),
            "last_contact": self.last_contact_wall,
            "pool": {s.name.lower(): len(self.db.in_state(s)) for s in BindingState},
            "drops": dict(self.drops),
            "messages_in": dict(self.messages_in),
            "messages_out": dict(self.messages_out),
        }

    def record(self) -> StateRecord:
        mine = self.saved if self.state is S.STARTUP else self.state
        return StateRecord(mine, self.stos, self.peer_state, self.peer_stos, self.mclt)

    # ---------------------------------------------------------------- link

    def _wall(self, now: float) -> int:
        return int(now + self._offset)

    def _try_connect(self, now: float) -> list[Action]:
        self._timers["reconnect"] = now + RECONNECT_INTERVAL
        return [ConnectTo(self.settings.peer, self.settings.their_port)]

    def _next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF or 1
        return self._xid

    def _send(self, now: float, messages: list[Message], xid: int | None = None) -> Send:
        """Encode and send; every message stamps our wall time and pushes CONTACT back."""
        wall = self._wall(now)
        out = bytearray()
        names: list[str] = []
        for msg in messages:
            x = msg.xid if msg.xid else (xid if xid is not None else self._next_xid())
            out += codec.encode(replace(msg, time=wall, xid=x))
            names.append(msg.name)
            self.messages_out[msg.name] = self.messages_out.get(msg.name, 0) + 1
        if self._connected:
            self._timers["contact"] = now + max(1.0, self.peer_receive_timer / 3)
        return Send(bytes(out), tuple(names))

    def _drop_link(self, now: float, reason: str, *, close: bool) -> list[Action]:
        actions: list[Action] = [Close(reason)] if close else []
        was_connected = self._connected
        self._link = self._connected = False
        for name in ("rx_timeout", "contact", "connect_wait", "acks"):
            self._timers.pop(name, None)
        self.sync.link_lost()
        self._timers["reconnect"] = now + RECONNECT_INTERVAL
        if was_connected or self.state is not S.STARTUP:
            actions += self._dispatch(now, FoInput.LINK_LOST)
        return actions

    def _count(self, reason: str, detail: str = "") -> CountDrop:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return CountDrop(reason, detail)

    # ---------------------------------------------------------------- messages

    def _message(self, now: float, wall: int, msg: Message) -> list[Action]:
        if isinstance(msg, Connect):
            return self._on_connect(now, wall, msg)
        if isinstance(msg, ConnectAck):
            return self._on_connectack(now, wall, msg)
        if isinstance(msg, Disconnect):
            reason = f"peer disconnected (reason {msg.reject_reason}: {msg.message or ''})"
            return self._drop_link(now, reason, close=True)
        if not self._connected:
            return [self._count("before_connect", msg.name)]
        if isinstance(msg, State):
            return self._on_state(now, msg)
        if isinstance(msg, BndUpd):
            return self._on_bndupd(now, wall, msg)
        if isinstance(msg, BndAck):
            return self._on_bndack(now, wall, msg)
        if isinstance(msg, UpdReqAll):
            self.sync.request_all()
            return self._answer_request(now, msg.xid)
        if isinstance(msg, UpdReq):
            self.sync.request_unacked()
            return self._answer_request(now, msg.xid)
        if isinstance(msg, UpdDone):
            return self._dispatch(now, FoInput.UPDDONE)
        if isinstance(msg, PoolReq):
            moved = self._balance(now) if self.primary and self.state is S.NORMAL else []
            count = sum(1 for a in moved if isinstance(a, PersistLease))
            resp = PoolResp(xid=msg.xid, addresses_transferred=count)
            return [*moved, self._send(now, [resp]), *self._pump(now)]
        return []  # CONTACT, POOLRESP: liveness only

    def _on_connect(self, now: float, wall: int, msg: Connect) -> list[Action]:
        reject = self._check_connect(wall, msg)
        if reject is not None:
            reason, text = reject
            ack = ConnectAck(
                xid=msg.xid, relationship_name=self.name, reject_reason=int(reason), message=text
            )
            actions: list[Action] = [self._count(f"connect_reject_{reason.name.lower()}", text)]
            actions.append(self._send(now, [ack]))
            if reason is not RejectReason.DUPLICATE_CONNECTION:
                actions += self._drop_link(now, f"refused CONNECT: {text}", close=True)
            return actions
        assert msg.mclt is not None
        assert msg.hba is not None
        self.mclt, self.hba = msg.mclt, msg.hba
        self.peer_max_unacked = max(1, msg.max_unacked or 1)
        self.peer_receive_timer = msg.receive_timer or self.settings.max_response_delay
        self._connected = True
        self._timers.pop("connect_wait", None)
        ack = ConnectAck(
            xid=msg.xid,
            relationship_name=self.name,
            max_unacked=self.settings.max_unacked_updates,
            receive_timer=self.settings.max_response_delay,
            vendor_class=VENDOR_CLASS,
            protocol_version=PROTOCOL_VERSION,
            tls_reply=0 if msg.tls_request is not None else None,
        )
        return [self._send(now, [ack, self._state_msg()]), *self._persist()]

    def _check_connect(self, wall: int, msg: Connect) -> tuple[RejectReason, str] | None:
        """The secondary's checks, as ISC makes them (reasons 8, 18, 4, 5, 7)."""
        if self.primary:
            return RejectReason.INVALID_PARTNER, "both servers are primary"
        if msg.relationship_name != self.name:
            return RejectReason.INVALID_PARTNER, f"unknown relationship {msg.relationship_name!r}"
        if msg.hba is None or len(msg.hba) != HBA_SIZE:
            return RejectReason.HBA_CONFLICT, "hash bucket assignment missing or not 32 bytes"
        if abs(msg.time - wall) > CLOCK_SKEW_LIMIT:
            return RejectReason.TIME_MISMATCH, f"clocks differ by {msg.time - wall} s"
        if not msg.mclt:
            return RejectReason.INVALID_MCLT, "no MCLT"
        if self._connected:
            return RejectReason.DUPLICATE_CONNECTION, "already connected"
        return None

    def _on_connectack(self, now: float, wall: int, msg: ConnectAck) -> list[Action]:
        if not self.primary or self._connected:
            return [self._count("unexpected_connectack")]
        if msg.reject_reason is not None:
            detail = f"reason {msg.reject_reason}: {msg.message or ''}"
            return [
                self._count("connect_rejected", detail),
                *self._drop_link(now, f"CONNECT rejected ({detail})", close=True),
            ]
        problem: tuple[RejectReason, str] | None = None
        if msg.relationship_name != self.name:
            problem = RejectReason.INVALID_PARTNER, "relationship name mismatch"
        elif abs(msg.time - wall) > CLOCK_SKEW_LIMIT:
            problem = RejectReason.TIME_MISMATCH, f"clocks differ by {msg.time - wall} s"
        if problem is not None:
            reason, text = problem
            bye = Disconnect(reject_reason=int(reason), message=text)
            return [
                self._count(f"connectack_{reason.name.lower()}", text),
                self._send(now, [bye]),
                *self._drop_link(now, text, close=True),
            ]
        self.peer_max_unacked = max(1, msg.max_unacked or 1)
        self.peer_receive_timer = msg.receive_timer or self.settings.max_response_delay
        self._connected = True
        return [self._send(now, [self._state_msg()])]

    def _state_msg(self) -> State:
        if self.state is S.STARTUP:
            return State(
                server_state=self.saved, server_flags=SERVER_FLAG_STARTUP, stos=self.saved_stos
            )
        return State(server_state=self.state, server_flags=0, stos=self.stos)

    def _on_state(self, now: float, msg: State) -> list[Action]:
        try:
            new = S(msg.server_state) if msg.server_state is not None else None
        except ValueError:
            new = None
        if new is None or new is S.STARTUP:
            return [self._count("bad_server_state", str(msg.server_state))]
        old = self.peer_state
        self.peer_state, self.peer_stos = new, msg.stos
        self.peer_startup = bool((msg.server_flags or 0) & SERVER_FLAG_STARTUP)
        actions: list[Action] = [PeerStateChanged(old, new, self.peer_startup)]
        actions += self._persist()
        actions += self._dispatch(now, peer_input(new))
        return actions + self._pump(now)

    def _answer_request(self, now: float, xid: int) -> list[Action]:
        self.sync.updone_owed = xid
        return self._pump(now)

    # ---------------------------------------------------------------- transitions

    def _dispatch(self, now: float, event: FoInput) -> list[Action]:
        rule = TRANSITIONS[(self.state, event)]
        handler = getattr(self, rule.handler)
        actions: list[Action] = handler(now, event)
        return actions

    def _stay(self, now: float, event: FoInput) -> list[Action]:
        return []

    def _goto(self, now: float, event: FoInput) -> list[Action]:
        (target,) = TRANSITIONS[(self.state, event)].targets
        return self._move(now, target, event.value)

    def _illegal(self, now: float, event: FoInput) -> list[Action]:
        return self._move(now, S.SHUTDOWN, f"illegal: {event.value} in {self.state.word}")

    def _request_all(self, now: float, event: FoInput) -> list[Action]:
        return [self._send(now, [UpdReqAll()])] if self._connected else []

    def _request(self, now: float, event: FoInput) -> list[Action]:
        return [self._send(now, [UpdReq()])] if self._connected else []

    def _partner_down_peer(self, now: float, event: FoInput) -> list[Action]:
        if self.peer_startup:
            return []
        assert self.peer_state is not None
        target = peer_outcome(S.PARTNER_DOWN, self.peer_state)
        return [] if target is S.PARTNER_DOWN else self._move(now, target, event.value)

    def _link_lost(self, now: float, event: FoInput) -> list[Action]:
        target = LINK_LOST_MOVES.get(self.state, self.state)
        return [] if target is self.state else self._move(now, target, "link lost")

    def _leave_startup(self, now: float, event: FoInput) -> list[Action]:
        assert self.peer_state is not None
        peer = self.peer_state
        saved = self.saved
        target: FailoverState = saved
        if not (saved is S.PARTNER_DOWN and self.peer_startup):
            target = peer_outcome(saved, peer, startup=True)
        actions = self._move(
            now,
            target,
            f"startup: peer {peer.word}",
            keep_stos=target is saved or (saved, peer) in STARTUP_OVERRIDES,
        )
        # Entering RECOVER already asks for everything; a secondary resuming POTENTIAL-CONFLICT
        # against a CONFLICT-DONE primary must still ask for its half.
        if target is S.POTENTIAL_CONFLICT and peer is S.CONFLICT_DONE and not self.primary:
            actions += self._request(now, event)
        return actions

    def _startup_alone(self, now: float, event: FoInput) -> list[Action]:
        target = LINK_LOST_MOVES.get(self.saved, self.saved)
        return self._move(now, target, "startup: no peer", keep_stos=target is self.saved)

    def _recover_updone(self, now: float, event: FoInput) -> list[Action]:
        wall = self._wall(now)
        peer_recovering = self.peer_state in (S.RECOVER, S.RECOVER_DONE)
        until = self.stos + self.mclt
        if wall < until and not peer_recovering:
            return self._move(now, S.RECOVER_WAIT, "update done, waiting MCLT", keep_stos=True)
        return self._recover_wait_over(now, event)

    def _recover_wait_over(self, now: float, event: FoInput) -> list[Action]:
        actions = self._move(now, S.RECOVER_DONE, "recovered")
        if self.peer_state in (S.NORMAL, S.RECOVER_DONE):
            actions += self._move(now, S.NORMAL, "both recover-done")
        return actions

    def _conflict_updone(self, now: float, event: FoInput) -> list[Action]:
        if self.primary:
            return self._move(now, S.CONFLICT_DONE, "update done")
        if self.peer_state is S.CONFLICT_DONE:
            return self._move(now, S.NORMAL, "update done, peer conflict-done")
        return []

    def _move(
        self, now: float, new: FailoverState, reason: str, *, keep_stos: bool = False
    ) -> list[Action]:
        """Enter `new`: persist first (ISC writes the state block before acting on it), then
        announce, then run the state's entry duties."""
        old = self.state
        if new is old:
            return []
        wall = self._wall(now)
        self.state = new
        if not keep_stos:
            self.stos = wall
        for name in ("auto_partner_down", "recover_wait", "reclaim"):
            self._timers.pop(name, None)
        if new is not S.STARTUP:
            self._timers.pop("startup", None)
        actions: list[Action] = [*self._persist(), StateChanged(old, new, reason)]
        if self._connected:
            actions.append(self._send(now, [self._state_msg()]))
        actions += self._enter(now, new, wall)
        if self._connected:
            actions += self._pump(now)
        return actions

    def _enter(self, now: float, new: FailoverState, wall: int) -> list[Action]:
        """The duties of entering a state (ISC `dhcp_failover_set_state` and friends)."""
        actions: list[Action] = []
        if new is S.COMMUNICATIONS_INTERRUPTED and self.settings.auto_partner_down:
            self._timers["auto_partner_down"] = now + self.settings.auto_partner_down
        elif new is S.PARTNER_DOWN:
            for lease in self.db.in_state(B.EXPIRED, B.RELEASED):
                actions += self._hold_until_safe(lease)
        elif new is S.RECOVER:
            actions += self._request_all(now, FoInput.PEER_RECOVER)
        elif new is S.RECOVER_WAIT:
            # Until MCLT after entering RECOVER (the STOS RECOVER-WAIT inherits).
            self._timers["recover_wait"] = now + max(0, self.stos + self.mclt - wall)
        elif new is S.POTENTIAL_CONFLICT and self.primary:
            actions += self._request(now, FoInput.PEER_CONFLICT_DONE)
        elif new is S.NORMAL and self.primary:
            actions += self._balance(now)
            self._timers["reclaim"] = now + RECLAIM_INTERVAL
        return actions

    def _persist(self) -> list[Action]:
        return [PersistFailoverState(self.record())]
