"""Sweep the DHCP server's transition table, and random multi-client runs.

Invariants:
- every message lands on a table rule, and the replies it causes are among the rule's;
- every (kind, situation) pair of the table is reached by some message;
- across random DISCOVER/REQUEST/RENEW/RELEASE/DECLINE/ping/timer sequences from many
  clients, no address is ever ACKed to a client while another client's ACK for it is still
  running, nothing is offered that another client holds, and no two clients hold a live offer
  of the same address.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from carpsim.dhcp import codec
from carpsim.dhcp.actions import Action, LeaseChanged, PingCheck, Transmit
from carpsim.dhcp.client import client_msg, mac
from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.lease import BindingState, Lease
from carpsim.dhcp.options import MessageType as T
from carpsim.dhcp.policy import Standalone
from carpsim.dhcp.server import OFFER_HOLD, DhcpServer
from carpsim.dhcp.server_table import TRANSITIONS, Kind, Situation
from carpsim.dhcp.settings import DhcpServerSettings, StaticMapping

SERVER = IPv4Address("10.7.0.2")
OTHER = IPv4Address("10.7.0.3")
FIRST = IPv4Address("10.7.0.100")
W = 1_800_000_000
REPLY = {T.OFFER: "offer", T.ACK: "ack", T.NAK: "nak"}


def make(size: int = 6, ping: bool = True, policy: Standalone | None = None) -> DhcpServer:
    s = DhcpServerSettings(
        interface="lan",
        subnet=IPv4Network("10.7.0.0/24"),
        interface_address=SERVER,
        range_start=FIRST,
        range_end=FIRST + size - 1,
        gateway=IPv4Address("10.7.0.1"),
        default_lease_time=60,
        max_lease_time=120,
        staticmaps=(StaticMapping(mac(99), IPv4Address("10.7.0.20")),),
        ping_check=ping,
    )
    return DhcpServer(s, policy or Standalone())


class Policy(Standalone):
    """A failover-like policy whose answers are drawn at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def answers(self) -> bool:
        return self.rng.random() < 0.8

    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        return self.rng.random() < 0.7

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        return super().may_allocate(lease, wall) and self.rng.random() < 0.8

    def grant(self, lease: Lease, desired: int, wall: int) -> tuple[int, int | None]:
        return min(desired, 30), wall + desired


def outcomes(actions: list[Action]) -> set[str]:
    got: set[str] = set()
    for a in actions:
        if isinstance(a, Transmit):
            mtype = a.message.message_type
            assert mtype is not None
            got.add(REPLY[mtype])
        elif isinstance(a, PingCheck):
            got.add("ping")
    return got


