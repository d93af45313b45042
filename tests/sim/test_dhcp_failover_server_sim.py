"""The real DHCP server machine (`carpsim.dhcp.server`) on both nodes of a failover pair.

Each node runs `DhcpServer` with the node's `FailoverMachine` as its policy and the same
`LeaseDB`; the server's `LeaseChanged` goes to `lease_changed`, the machine's `PersistLease` to
`DhcpServer.update_lease`, exactly as the node wires them. Clients speak DHCP messages
(DISCOVER/OFFER/REQUEST/ACK, renew, rebind, release) to every server they can reach; the check
on every ACK is that no other client holds the address.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network

from carpsim.dhcp import options as o
from carpsim.dhcp.actions import Action, LeaseChanged, PingCheck, Transmit
from carpsim.dhcp.client import client_msg
from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.lease import Lease
from carpsim.dhcp.options import MessageType
from carpsim.dhcp.server import DhcpServer
from carpsim.dhcp.settings import DhcpServerSettings
from carpsim.sim.dhcp_pair import FailoverNode, FailoverPair, db_view
from carpsim.sim.runner import SimNode

S = FailoverState
POOL = 30
ADDR = {"p": IPv4Address("192.168.110.2"), "s": IPv4Address("192.168.110.3")}


class PolicyOf:
    """The node's current failover machine (a restart makes a new one)."""

    def __init__(self, node: FailoverNode) -> None:
        self.node = node

    def answers(self) -> bool:
        return self.node.machine.answers()

    def serves_discover(self, client_key: bytes, secs: int) -> bool:
        return self.node.machine.serves_discover(client_key, secs)

    def may_allocate(self, lease: Lease, wall: int) -> bool:
        return self.node.machine.may_allocate(lease, wall)

    def grant(self, lease: Lease, desired: int, wall: int) -> tuple[int, int | None]:
        return self.node.machine.grant(lease, desired, wall)


class ServerNode(SimNode):
    def __init__(self, fo: FailoverNode) -> None:
        super().__init__(f"{fo.name}-dhcp")
        self.fo = fo
        settings = DhcpServerSettings(
            interface="lan",
            subnet=IPv4Network("192.168.110.0/24"),
            interface_address=ADDR[fo.name],
            range_start=IPv4Address("192.168.110.100"),
            range_end=IPv4Address(int(IPv4Address("192.168.110.100")) + POOL - 1),
            gateway=IPv4Address("192.168.110.254"),
            dns_servers=(IPv4Address("192.168.110.254"),),
            default_lease_time=120,
            max_lease_time=600,
            failover=fo.settings,
            ping_check=False,
        )
        self.server = DhcpServer(settings, PolicyOf(fo), fo.db)
        fo.lease_hook = self.server.update_lease
        self.replies: list[DhcpMessage] = []

    def next_deadline(self) -> float | None:
        return self.server.next_deadline() if self.fo.alive else None

    def on_timer(self, now: float) -> None:
        self.execute(now, self.server.on_timer(now))

    def ask(self, now: float, msg: DhcpMessage, broadcast: bool) -> list[DhcpMessage]:
        self.replies = []
        wall = self.fo.wall(now)
        self.execute(now, self.server.handle(now, wall, msg, broadcast))
        return self.replies

    def execute(self, now: float, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, LeaseChanged) and act.in_pool:
                fo = self.fo
                fo.execute(now, fo.machine.lease_changed(now, fo.wall(now), act.lease))
            elif isinstance(act, Transmit):
                self.replies.append(act.message)
            elif isinstance(act, PingCheck):
                raise AssertionError("ping check is off")


@dataclass
class WireClient:
    mac: bytes
    address: IPv4Address | None = None
    server: str | None = None
    until: float = 0.0
    lease: float = 0.0
    since: float | None = None
    gen: int = 0
    xid: int = 0


