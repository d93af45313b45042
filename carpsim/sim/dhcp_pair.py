"""DHCP failover on the runner: two `FailoverMachine`s on one TCP-like stream, and clients.

Each node owns a `LeaseDB` (its lease file: it survives restarts, as a fsynced file does) and
the last `PersistFailoverState` record, handed back to the machine at each start. A node's
wall clock is virtual time plus its own offset, so peers can disagree about the time.

`Clients` is a small client population standing in for the DHCP server's decisions: it asks
each node's policy (answers, serves_discover, may_allocate, grant), writes the lease and calls
`lease_changed`, as the real server does. It checks the safety invariant on every grant: no
address is held by two clients at once, and no grant contradicts a live ACTIVE binding for
another client in the other node's database.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.failover.events import (
    Action,
    Close,
    Connect,
    CountDrop,
    PersistFailoverState,
    PersistLease,
    Send,
    StateChanged,
    StateRecord,
)
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings
from carpsim.sim.link import StreamChannel, StreamClosed, StreamData, StreamEvent, StreamOpened
from carpsim.sim.runner import Runner, SimNode

B = BindingState
FO = "failover"
BASE_WALL = 1_790_000_000
"""Unix seconds at virtual time 0 (any fixed value: only differences matter)."""


@dataclass(frozen=True)
class Transition:
    time: float
    node: str
    old: FailoverState
    new: FailoverState
    reason: str


class FailoverNode(SimNode):
    """One server's failover side: executes the machine's actions on the stream."""

    def __init__(
        self,
        name: str,
        settings: FailoverSettings,
        pool: list[IPv4Address],
        channel: StreamChannel,
        trace: list[Transition],
        *,
        skew: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.pool = pool
        self.channel = channel
        self.trace = trace
        self.skew = skew
        self.db = LeaseDB()
        self.record: StateRecord | None = None
        self.machine = FailoverMachine(settings, self.db, pool)
        self.alive = False
        self.drops: Counter[str] = Counter()
        self.persisted = 0
        self.bytes_sent = 0
        self.lease_hook: Callable[[Lease], None] | None = None
        """Called for every `PersistLease` (a DHCP server's `update_lease`, say)."""

    def wall(self, now: float) -> int:
        return int(BASE_WALL + now + self.skew)

    def start(self, now: float) -> None:
        self.alive = True
        self.channel.attach(self.name)
        self.machine = FailoverMachine(self.settings, self.db, self.pool)
        self.execute(now, self.machine.start(now, self.wall(now), self.record))

    @property
    def state(self) -> FailoverState:
        return self.machine.state

    def next_deadline(self) -> float | None:
        return self.machine.next_deadline()

    def on_timer(self, now: float) -> None:
        self.execute(now, self.machine.on_timer(now))

    def stream_event(self, now: float, event: StreamEvent) -> None:
        m, wall = self.machine, self.wall(now)
        if isinstance(event, StreamOpened):
            self.execute(now, m.connection_up(now, wall))
        elif isinstance(event, StreamData):
            self.execute(now, m.data_received(now, wall, event.data))
        elif isinstance(event, StreamClosed):
            self.execute(now, m.connection_lost(now, wall, event.reason))

    def execute(self, now: float, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send):
                self.bytes_sent += len(act.data)
                self.channel.send(now, self.name, act.data)
            elif isinstance(act, Connect):
                self.channel.connect(now, self.name)
            elif isinstance(act, Close):
                self.channel.close(now, self.name)
            elif isinstance(act, PersistFailoverState):
                self.record = act.record
            elif isinstance(act, PersistLease):
                self.persisted += 1
                if self.lease_hook is not None:
                    self.lease_hook(act.lease)
            elif isinstance(act, StateChanged):
                self.trace.append(Transition(now, self.name, act.old, act.new, act.reason))
            elif isinstance(act, CountDrop):
                self.drops[act.reason] += 1


def pool_addresses(count: int) -> list[IPv4Address]:
    base = int(IPv4Address("192.168.110.100"))
    return [IPv4Address(base + i) for i in range(count)]


class FailoverPair(Runner[FailoverNode]):
    """Primary "p" and secondary "s" with pfSense's peer block, on virtual time."""

    def __init__(
        self,
        seed: int,
        *,
        pool_size: int = 40,
        mclt: int = 30,
        auto_partner_down: int = 20,
        skew: tuple[float, float] = (0.0, 0.0),
        delay: float = 0.001,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(seed=seed, max_steps=3_000_000)
        self.channel = StreamChannel(FO, ("p", "s"), self.derive_rng(), delay=delay, jitter=jitter)
        self.add_stream(self.channel)
        for end in self.channel.ends:
            self.channel.detach(0.0, end)  # not listening until the node starts
        self.trace: list[Transition] = []
        pool = pool_addresses(pool_size)
        for name, role, me, peer in (
            ("p", FailoverRole.PRIMARY, "192.168.110.2", "192.168.110.3"),
            ("s", FailoverRole.SECONDARY, "192.168.110.3", "192.168.110.2"),
        ):
            settings = FailoverSettings(
                peer=IPv4Address(peer),
                role=role,
                address=IPv4Address(me),
                name="dhcp_lan",
                mclt=mclt,
                auto_partner_down=auto_partner_down,
            )
            skew_i = skew[0] if name == "p" else skew[1]
            self.add_node(FailoverNode(name, settings, pool, self.channel, self.trace, skew=skew_i))

    def start(self, name: str) -> None:
        self.nodes[name].start(self.now)

    def crash(self, name: str) -> None:
        """SIGKILL: the kernel resets the connection; the lease file and state block stay."""
        self.kill(name)

    def restart(self, name: str) -> None:
        if self.nodes[name].alive:
            self.kill(name)
        self.start(name)

    def states(self) -> tuple[FailoverState, FailoverState]:
        return self.nodes["p"].state, self.nodes["s"].state

    def both(self, state: FailoverState) -> bool:
        return all(self.nodes[n].alive and self.nodes[n].state is state for n in ("p", "s"))

    def path(self, name: str) -> list[FailoverState]:
        return [t.new for t in self.trace if t.node == name]


# ------------------------------------------------------------------------------ clients


@dataclass
class Client:
    mac: bytes
    address: IPv4Address | None = None
    server: str | None = None
    until: float = 0.0
    """Virtual time the lease ends (the client's own view, independent of server clocks)."""
    t1: float = 0.0
    t2: float = 0.0
    asking_since: float | None = None
    gen: int = 0
    """Bumped on every change so stale scheduled events do nothing."""


@dataclass
class Clients:
    """A population on the servers' LAN; `reach` says which servers their packets reach."""

    pair: FailoverPair
    count: int = 25
    lease_time: int = 120
    leave_chance: float = 0.3
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311 - seeded simulation
    reach: set[str] = field(default_factory=lambda: {"p", "s"})
    clients: list[Client] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    grants: Counter[str] = field(default_factory=Counter)
    failed_asks: int = 0
    active: bool = True
    """False: clients stop acting (their leases then run out at the servers)."""

    def __post_init__(self) -> None:
        for i in range(self.count):
            self.clients.append(Client(bytes([2, 0, 0, 0, 1 + i // 256, i % 256])))

    def begin(self, spread: float = 10.0) -> None:
        for c in self.clients:
            self._later(c, self.rng.uniform(0, spread), self._discover)
        self.pair.at(self.pair.now + 1.0, self._sweep)

    # -- scheduling -----------------------------------------------------------------------

    def _later(self, c: Client, delay: float, fn: object) -> None:
        gen = c.gen

        def run() -> None:
            if c.gen == gen and self.active:
                fn(c)  # type: ignore[operator]

        self.pair.at(self.pair.now + delay, run)

    def _servers(self) -> list[FailoverNode]:
        nodes = [self.pair.nodes[n] for n in sorted(self.reach) if self.pair.nodes[n].alive]
        self.rng.shuffle(nodes)
        return nodes

    # -- the server side, as the DHCP server would ask its policy -------------------------

    def _grant(self, node: FailoverNode, c: Client, lease: Lease) -> None:
        now = self.pair.now
        wall = node.wall(now)
        m = node.machine
        granted, tstp = m.grant(lease, self.lease_time, wall)
        if granted <= 0:
            return
        self._check(node, c, lease.address)
        new = replace(
            lease,
            state=B.ACTIVE,
            starts=wall,
            ends=wall + granted,
            tstp=tstp,
            cltt=wall,
            hw_type=1,
            hw_address=c.mac,
            client_id=None,
        )
        node.db.put(new)
        c.gen += 1
        c.address, c.server = lease.address, node.name
        c.until = now + granted
        c.t1, c.t2 = now + granted / 2, now + granted * 7 / 8
        c.asking_since = None
        self.grants[node.name] += 1
        node.execute(now, m.lease_changed(now, wall, new))
        self._later(c, granted / 2, self._renew)

    def _check(self, node: FailoverNode, c: Client, address: IPv4Address) -> None:
        now = self.pair.now
        for other in self.clients:
            if other is not c and other.address == address and other.until > now:
                self.violations.append(
                    f"t={now:.1f} {node.name} gave {address} to {c.mac.hex()} while "
                    f"{other.mac.hex()} holds it until {other.until:.1f}"
                )
        peer = self.pair.nodes["s" if node.name == "p" else "p"]
        theirs = peer.db.get(address)
        if (
            theirs is not None
            and theirs.state is B.ACTIVE
            and theirs.hw_address not in (b"", c.mac)
            and (theirs.ends or 0) > peer.wall(now)
            and any(
                o.mac == theirs.hw_address and o.address == address and o.until > now
                for o in self.clients
            )
        ):
            self.violations.append(
                f"t={now:.1f} {node.name} gave {address} to {c.mac.hex()}; {peer.name} "
                f"has it ACTIVE for {theirs.hw_address.hex()}"
            )

    def _offer(self, node: FailoverNode, c: Client, secs: int) -> Lease | None:
        m, wall = node.machine, node.wall(self.pair.now)
        if not m.serves_discover(c.mac, secs):
            return None
        mine = node.db.by_hw(1, c.mac)
        if mine is not None and mine.state is B.ACTIVE and mine.hw_address == c.mac:
            return mine
        if mine is not None and m.may_allocate(mine, wall):
            return mine
        for lease in sorted(node.db, key=lambda x: x.address):
            if m.may_allocate(lease, wall):
                return lease
        return None

    # -- client behaviour -----------------------------------------------------------------

    def _discover(self, c: Client) -> None:
        now = self.pair.now
        if c.asking_since is None:
            c.asking_since = now
        secs = int(now - c.asking_since)
        for node in self._servers():
            lease = self._offer(node, c, secs)
            if lease is not None:
                self._grant(node, c, lease)
                return
        self.failed_asks += 1
        self._later(c, 4.0, self._discover)

    def _renew(self, c: Client) -> None:
        now = self.pair.now
        if c.address is None:
            return
        if self.rng.random() < self.leave_chance / 2:
            self._release(c)
            return
        if self.rng.random() < self.leave_chance / 2:
            self._vanish(c)
            return
        rebinding = now >= c.t2
        for node in self._servers():
            if not rebinding and node.name != c.server:
                continue
            lease = node.db.get(c.address)
            if not node.machine.answers() or lease is None:
                continue
            if lease.state is B.ACTIVE and lease.hw_address == c.mac:
                self._grant(node, c, lease)
                return
            if lease.state is B.ACTIVE:
                self._drop(c)  # NAK: the server knows someone else has it
                self._later(c, 1.0, self._discover)
                return
        if now + 2.0 < c.until:
            self._later(
                c, max(1.0, min(c.t2, c.until) - now if not rebinding else 2.0), self._renew
            )
        else:
            self._later(c, max(0.0, c.until - now), self._expired)

    def _expired(self, c: Client) -> None:
        self._drop(c)
        self._later(c, 0.5, self._discover)

    def _release(self, c: Client) -> None:
        now = self.pair.now
        address, server = c.address, c.server
        self._drop(c)
        node = self.pair.nodes[server or "p"]
        if address is not None and node.alive and node.name in self.reach:
            lease = node.db.get(address)
            if lease is not None and lease.state is B.ACTIVE and lease.hw_address == c.mac:
                wall = node.wall(now)
                new = replace(lease, state=B.RELEASED, starts=wall, ends=wall, cltt=wall)
                node.db.put(new)
                node.execute(now, node.machine.lease_changed(now, wall, new))
        self._later(c, self.rng.uniform(5, 40), self._discover)

    def _vanish(self, c: Client) -> None:
        """Leaves without a RELEASE: its lease will expire at the servers."""
        self._drop(c)
        self._later(c, self.rng.uniform(5, 60), self._discover)

    def _drop(self, c: Client) -> None:
        c.gen += 1
        c.address, c.server, c.until, c.asking_since = None, None, 0.0, None

    def _sweep(self) -> None:
        """The servers' expiry pass: an ACTIVE binding past its end becomes EXPIRED."""
        now = self.pair.now
        for node in self.pair.nodes.values():
            if not node.alive:
                continue
            wall = node.wall(now)
            for lease in node.db.in_state(B.ACTIVE):
                if lease.ends is not None and lease.ends < wall:
                    new = replace(lease, state=B.EXPIRED, starts=wall)
                    node.db.put(new)
                    node.execute(now, node.machine.lease_changed(now, wall, new))
        self.pair.at(now + 1.0, self._sweep)

    def holders(self) -> dict[IPv4Address, list[bytes]]:
        now = self.pair.now
        out: dict[IPv4Address, list[bytes]] = {}
        for c in self.clients:
            if c.address is not None and c.until > now:
                out.setdefault(c.address, []).append(c.mac)
        return out


def db_view(db: LeaseDB) -> dict[IPv4Address, tuple[str, bytes]]:
    """What must agree between the peers after healing: binding state and client per address
    (FREE and BACKUP are both "available", told apart only by who may allocate)."""
    return {x.address: (x.state.name, x.hw_address if x.state is B.ACTIVE else b"") for x in db}