addresses = st.sampled_from(
    [FIRST + i for i in range(8)] + [IPv4Address("10.7.0.20"), IPv4Address("10.9.0.1")]
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[DhcpMessage, bool]:
    mtype = draw(st.sampled_from([*T, None]))
    n = draw(st.sampled_from([1, 2, 3, 99]))
    msg = client_msg(
        mtype if mtype is not None else T.DISCOVER,
        mac(n),
        requested=draw(st.none() | addresses),
        server_id=draw(st.sampled_from([None, SERVER, OTHER])),
        ciaddr=draw(st.sampled_from([codec.ZERO]) | addresses),
        flags=draw(st.sampled_from([0, codec.FLAG_BROADCAST])),
    )
    if mtype is None:
        msg = DhcpMessage(op=1, xid=1, chaddr=mac(n), options=msg.options[1:])
    if draw(st.booleans()) and mtype in (T.OFFER, T.ACK):
        msg = DhcpMessage(**{**msg.__dict__, "op": 2})
    return msg, draw(st.booleans())


@given(st.lists(messages(), min_size=1, max_size=40), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_every_message_follows_its_rule(seq: list[tuple[DhcpMessage, bool]], seed: int) -> None:
    rng = random.Random(seed)
    srv = make(policy=Policy(rng))
    for i, (msg, bcast) in enumerate(seq):
        actions = srv.handle(float(i), W + i, msg, bcast)
        assert srv.last_rule in TRANSITIONS
        rule = TRANSITIONS[srv.last_rule]
        assert outcomes(actions) <= rule.replies, (srv.last_rule, actions)
        for ping in [a for a in actions if isinstance(a, PingCheck)]:
            srv.ping_result(float(i), W + i, ping.address, rng.random() < 0.3)


def example(kind: Kind, sit: Situation) -> tuple[DhcpServer, DhcpMessage, bool]:
    """A server and a message that land on (kind, sit)."""

    class Off(Standalone):
        def answers(self) -> bool:
            return False

    class Lb(Standalone):
        def serves_discover(self, client_key: bytes, secs: int) -> bool:
            return False

    policy = {Situation.NOT_SERVING: Off(), Situation.PEERS: Lb()}.get(sit, Standalone())
    srv = make(policy=policy)
    mtype = {
        Kind.DISCOVER: T.DISCOVER,
        Kind.REQUEST: T.REQUEST,
        Kind.DECLINE: T.DECLINE,
        Kind.RELEASE: T.RELEASE,
        Kind.INFORM: T.INFORM,
        Kind.SERVER_REPLY: T.OFFER,
        Kind.BOOTP: T.DISCOVER,
    }[kind]
    kw: dict[str, object] = {}
    bcast = False
    if sit is Situation.SELECTING_OURS:
        kw = {"requested": FIRST, "server_id": SERVER}
    elif sit in (Situation.SELECTING_OTHER, Situation.NOT_FOR_US):
        kw = {"requested": FIRST, "server_id": OTHER}
    elif sit is Situation.INIT_REBOOT:
        kw = {"requested": FIRST}
    elif sit in (Situation.RENEWING, Situation.REBINDING):
        kw = {"ciaddr": FIRST}
        bcast = sit is Situation.REBINDING
    elif sit is Situation.FOR_US:
        kw = {"requested": FIRST, "ciaddr": FIRST}
    msg = client_msg(mtype, mac(1), **kw)  # type: ignore[arg-type]
    if kind is Kind.BOOTP:
        msg = DhcpMessage(op=1, xid=1, chaddr=mac(1))
    return srv, msg, bcast


@pytest.mark.parametrize(("kind", "sit"), list(TRANSITIONS))
def test_every_table_pair_is_reachable(kind: Kind, sit: Situation) -> None:
    srv, msg, bcast = example(kind, sit)
    actions = srv.handle(0.0, W, msg, bcast)
    assert srv.last_rule == (kind, sit)
    assert outcomes(actions) <= TRANSITIONS[(kind, sit)].replies


ops = st.tuples(
    st.sampled_from(["discover", "select", "reboot", "renew", "release", "decline", "wait"]),
    st.integers(1, 8),  # client
    st.integers(0, 9),  # address index / wait seconds
    st.booleans(),  # ping answered
)


@given(st.lists(ops, max_size=120), st.booleans())
@settings(max_examples=250, deadline=None)
def test_no_address_is_ever_bound_to_two_clients(  # noqa: C901 - one branch per client message kind in the model
    seq: list[tuple[str, int, int, bool]], ping: bool
) -> None:
    srv = make(size=5, ping=ping)
    now = 0.0
    bound: dict[IPv4Address, tuple[bytes, int]] = {}  # address -> (client, lease end)
    offered: dict[IPv4Address, tuple[bytes, float]] = {}
    last_offer: dict[bytes, IPv4Address] = {}

    def live_for_other(address: IPv4Address, client: bytes) -> bool:
        holder = bound.get(address)
        return holder is not None and holder[0] != client and holder[1] > W + int(now)

    def run(actions: list[Action], answered: bool) -> None:
        for a in actions:
            gone = isinstance(a, LeaseChanged) and a.lease.state is not BindingState.ACTIVE
            if gone and a.old is not None and a.old.address in bound:  # type: ignore[union-attr]
                del bound[a.old.address]  # type: ignore[union-attr]  # released, declined, expired
            if isinstance(a, Transmit):
                m = a.message
                c = m.chaddr
                if m.message_type is T.OFFER:
                    assert not live_for_other(m.yiaddr, c), "offered a bound address"
                    o = offered.get(m.yiaddr)
                    assert o is None or o[0] == c or o[1] <= now, "one address, two offers"
                    offered[m.yiaddr] = (c, now + OFFER_HOLD)
                    last_offer[c] = m.yiaddr
                elif m.message_type is T.ACK and m.yiaddr != codec.ZERO:
                    assert not live_for_other(m.yiaddr, c), "ACKed an address bound elsewhere"
                    ends = W + int(now) + (m.lease_time or 0)
                    bound[m.yiaddr] = (c, ends)
                    event("ack")
                    offered.pop(m.yiaddr, None)
        for p in [a for a in actions if isinstance(a, PingCheck)]:
            run(srv.ping_result(now, W + int(now), p.address, answered), answered)

    for op, n, k, answered in seq:
        c = mac(n)
        wall = W + int(now)
        target = FIRST + (k % 6)
        if op == "discover":
            run(srv.handle(now, wall, client_msg(T.DISCOVER, c)), answered)
        elif op == "select":
            want = last_offer.get(c, target)
            req = client_msg(T.REQUEST, c, requested=want, server_id=SERVER)
            run(srv.handle(now, wall, req), answered)
        elif op == "reboot":
            run(srv.handle(now, wall, client_msg(T.REQUEST, c, requested=target)), answered)
        elif op == "renew":
            run(
                srv.handle(now, wall, client_msg(T.REQUEST, c, ciaddr=target), k % 2 == 0), answered
            )
        elif op == "release":
            run(srv.handle(now, wall, client_msg(T.RELEASE, c, ciaddr=target)), answered)
        elif op == "decline":
            run(srv.handle(now, wall, client_msg(T.DECLINE, c, requested=target)), answered)
        else:
            now += k * 7.0
            deadline = srv.next_deadline()
            while deadline is not None and deadline <= now:
                run(srv.on_timer(deadline), answered)
                nxt = srv.next_deadline()
                if nxt == deadline:
                    break
                deadline = nxt
        # The lease database agrees: one ACTIVE client per address at any time, by design.
        for lease in srv.db.in_state(BindingState.ACTIVE):
            holder = bound.get(lease.address)
            if holder is not None and holder[1] > W + int(now):
                assert holder[0] == lease.hw_address