class WireClients:
    def __init__(self, pair: FailoverPair, servers: dict[str, ServerNode], count: int, seed: int):
        self.pair = pair
        self.servers = servers
        self.rng = random.Random(seed)
        self.clients = [WireClient(bytes([2, 0, 0, 0, 3, i])) for i in range(count)]
        self.reach = {"p", "s"}
        self.violations: list[str] = []
        self.acks: dict[str, int] = {"p": 0, "s": 0}
        self.active = True

    def begin(self) -> None:
        for c in self.clients:
            self._later(c, self.rng.uniform(0, 10), self._discover)

    def _later(self, c: WireClient, delay: float, fn: object) -> None:
        gen = c.gen

        def run() -> None:
            if c.gen == gen and self.active:
                fn(c)  # type: ignore[operator]

        self.pair.at(self.pair.now + delay, run)

    def _reachable(self) -> list[ServerNode]:
        out = [self.servers[n] for n in sorted(self.reach) if self.servers[n].fo.alive]
        self.rng.shuffle(out)
        return out

    def _msg(self, c: WireClient, mtype: MessageType, **kw: object) -> DhcpMessage:
        c.xid += 1
        now = self.pair.now
        secs = int(now - c.since) if c.since is not None else 0
        return replace(client_msg(mtype, c.mac, xid=c.xid, **kw), secs=min(secs, 65535))  # type: ignore[arg-type]

    def _bound(self, c: WireClient, server: str, ack: DhcpMessage) -> None:
        now = self.pair.now
        raw = ack.opt(o.LEASE_TIME)
        assert raw is not None
        seconds = int.from_bytes(raw, "big")
        for other in self.clients:
            if other is not c and other.address == ack.yiaddr and other.until > now:
                self.violations.append(
                    f"t={now:.1f} {server} acked {ack.yiaddr} to {c.mac.hex()}, held by "
                    f"{other.mac.hex()} until {other.until:.1f}"
                )
        assert ack.opt(o.ROUTER) == IPv4Address("192.168.110.254").packed
        c.gen += 1
        c.address, c.server, c.until, c.lease, c.since = (
            ack.yiaddr,
            server,
            now + seconds,
            seconds,
            None,
        )
        self.acks[server] += 1
        self._later(c, seconds / 2, self._renew)

    def _discover(self, c: WireClient) -> None:
        if c.since is None:
            c.since = self.pair.now
        now = self.pair.now
        offers: list[tuple[str, DhcpMessage]] = []
        for node in self._reachable():
            for reply in node.ask(now, self._msg(c, MessageType.DISCOVER), True):
                if reply.message_type is MessageType.OFFER:
                    offers.append((node.fo.name, reply))
        if not offers:
            self._later(c, 4.0, self._discover)
            return
        name, offer = offers[0]
        sid = IPv4Address(offer.opt(o.SERVER_ID) or b"\0\0\0\0")
        request = self._msg(c, MessageType.REQUEST, requested=offer.yiaddr, server_id=sid)
        for node in self._reachable():
            for reply in node.ask(now, request, True):
                if reply.message_type is MessageType.ACK and node.fo.name == name:
                    self._bound(c, name, reply)
                    return
        self._later(c, 4.0, self._discover)

    def _renew(self, c: WireClient) -> None:
        now = self.pair.now
        if c.address is None:
            return
        roll = self.rng.random()
        if roll < 0.15:
            self._release(c)
            return
        if roll < 0.3:  # leaves silently
            c.gen += 1
            c.address = None
            self._later(c, self.rng.uniform(5, 60), self._discover)
            return
        rebinding = now >= c.until - c.lease / 8
        msg = self._msg(c, MessageType.REQUEST, ciaddr=c.address)
        for node in self._reachable():
            if not rebinding and node.fo.name != c.server:
                continue
            for reply in node.ask(now, msg, rebinding):
                if reply.message_type is MessageType.ACK:
                    self._bound(c, node.fo.name, reply)
                    return
                if reply.message_type is MessageType.NAK:
                    c.gen += 1
                    c.address = None
                    self._later(c, 1.0, self._discover)
                    return
        left = c.until - now
        if left > 3.0:
            self._later(c, min(left / 2, max(1.0, left - c.lease / 8)), self._renew)
        else:
            c.gen += 1
            c.address = None
            self._later(c, max(0.0, left), self._discover)

    def _release(self, c: WireClient) -> None:
        now = self.pair.now
        address, server = c.address, c.server
        c.gen += 1
        c.address = None
        if address is not None and server in self.reach and self.servers[server].fo.alive:
            msg = self._msg(c, MessageType.RELEASE, ciaddr=address, server_id=ADDR[server])
            self.servers[server].ask(now, msg, False)
        self._later(c, self.rng.uniform(5, 40), self._discover)


def build(seed: int) -> tuple[FailoverPair, dict[str, ServerNode], WireClients]:
    pair = FailoverPair(seed, pool_size=POOL)
    servers = {n: ServerNode(pair.nodes[n]) for n in ("p", "s")}
    for node in servers.values():
        pair.add_node(node)  # type: ignore[arg-type]
    pair.start("s")
    pair.start("p")
    assert pair.run_until_quiet(lambda: pair.both(S.NORMAL), 30.0)
    clients = WireClients(pair, servers, 20, seed)
    clients.begin()
    return pair, servers, clients


def settle(pair: FailoverPair, clients: WireClients) -> None:
    clients.active = False
    pair.run_for(700.0)
    a, b = db_view(pair.nodes["p"].db), db_view(pair.nodes["s"].db)
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert clients.violations == []


def test_real_servers_share_the_load_and_the_database() -> None:
    pair, _servers, clients = build(21)
    pair.run_for(300.0)
    assert clients.acks["p"] > 10
    assert clients.acks["s"] > 10
    assert clients.violations == []
    settle(pair, clients)


def test_real_servers_through_partition_and_partner_down() -> None:
    pair, _servers, clients = build(22)
    pair.run_for(120.0)
    pair.partition(["p", "p-dhcp"], ["s", "s-dhcp"])
    clients.reach = {"s"}
    before = clients.acks["s"]
    pair.run_for(150.0)
    assert pair.nodes["s"].state is S.PARTNER_DOWN
    assert clients.acks["s"] > before
    pair.heal()
    pair.run_until_quiet(lambda: pair.both(S.NORMAL), pair.now + 60.0)
    clients.reach = {"p", "s"}
    assert pair.both(S.NORMAL)
    pair.run_for(200.0)
    settle(pair, clients)
