"""The DHCP server machine, one RFC 2131 path per test, with the standalone policy."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from carpsim.dhcp import codec
from carpsim.dhcp import options as o
from carpsim.dhcp.actions import Action, LeaseChanged, PingCheck, Transmit
from carpsim.dhcp.client import client_msg, mac
from carpsim.dhcp.lease import BindingState, Lease
from carpsim.dhcp.options import MessageType as T
from carpsim.dhcp.policy import Standalone
from carpsim.dhcp.server import OFFER_HOLD, DhcpServer
from carpsim.dhcp.settings import DhcpServerSettings, StaticMapping

SERVER = IPv4Address("192.168.110.2")
VIP = IPv4Address("192.168.110.254")
OTHER = IPv4Address("192.168.110.3")
W = 1_800_000_000
FIRST = IPv4Address("192.168.110.100")


def settings(ping: bool = False, size: int = 10, **kw: object) -> DhcpServerSettings:
    return DhcpServerSettings(
        interface="eth0",
        subnet=IPv4Network("192.168.110.0/24"),
        interface_address=SERVER,
        range_start=FIRST,
        range_end=FIRST + size - 1,
        gateway=VIP,
        dns_servers=(VIP,),
        domain="lab.example",
        default_lease_time=600,
        max_lease_time=7200,
        ping_check=ping,
        **kw,  # type: ignore[arg-type]
    )


def tx(actions: list[Action]) -> Transmit:
    (only,) = [a for a in actions if isinstance(a, Transmit)]
    return only


def no_tx(actions: list[Action]) -> bool:
    return not any(isinstance(a, Transmit) for a in actions)


def dora(srv: DhcpServer, n: int, now: float = 0.0, **kw: object) -> IPv4Address:
    offer = tx(srv.handle(now, W, client_msg(T.DISCOVER, mac(n), **kw)))  # type: ignore[arg-type]
    assert offer.message.message_type is T.OFFER
    address = offer.message.yiaddr
    req = client_msg(T.REQUEST, mac(n), requested=address, server_id=SERVER, **kw)  # type: ignore[arg-type]
    ack = tx(srv.handle(now, W, req))
    assert ack.message.message_type is T.ACK
    assert ack.message.yiaddr == address
    return address


def test_dora_gives_vip_router_dns_and_server_id_real_address() -> None:
    srv = DhcpServer(settings(), Standalone())
    offer = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1), xid=9)))
    m = offer.message
    assert m.xid == 9
    assert m.yiaddr == FIRST
    assert m.server_id == SERVER
    assert o.ips(m.opt(o.ROUTER) or b"") == (VIP,)
    assert o.ips(m.opt(o.DNS_SERVERS) or b"") == (VIP,)
    assert m.opt(o.SUBNET_MASK) == bytes((255, 255, 255, 0))
    assert m.opt(o.DOMAIN_NAME) == b"lab.example"
    # RFC 2131 §4.1: broadcast bit clear, no ciaddr/giaddr: unicast to yiaddr and chaddr.
    assert (offer.dst_ip, offer.dst_mac, offer.broadcast, offer.dst_port) == (
        FIRST,
        mac(1),
        False,
        68,
    )
    req = client_msg(T.REQUEST, mac(1), requested=FIRST, server_id=SERVER)
    actions = srv.handle(1, W, req)
    kinds = [type(a) for a in actions]
    assert kinds.index(LeaseChanged) < kinds.index(Transmit)  # persist before the ACK leaves
    ack = tx(actions).message
    assert ack.lease_time == 600
    assert o.u32(ack.opt(o.RENEWAL_TIME) or b"") == 300
    assert o.u32(ack.opt(o.REBINDING_TIME) or b"") == 525
    lease = srv.db.get(FIRST)
    assert lease is not None
    assert lease.state is BindingState.ACTIVE
    assert (lease.hw_address, lease.starts, lease.ends, lease.cltt) == (mac(1), W, W + 600, W)


def test_broadcast_flag_and_relay_addressing() -> None:
    srv = DhcpServer(settings(), Standalone())
    flagged = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1), flags=codec.FLAG_BROADCAST)))
    assert flagged.broadcast
    assert flagged.dst_ip == IPv4Address("255.255.255.255")
    agent = b"\x01\x03abc"
    relay = IPv4Address("192.168.110.1")
    msg = client_msg(T.DISCOVER, mac(2), giaddr=relay, extra=((o.RELAY_AGENT, agent),))
    relayed = tx(srv.handle(0, W, msg))
    assert (relayed.dst_ip, relayed.dst_port, relayed.dst_mac) == (relay, 67, None)
    assert relayed.message.giaddr == relay
    assert relayed.message.relay_agent == agent
    assert relayed.message.options[-1][0] == o.RELAY_AGENT
    foreign = client_msg(T.DISCOVER, mac(3), giaddr=IPv4Address("10.9.9.1"))
    assert srv.handle(0, W, foreign) == []
    assert srv.drops["wrongnet"] == 1


def test_two_discovers_never_get_the_same_address() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1)))).message.yiaddr
    b = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(2)))).message.yiaddr
    assert a != b
    # A retransmitted DISCOVER gets the same offer again.
    assert tx(srv.handle(1, W, client_msg(T.DISCOVER, mac(1)))).message.yiaddr == a
    # Holds expire: the timer runs at the hold's end and frees the address.
    deadline = srv.next_deadline()
    assert deadline is not None
    assert deadline == OFFER_HOLD  # client 2's hold; client 1's was renewed at t=1
    srv.on_timer(deadline)
    assert set(srv.held()) == {a}
    srv.on_timer(1 + OFFER_HOLD)
    assert srv.held() == {}


def test_rebooting_client_gets_its_previous_address_back() -> None:
    srv = DhcpServer(settings(), Standalone())
    first = dora(srv, 1)
    dora(srv, 2)
    assert tx(srv.handle(5, W + 5, client_msg(T.DISCOVER, mac(1)))).message.yiaddr == first


def test_requested_address_is_honoured_when_free() -> None:
    srv = DhcpServer(settings(), Standalone())
    wanted = FIRST + 5
    offer = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1), requested=wanted)))
    assert offer.message.yiaddr == wanted


def test_selecting_another_server_forgets_our_offer_silently() -> None:
    srv = DhcpServer(settings(), Standalone())
    srv.handle(0, W, client_msg(T.DISCOVER, mac(1)))
    assert srv.held()
    req = client_msg(T.REQUEST, mac(1), requested=FIRST, server_id=OTHER)
    assert no_tx(srv.handle(0, W, req))
    assert srv.held() == {}


def test_selecting_an_address_someone_holds_is_naked() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = dora(srv, 1)
    nak = tx(srv.handle(0, W, client_msg(T.REQUEST, mac(2), requested=a, server_id=SERVER)))
    assert nak.message.message_type is T.NAK
    assert nak.broadcast
    assert nak.message.yiaddr == codec.ZERO


def test_init_reboot_rules() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = dora(srv, 1)
    ok = tx(srv.handle(1, W + 1, client_msg(T.REQUEST, mac(1), requested=a)))
    assert ok.message.message_type is T.ACK
    wrong_net = client_msg(T.REQUEST, mac(1), requested=IPv4Address("10.0.0.5"))
    assert tx(srv.handle(1, W, wrong_net)).message.message_type is T.NAK
    unknown = client_msg(T.REQUEST, mac(3), requested=FIRST + 7)
    assert tx(srv.handle(1, W, unknown)).message.message_type is T.NAK
    stolen = client_msg(T.REQUEST, mac(3), requested=a)
    assert tx(srv.handle(1, W, stolen)).message.message_type is T.NAK
    assert srv.db.get(a) is not None
    assert srv.db.get(a).hw_address == mac(1)  # type: ignore[union-attr]


def test_renewing_is_unicast_to_ciaddr_and_extends() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = dora(srv, 1)
    ack = tx(srv.handle(300, W + 300, client_msg(T.REQUEST, mac(1), ciaddr=a)))
    assert ack.message.message_type is T.ACK
    assert (ack.dst_ip, ack.dst_mac, ack.broadcast) == (a, None, False)
    assert ack.message.ciaddr == a
    lease = srv.db.get(a)
    assert lease is not None
    assert lease.ends == W + 300 + 600


def test_rebinding_unknown_is_silent_renewing_unknown_is_naked() -> None:
    srv = DhcpServer(settings(), Standalone())
    ghost = FIRST + 3
    req = client_msg(T.REQUEST, mac(1), ciaddr=ghost)
    assert no_tx(srv.handle(0, W, req, to_broadcast=True))
    assert srv.drops["unknownlease"] == 1
    assert tx(srv.handle(0, W, req)).message.message_type is T.NAK
    a = dora(srv, 2)
    rebind = tx(srv.handle(0, W, client_msg(T.REQUEST, mac(2), ciaddr=a), to_broadcast=True))
    assert rebind.message.message_type is T.ACK


def test_release_frees_and_decline_abandons() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = dora(srv, 1)
    not_owner = client_msg(T.RELEASE, mac(2), ciaddr=a, server_id=SERVER)
    assert srv.handle(1, W, not_owner) == []
    actions = srv.handle(1, W + 1, client_msg(T.RELEASE, mac(1), ciaddr=a, server_id=SERVER))
    assert no_tx(actions)
    lease = srv.db.get(a)
    assert lease is not None
    assert lease.state is BindingState.RELEASED
    b = dora(srv, 3)
    decline = client_msg(T.DECLINE, mac(3), requested=b, server_id=SERVER)
    (change,) = [x for x in srv.handle(2, W + 2, decline) if isinstance(x, LeaseChanged)]
    assert change.lease.state is BindingState.ABANDONED
    # The abandoned address is never offered again, even when asked for.
    offer = tx(srv.handle(3, W + 3, client_msg(T.DISCOVER, mac(4), requested=b)))
    assert offer.message.yiaddr != b


def test_inform_acks_without_lease() -> None:
    srv = DhcpServer(settings(), Standalone())
    here = IPv4Address("192.168.110.50")
    ack = tx(srv.handle(0, W, client_msg(T.INFORM, mac(1), ciaddr=here)))
    assert ack.message.message_type is T.ACK
    assert ack.message.yiaddr == codec.ZERO
    assert ack.message.lease_time is None
    assert ack.dst_ip == here
    assert o.ips(ack.message.opt(o.ROUTER) or b"") == (VIP,)
    assert srv.db.in_state(BindingState.ACTIVE) == []


def test_ping_check_abandons_an_answering_address() -> None:
    srv = DhcpServer(settings(ping=True), Standalone())
    actions = srv.handle(0, W, client_msg(T.DISCOVER, mac(1)))
    assert actions[-1] == PingCheck(FIRST)
    assert no_tx(actions)
    again = srv.ping_result(1, W + 1, FIRST, answered=True)
    abandoned = [a.lease for a in again if isinstance(a, LeaseChanged)]
    assert [lease.state for lease in abandoned] == [BindingState.ABANDONED]
    assert again[-1] == PingCheck(FIRST + 1)
    offer = tx(srv.ping_result(2, W + 2, FIRST + 1, answered=False))
    assert offer.message.yiaddr == FIRST + 1
    # A client coming back for its own address is not pinged.
    req = client_msg(T.REQUEST, mac(1), requested=FIRST + 1, server_id=SERVER)
    tx(srv.handle(2, W + 2, req))
    assert tx(srv.handle(3, W + 3, client_msg(T.DISCOVER, mac(1)))).message.yiaddr == FIRST + 1


def test_static_mapping_wins_and_is_never_given_to_others() -> None:
    fixed = IPv4Address("192.168.110.20")
    in_pool = FIRST
    maps = (
        StaticMapping(mac=mac(7), ipaddr=fixed, hostname="printer"),
        StaticMapping(mac=mac(8), ipaddr=in_pool),
    )
    srv = DhcpServer(settings(ping=True, staticmaps=maps), Standalone())
    assert dora(srv, 7) == fixed
    lease_changes = srv.db.get(fixed)
    assert lease_changes is None  # outside the pool: not a pool lease
    assert tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(8)))).message.yiaddr == in_pool
    other = srv.handle(0, W, client_msg(T.DISCOVER, mac(9)))
    assert PingCheck(in_pool) not in other
    stolen = client_msg(T.REQUEST, mac(9), requested=in_pool)
    assert tx(srv.handle(0, W, stolen)).message.message_type is T.NAK


def test_lease_expiry_runs_off_the_timer() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = dora(srv, 1, lease_time=60)
    deadline = srv.next_deadline()
    assert deadline is not None
    assert deadline == OFFER_HOLD or deadline == 60
    actions = srv.on_timer(60)
    (change,) = [x for x in actions if isinstance(x, LeaseChanged)]
    assert change.lease.address == a
    assert change.lease.state is BindingState.EXPIRED


def test_requested_lease_time_is_capped_by_max() -> None:
    srv = DhcpServer(settings(), Standalone())
    offer = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1), lease_time=10**6)))
    assert offer.message.lease_time == 7200


def test_exhausted_pool_is_counted() -> None:
    srv = DhcpServer(settings(size=2), Standalone())
    dora(srv, 1)
    dora(srv, 2)
    assert no_tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(3))))
    assert srv.drops["nofree"] == 1


class NotServing(Standalone):
    def answers(self) -> bool:
        return False


class PeerServesAll(Standalone):
    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        return False


def test_policy_decides_service_and_load_balancing() -> None:
    srv = DhcpServer(settings(), NotServing())
    assert srv.handle(0, W, client_msg(T.DISCOVER, mac(1))) == []
    assert srv.drops["notserving"] == 1
    lb = DhcpServer(settings(), PeerServesAll())
    assert no_tx(lb.handle(0, W, client_msg(T.DISCOVER, mac(1))))
    assert lb.drops["loadbalance"] == 1


def test_peer_binding_ends_our_offer() -> None:
    srv = DhcpServer(settings(), Standalone())
    a = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1)))).message.yiaddr
    lease = srv.db.get(a)
    assert lease is not None
    srv.update_lease(replace(lease, state=BindingState.ACTIVE, hw_address=mac(2), ends=W + 600))
    assert srv.held() == {}
    req = client_msg(T.REQUEST, mac(1), requested=a, server_id=SERVER)
    assert tx(srv.handle(1, W, req)).message.message_type is T.NAK


def test_bad_bytes_are_counted() -> None:
    srv = DhcpServer(settings(), Standalone())
    assert srv.receive(0, W, b"\x01" * 10) == []
    assert srv.drops["short"] == 1
    bootp = codec.encode(codec.DhcpMessage(op=1, xid=1, chaddr=mac(1)))
    assert srv.receive(0, W, bootp) == []
    assert srv.drops["bootp"] == 1
    assert Lease(FIRST, BindingState.FREE) == srv.db.get(FIRST)


class BackupOnly(Standalone):
    """A secondary in normal state: only BACKUP leases are its to give."""

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        return lease.state is BindingState.BACKUP


class HighHalf(Standalone):
    def may_allocate(self, lease: Lease, wall: int) -> bool:
        return super().may_allocate(lease, wall) and lease.address >= FIRST + 100


def test_search_walks_past_addresses_the_policy_refuses() -> None:
    srv = DhcpServer(settings(size=150), BackupOnly())
    for i in range(140, 150):
        lease = srv.db.get(FIRST + i)
        assert lease is not None
        srv.update_lease(replace(lease, state=BindingState.BACKUP))
    got = tx(srv.handle(0, W, client_msg(T.DISCOVER, mac(1)))).message.yiaddr
    assert got == FIRST + 140
    # More refusals than the bounded search tries: the full scan still finds one.
    deep = DhcpServer(settings(size=150), HighHalf())
    assert tx(deep.handle(0, W, client_msg(T.DISCOVER, mac(1)))).message.yiaddr == FIRST + 100


def test_previously_bound_address_free_the_longest_is_reused_first() -> None:
    srv = DhcpServer(settings(size=3), Standalone())
    for n, when in ((1, 50), (2, 10), (3, 30)):
        a = dora(srv, n)
        srv.handle(0, W + when, client_msg(T.RELEASE, mac(n), ciaddr=a, server_id=SERVER))
    oldest = tx(srv.handle(0, W + 60, client_msg(T.DISCOVER, mac(9)))).message.yiaddr
    lease = srv.db.get(oldest)
    assert lease is not None
    assert lease.starts == W + 10


def test_lease_expiry_deadline_is_reached_exactly() -> None:
    # An odd offset between the clocks: the deadline handed out must expire the lease.
    srv = DhcpServer(settings(), Standalone())
    dora(srv, 1, now=1234.567, lease_time=60)
    deadline = srv.next_deadline()
    assert deadline is not None
    changed = [a for a in srv.on_timer(deadline) if isinstance(a, LeaseChanged)]
    assert [c.lease.state for c in changed] == [BindingState.EXPIRED]
    assert srv.next_deadline() is None


def test_message_without_any_client_key_is_dropped() -> None:
    srv = DhcpServer(settings(), Standalone())
    msg = replace(client_msg(T.DISCOVER, mac(1)), chaddr=b"")
    assert srv.handle(0, W, msg) == []
    assert srv.drops["noclientkey"] == 1
