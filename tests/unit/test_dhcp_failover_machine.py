"""The failover machine's rules, one by one, against a scripted peer."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from carpsim.dhcp.failover import codec
from carpsim.dhcp.failover.codec import (
    BndAck,
    BndUpd,
    Connect,
    ConnectAck,
    Message,
    PoolReq,
    State,
    UpdReq,
    UpdReqAll,
)
from carpsim.dhcp.failover.constants import FailoverState, RejectReason
from carpsim.dhcp.failover.events import Action, Close, PersistLease, Send, StateRecord
from carpsim.dhcp.failover.loadbal import hba_from_split
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings

S = FailoverState
B = BindingState
W = 1_790_000_000
POOL = [IPv4Address(f"192.168.110.{100 + i}") for i in range(10)]
MAC_P = bytes([2, 0, 0, 0, 1, 2])  # bucket 27: the primary's
MAC_S = bytes([2, 0, 0, 0, 1, 1])  # bucket 141: the secondary's


def machine(role: FailoverRole, **kw: object) -> FailoverMachine:
    peer = "192.168.110.3" if role is FailoverRole.PRIMARY else "192.168.110.2"
    settings = FailoverSettings(peer=IPv4Address(peer), role=role, name="dhcp_lan", mclt=30, **kw)  # type: ignore[arg-type]
    return FailoverMachine(settings, LeaseDB(), POOL)


def sent(actions: list[Action]) -> list[Message]:
    out: list[Message] = []
    for a in actions:
        if isinstance(a, Send):
            out += codec.StreamFramer().feed(a.data)[0]
    return out


def connect_msg(**kw: object) -> Connect:
    base = Connect(
        time=W,
        relationship_name="dhcp_lan",
        max_unacked=10,
        receive_timer=10,
        vendor_class="isc-4.4.3-P1",
        protocol_version=1,
        tls_request=0,
        mclt=30,
        hba=hba_from_split(128),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def feed(m: FailoverMachine, now: float, *msgs: Message) -> list[Action]:
    return m.data_received(now, int(W + now), b"".join(codec.encode(x) for x in msgs))


def normal_pair_side(role: FailoverRole, window: int = 3, **kw: object) -> FailoverMachine:
    m = machine(role, **kw)
    m.start(0.0, W, StateRecord(S.NORMAL, W - 100, S.NORMAL, W - 100, 30))
    m.connection_up(0.0, W)
    if role is FailoverRole.SECONDARY:
        feed(m, 0.0, connect_msg(max_unacked=window))
    else:
        feed(
            m,
            0.0,
            ConnectAck(time=W, relationship_name="dhcp_lan", max_unacked=window, receive_timer=10),
        )
    feed(m, 0.0, State(time=W, server_state=S.NORMAL, server_flags=0, stos=W - 100))
    assert m.state is S.NORMAL
    return m


def test_primary_sends_connect_like_dhcpd() -> None:
    m = machine(FailoverRole.PRIMARY)
    m.start(0.0, W)
    (msg,) = sent(m.connection_up(0.0, W))
    assert isinstance(msg, Connect)
    assert msg.relationship_name == "dhcp_lan"
    assert (msg.max_unacked, msg.receive_timer, msg.mclt, msg.tls_request) == (10, 10, 30, 0)
    assert msg.protocol_version == 1
    assert msg.hba == b"\xff" * 16 + b"\x00" * 16
    assert msg.time == W


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"relationship_name": "other"}, RejectReason.INVALID_PARTNER),
        ({"hba": None}, RejectReason.HBA_CONFLICT),
        ({"hba": b"\xff" * 31}, RejectReason.HBA_CONFLICT),
        ({"time": W + 61}, RejectReason.TIME_MISMATCH),
        ({"time": W - 61}, RejectReason.TIME_MISMATCH),
        ({"mclt": None}, RejectReason.INVALID_MCLT),
    ],
)
def test_secondary_refuses_connect_as_dhcpd(change: dict[str, object], reason: int) -> None:
    m = machine(FailoverRole.SECONDARY)
    m.start(0.0, W)
    m.connection_up(0.0, W)
    actions = feed(m, 0.0, connect_msg(**change))
    (ack,) = sent(actions)
    assert isinstance(ack, ConnectAck)
    assert ack.reject_reason == reason
    assert any(isinstance(a, Close) for a in actions)
    assert m.status()["link"] == "down"


def test_clock_skew_of_60_s_is_still_accepted() -> None:
    m = machine(FailoverRole.SECONDARY)
    m.start(0.0, W)
    m.connection_up(0.0, W)
    ack, state = sent(feed(m, 0.0, connect_msg(time=W + 60)))
    assert isinstance(ack, ConnectAck)
    assert ack.reject_reason is None
    assert isinstance(state, State)
    assert (state.server_state, state.server_flags) == (S.RECOVER, 1)  # saved + STARTUP flag


def test_second_connect_is_a_duplicate_connection() -> None:
    m = machine(FailoverRole.SECONDARY)
    m.start(0.0, W)
    m.connection_up(0.0, W)
    feed(m, 0.0, connect_msg())
    (ack,) = sent(feed(m, 0.1, connect_msg()))
    assert isinstance(ack, ConnectAck)
    assert ack.reject_reason == RejectReason.DUPLICATE_CONNECTION


def test_secondary_without_connect_drops_the_link_after_15_s() -> None:
    m = machine(FailoverRole.SECONDARY, max_response_delay=60)
    m.start(0.0, W)
    m.connection_up(0.0, W)
    actions = m.on_timer(15.0)
    assert any(isinstance(a, Close) for a in actions)


def test_contact_every_third_of_the_peer_receive_timer_and_timeout() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)
    assert m.next_deadline() == pytest.approx(10 / 3)
    assert [x.name for x in sent(m.on_timer(10 / 3))] == ["CONTACT"]
    actions: list[Action] = []
    t = 10 / 3
    while not any(isinstance(a, Close) for a in actions):
        deadline = m.next_deadline()
        assert deadline is not None
        t = deadline
        actions = m.on_timer(t)
    assert t == pytest.approx(10.0)  # own max-response-delay of silence
    assert m.state is S.COMMUNICATIONS_INTERRUPTED


def test_bndupd_window_is_the_peers_max_unacked() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)  # peer said max-unacked 3
    for addr in POOL[:6]:
        lease = Lease(addr, B.ACTIVE, starts=W, ends=W + 30, tstp=W + 45, cltt=W, hw_address=MAC_P)
        m.db.put(lease)
        m.lease_changed(0.0, W, lease)
    assert m.status()["unacked"] == 3
    xid, first = next(iter(m.sync.inflight.items()))
    actions = feed(m, 0.1, BndAck(time=W, xid=xid, assigned_ip=first.address))
    assert [x.name for x in sent(actions)] == ["BNDUPD"]  # the window moved by one
    assert m.status()["unacked"] == 3
    acked = m.db.get(first.address)
    assert acked is not None
    assert acked.tsfp == first.lease.tstp  # the potential expiry we sent is now acknowledged
    assert any(isinstance(a, PersistLease) for a in actions)


def test_bndacks_are_batched_and_follow_the_persisted_lease() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)  # our max-unacked 10 -> flush at 5
    actions: list[Action] = []
    for i in range(4):
        actions += feed(
            m,
            0.1,
            BndUpd(
                time=W,
                xid=50 + i,
                assigned_ip=POOL[i],
                binding_status=2,
                chaddr=b"\x01" + MAC_S,
                lease_expiration=W + 30,
                potential_expiration=W + 45,
                stos=W,
                cltt=W,
            ),
        )
    assert not [x for x in sent(actions) if x.name == "BNDACK"]
    assert sum(isinstance(a, PersistLease) for a in actions) == 4
    fifth = feed(
        m,
        0.2,
        BndUpd(
            time=W,
            xid=60,
            assigned_ip=POOL[5],
            binding_status=2,
            chaddr=b"\x01" + MAC_S,
            lease_expiration=W + 30,
            stos=W,
        ),
    )
    kinds = [type(a).__name__ for a in fifth]
    assert kinds.index("PersistLease") < kinds.index("Send")
    assert [x.xid for x in sent(fifth) if isinstance(x, BndAck)] == [50, 51, 52, 53, 60]
    # A lone one waits 2 s.
    lone = feed(m, 1.0, BndUpd(time=W, xid=70, assigned_ip=POOL[6], binding_status=1, stos=W))
    assert not sent(lone)
    assert [x.xid for x in sent(m.on_timer(3.0))] == [70]


@pytest.mark.parametrize(
    "upd",
    [
        BndUpd(xid=1, binding_status=2),
        BndUpd(xid=1, assigned_ip=POOL[0]),
        BndUpd(xid=1, assigned_ip=POOL[0], binding_status=2),  # ACTIVE without chaddr
        BndUpd(xid=1, assigned_ip=POOL[0], binding_status=4),  # RELEASED without chaddr
    ],
)
def test_missing_binding_information_is_rejected_with_3(upd: BndUpd) -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)
    feed(m, 0.1, upd)
    acks = [x for x in sent(m.on_timer(5.0)) if isinstance(x, BndAck)]
    assert [a.reject_reason for a in acks] == [RejectReason.MISSING_BIND_INFO]


def test_address_outside_the_pool_is_rejected_with_1() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)
    feed(m, 0.1, BndUpd(xid=1, assigned_ip=IPv4Address("10.0.0.1"), binding_status=1))
    acks = [x for x in sent(m.on_timer(5.0)) if isinstance(x, BndAck)]
    assert [a.reject_reason for a in acks] == [RejectReason.ILLEGAL_IP]


def test_crossing_update_loses_to_our_unacked_active() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)
    mine = Lease(POOL[3], B.ACTIVE, starts=W, ends=W + 30, tstp=W + 45, cltt=W, hw_address=MAC_S)
    m.db.put(mine)
    m.lease_changed(0.0, W, mine)
    feed(
        m, 0.1, BndUpd(xid=9, assigned_ip=POOL[3], binding_status=3, chaddr=b"\x01" + MAC_P, stos=W)
    )
    acks = [x for x in sent(m.on_timer(5.0)) if isinstance(x, BndAck)]
    assert [a.reject_reason for a in acks] == [RejectReason.LESS_CRITICAL]
    lease = m.db.get(POOL[3])
    assert lease is not None
    assert lease.state is B.ACTIVE


def test_updreqall_sends_every_binding_then_upddone_after_the_last_ack() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY, window=20)
    out = sent(feed(m, 0.1, UpdReqAll(time=W, xid=77)))
    assert [x.name for x in out] == ["BNDUPD"] * 10
    done: list[Message] = []
    for x in out:
        assert isinstance(x, BndUpd)
        done += sent(feed(m, 0.2, BndAck(time=W, xid=x.xid, assigned_ip=x.assigned_ip)))
    assert [(x.name, x.xid) for x in done] == [("UPDDONE", 77)]


def test_updreq_sends_only_what_the_peer_has_not_acked() -> None:
    m = normal_pair_side(FailoverRole.SECONDARY)
    lease = Lease(POOL[2], B.ACTIVE, starts=W, ends=W + 30, tstp=W + 45, cltt=W, hw_address=MAC_S)
    m.db.put(lease)
    first = sent(m.lease_changed(0.0, W, lease))
    assert [x.name for x in first] == ["BNDUPD"]
    m.connection_lost(0.5, W)  # never acked
    assert m.state is S.COMMUNICATIONS_INTERRUPTED
    m.connection_up(6.0, W + 6)
    feed(m, 6.0, connect_msg(time=W + 6))
    feed(m, 6.0, State(time=W + 6, server_state=S.COMMUNICATIONS_INTERRUPTED, server_flags=0))
    again = sent(feed(m, 6.1, UpdReq(time=W + 6, xid=5)))
    assert [(x.name, getattr(x, "assigned_ip", None)) for x in again][:1] == [("BNDUPD", POOL[2])]
    assert len([x for x in again if x.name == "BNDUPD"]) == 1


def test_pool_division_on_entering_normal_prefers_the_secondarys_clients() -> None:
    m = machine(FailoverRole.PRIMARY)
    m.db.put(Lease(POOL[9], B.FREE, starts=W - 5000, hw_address=MAC_S))
    m.start(0.0, W, StateRecord(S.COMMUNICATIONS_INTERRUPTED, W - 100, S.NORMAL, W - 100, 30))
    m.connection_up(0.0, W)
    feed(m, 0.0, ConnectAck(time=W, relationship_name="dhcp_lan", max_unacked=10, receive_timer=10))
    feed(m, 0.0, State(time=W, server_state=S.COMMUNICATIONS_INTERRUPTED, server_flags=0))
    assert m.state is S.NORMAL
    backup = {x.address for x in m.db.in_state(B.BACKUP)}
    assert len(backup) == 5  # (10 free - 0 backup) / 2
    assert POOL[9] in backup
    resp = sent(feed(m, 0.1, PoolReq(time=W, xid=3)))
    assert [x.name for x in resp if x.name == "POOLRESP"] == ["POOLRESP"]


def test_policy_in_normal_follows_the_hash_and_the_own_pool() -> None:
    p = normal_pair_side(FailoverRole.PRIMARY)
    s = normal_pair_side(FailoverRole.SECONDARY)
    assert p.serves_discover(MAC_P, 0)
    assert not p.serves_discover(MAC_S, 0)
    assert s.serves_discover(MAC_S, 0)
    assert not s.serves_discover(MAC_P, 0)
    assert s.serves_discover(MAC_P, 4)  # load balance max seconds 3
    free = Lease(POOL[0], B.FREE)
    backup = Lease(POOL[0], B.BACKUP)
    assert p.may_allocate(free, W)
    assert not p.may_allocate(backup, W)
    assert s.may_allocate(backup, W)
    assert not s.may_allocate(free, W)
    assert not p.may_allocate(replace(free, reserved=True), W)


def test_mclt_grant_rule() -> None:
    m = normal_pair_side(FailoverRole.PRIMARY)
    fresh = Lease(POOL[0], B.FREE)
    assert m.grant(fresh, 20, W) == (20, W + 30)  # D <= MCLT: D, tstp = now + D + D/2
    assert m.grant(fresh, 600, W) == (30, W + 615)  # the LAB's first lease: MCLT
    acked = replace(fresh, tsfp=W + 615)
    assert m.grant(acked, 600, W + 14) == (600, W + 14 + 900)  # the LAB renewal: 600 s
    assert m.grant(replace(fresh, tsfp=W + 100), 600, W) == (130, W + 665)


def test_partner_down_uses_the_partners_pool_only_after_mclt() -> None:
    m = machine(FailoverRole.SECONDARY, auto_partner_down=20)
    m.db.put(Lease(POOL[1], B.EXPIRED, starts=W - 50, ends=W - 50, tsfp=W - 40, hw_address=MAC_P))
    m.start(0.0, W, StateRecord(S.NORMAL, W - 100, S.NORMAL, W - 100, 30))
    m.on_timer(15.0)  # startup alone: normal -> communications-interrupted
    assert m.state is S.COMMUNICATIONS_INTERRUPTED
    assert not m.may_allocate(Lease(POOL[0], B.FREE), W + 15)
    m.on_timer(35.0)
    assert m.status()["my_state"] == "partner-down"
    entered = W + 35
    assert not m.may_allocate(Lease(POOL[0], B.FREE), entered + 30)
    assert m.may_allocate(Lease(POOL[0], B.FREE), entered + 31)
    expired = m.db.get(POOL[1])
    assert expired is not None
    assert expired.tsfp == entered + 30  # STOS + MCLT on entry
    assert not m.may_allocate(expired, entered + 30)
    assert m.may_allocate(expired, entered + 31)
    assert not m.may_allocate(replace(expired, state=B.ACTIVE), entered + 1000)
