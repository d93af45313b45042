"""Sweep the failover transition table: every (state, input) pair, and random input sequences.

The machine is driven through its real inputs by a scripted peer (messages built with the
codec). Invariants checked after every input:
- the new state is one the table allows for that (state, input);
- the state block is persisted before any StateChanged is reported, and holds the new state;
- a connected machine tells the peer its new state (a STATE message) when it moves;
- every byte sent decodes as whole failover messages;
- DHCP service (answers()) only in NORMAL, COMMUNICATIONS-INTERRUPTED and PARTNER-DOWN.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.dhcp.failover import codec
from carpsim.dhcp.failover.codec import BndUpd, Connect, ConnectAck, Contact, State, UpdDone
from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.failover.events import (
    Action,
    PersistFailoverState,
    Send,
    StateChanged,
    StateRecord,
)
from carpsim.dhcp.failover.loadbal import hba_from_split
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.failover.transitions import (
    LINK_LOST_MOVES,
    REPORTED,
    SERVING,
    TRANSITIONS,
    FoInput,
    peer_input,
    peer_outcome,
)
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings

S = FailoverState
WALL0 = 1_790_000_000
POOL = [IPv4Address(f"192.168.110.{100 + i}") for i in range(8)]
NAME = "dhcp_lan"


def settings_for(role: FailoverRole) -> FailoverSettings:
    peer = "192.168.110.3" if role is FailoverRole.PRIMARY else "192.168.110.2"
    return FailoverSettings(
        peer=IPv4Address(peer), role=role, name=NAME, mclt=30, auto_partner_down=20
    )


class Checked:
    def __init__(self, role: FailoverRole) -> None:
        self.role = role
        self.m = FailoverMachine(settings_for(role), LeaseDB(), POOL)
        self.now = 0.0
        self.record: StateRecord | None = None
        self.seen: list[tuple[S, FoInput, S]] = []

    @property
    def wall(self) -> int:
        return int(WALL0 + self.now)

    def apply(self, event: FoInput | None, actions: list[Action], before: S) -> list[Action]:
        after = self.m.state
        if event is not None:
            rule = TRANSITIONS[(before, event)]
            assert after in rule.targets, (before, event, after)
            self.seen.append((before, event, after))
        changed = False
        for i, action in enumerate(actions):
            if isinstance(action, PersistFailoverState):
                self.record = action.record
            elif isinstance(action, StateChanged):
                changed = True
                assert self.record is not None
                assert any(isinstance(a, PersistFailoverState) for a in actions[:i])
            elif isinstance(action, Send):
                framer = codec.StreamFramer()
                msgs, err = framer.feed(action.data)
                assert err is None
                assert framer.buffered == 0
                assert [m.name for m in msgs] == list(action.types)
        if changed and after is not S.STARTUP and self.record is not None:
            assert self.record.my_state is after
        if changed and self.m.status()["link"] == "connected":
            states = [
                m.server_state
                for a in actions
                if isinstance(a, Send)
                for m in codec.StreamFramer().feed(a.data)[0]
                if isinstance(m, State)
            ]
            assert after in states
        if self.m.answers():
            assert after in SERVING
        return actions

    # -- real inputs ----------------------------------------------------------------------

    def feed(self, event: FoInput | None, fn_name: str, *args: object) -> list[Action]:
        before = self.m.state
        actions = getattr(self.m, fn_name)(self.now, *args)
        return self.apply(event, actions, before)

    def receive(self, event: FoInput | None, msg: codec.Message) -> list[Action]:
        data = codec.encode(msg)
        return self.feed(event, "data_received", self.wall, data)

    def timer(self, event: FoInput | None, at: float) -> list[Action]:
        self.now = max(self.now, at)
        before = self.m.state
        return self.apply(event, self.m.on_timer(self.now), before)

    def start(self, saved: S) -> None:
        record = StateRecord(saved, self.wall - 1000, None, None, 30)
        self.feed(None, "start", self.wall, record)

    def handshake(self) -> None:
        self.feed(None, "connection_up", self.wall)
        if self.role is FailoverRole.SECONDARY:
            self.receive(
                None,
                Connect(
                    time=self.wall,
                    relationship_name=NAME,
                    max_unacked=10,
                    receive_timer=10,
                    vendor_class="t",
                    protocol_version=1,
                    tls_request=0,
                    mclt=30,
                    hba=hba_from_split(128),
                ),
            )
        else:
            self.receive(
                None,
                ConnectAck(
                    time=self.wall, relationship_name=NAME, max_unacked=10, receive_timer=10
                ),
            )
        assert self.m.status()["link"] == "connected"

    def peer_says(self, event: FoInput | None, state: S, startup: bool = False) -> None:
        msg = State(time=self.wall, server_state=state, server_flags=int(startup), stos=self.wall)
        self.receive(event, msg)


def keeper(state: S) -> S:
    """A peer state that leaves a machine just out of STARTUP in `state`."""
    return next(p for p in REPORTED if peer_outcome(state, p, startup=True) is state)


def drive_to(state: S, role: FailoverRole, *, connected: bool = True) -> Checked:
    c = Checked(role)
    if state is S.STARTUP:
        c.start(S.RECOVER)
        if connected:
            c.handshake()
        return c
    if state is S.COMMUNICATIONS_INTERRUPTED and not connected:
        c.start(S.NORMAL)
        c.timer(None, 15.0)
    else:
        c.start(state)
        c.handshake()
        c.peer_says(None, keeper(state))
        if not connected and state not in LINK_LOST_MOVES:
            c.feed(None, "connection_lost", c.wall)
    assert c.m.state is state, (state, role, c.m.state)
    return c


ROLES = [FailoverRole.PRIMARY, FailoverRole.SECONDARY]


def fire(c: Checked, state: S, event: FoInput) -> None:
    """Feed `event` through the real input that produces it (a timer or local event that
    cannot occur in this state is dispatched directly, to check its table entry)."""
    if event.name.startswith("PEER_"):
        peer = FailoverState[event.name.removeprefix("PEER_")]
        for startup in (False, True):
            if startup and c.m.state is not state:
                break
            c.peer_says(event, peer, startup)
        return
    if event is FoInput.LINK_LOST:
        c.feed(event, "connection_lost", c.wall)
    elif event is FoInput.UPDDONE:
        c.receive(event, UpdDone(time=c.wall, xid=7))
    elif event is FoInput.ADMIN_PARTNER_DOWN:
        c.feed(event, "admin_partner_down", c.wall)
    elif event is FoInput.STARTUP_TIMEOUT and state is S.STARTUP:
        c.timer(event, 15.0)
    elif event is FoInput.AUTO_PARTNER_DOWN and state is S.COMMUNICATIONS_INTERRUPTED:
        c.timer(event, c.now + 20.0)
    elif event is FoInput.RECOVER_WAIT_ELAPSED and state is S.RECOVER_WAIT:
        c.timer(event, c.now)  # restored long after RECOVER began: the wait is already over
    else:
        c.feed(event, "_dispatch", event)


def connected_for(event: FoInput) -> bool:
    return event.name.startswith("PEER_") or event in (FoInput.UPDDONE, FoInput.LINK_LOST)


@pytest.mark.parametrize("key", list(TRANSITIONS), ids=lambda k: f"{k[0].word}-{k[1].value}")
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_every_state_input_pair(key: tuple[S, FoInput], role: FailoverRole) -> None:
    state, event = key
    alone = (event is FoInput.AUTO_PARTNER_DOWN and state is S.COMMUNICATIONS_INTERRUPTED) or (
        event is FoInput.STARTUP_TIMEOUT and state is S.STARTUP
    )
    if alone:
        c = drive_to(state, role, connected=False)
    else:
        c = drive_to(state, role, connected=connected_for(event) or state is S.STARTUP)
    fire(c, state, event)


def test_single_target_rules_are_all_reached() -> None:
    seen: set[tuple[S, FoInput, S]] = set()
    for state, event in TRANSITIONS:
        for role in ROLES:
            c = drive_to(state, role, connected=connected_for(event) or state is S.STARTUP)
            fire(c, state, event)
            seen.update(c.seen)
    for (state, event), rule in TRANSITIONS.items():
        if len(rule.targets) == 1:
            (target,) = rule.targets
            assert (state, event, target) in seen, (state, event)


def test_recover_waits_mclt_unless_the_peer_recovers_too() -> None:
    c = Checked(FailoverRole.SECONDARY)
    c.feed(None, "start", c.wall, None)  # a fresh lease file: RECOVER since now
    c.handshake()
    c.peer_says(None, S.PARTNER_DOWN)
    assert c.m.status()["my_state"] == "recover"
    c.receive(FoInput.UPDDONE, UpdDone(time=c.wall))
    for step in range(6):  # the peer keeps the link alive while we wait MCLT (30 s)
        assert c.m.status()["my_state"] == "recover-wait", step
        c.now += 5.0
        c.receive(None, Contact(time=c.wall))
        c.timer(None, c.now)
    assert c.m.status()["my_state"] == "recover-done"
    c.peer_says(FoInput.PEER_NORMAL, S.NORMAL)
    assert c.m.status()["my_state"] == "normal"


OPS = st.one_of(
    st.tuples(st.just("peer"), st.sampled_from(REPORTED), st.booleans()),
    st.tuples(st.sampled_from(["updone", "lost", "reconnect", "admin", "lease", "bndupd"]),
              st.integers(0, len(POOL) - 1), st.booleans()),
    st.tuples(st.just("wait"), st.integers(1, 40), st.booleans()),
)  # fmt: skip


@settings(max_examples=250, deadline=None)
@given(
    role=st.sampled_from(ROLES),
    saved=st.sampled_from([s for s in FailoverState if s is not S.STARTUP]),
    ops=st.lists(OPS, max_size=40),
)
def test_random_input_sequences_keep_invariants(
    role: FailoverRole, saved: S, ops: list[tuple[object, object, bool]]
) -> None:
    c = Checked(role)
    c.start(saved)
    for name, arg, flag in ops:
        connected = c.m.status()["link"] == "connected"
        if name == "peer" and connected:
            assert isinstance(arg, FailoverState)
            c.peer_says(peer_input(arg), arg, flag)
        elif name == "updone" and connected:
            c.receive(FoInput.UPDDONE, UpdDone(time=c.wall))
        elif name == "lost":
            c.feed(FoInput.LINK_LOST if connected else None, "connection_lost", c.wall)
        elif name == "reconnect" and c.m.status()["link"] == "down":
            c.handshake()
        elif name == "admin":
            c.feed(FoInput.ADMIN_PARTNER_DOWN, "admin_partner_down", c.wall)
        elif name == "lease":
            assert isinstance(arg, int)
            lease = Lease(
                POOL[arg],
                BindingState.ACTIVE,
                starts=c.wall,
                ends=c.wall + 30,
                tstp=c.wall + 45,
                cltt=c.wall,
                hw_address=bytes([2, 0, 0, 0, 0, arg]),
            )
            c.m.db.put(lease)
            c.feed(None, "lease_changed", c.wall, lease)
        elif name == "bndupd" and connected:
            assert isinstance(arg, int)
            c.receive(
                None,
                BndUpd(
                    time=c.wall,
                    xid=100 + arg,
                    assigned_ip=POOL[arg],
                    binding_status=2 if flag else 1,
                    chaddr=b"\x01" + bytes(6),
                    lease_expiration=c.wall + 60,
                    stos=c.wall,
                ),
            )
        elif name == "wait":
            assert isinstance(arg, int)
            c.now += arg
            deadline = c.m.next_deadline()
            if deadline is not None and deadline <= c.now:
                c.timer(None, c.now)
        # A machine never lets its database hold an address outside the pool.
        assert {x.address for x in c.m.db} == set(POOL)
