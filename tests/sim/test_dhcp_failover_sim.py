"""DHCP failover pairs on the virtual-time runner (sim.dhcp_pair on sim.runner's streams).

Every scenario runs a client population that asks each node's FailoverPolicy and reports lease
changes, as the DHCP server does, and checks on every grant that no address is held by two
clients and that no grant contradicts a live ACTIVE binding in the other node's database.
Scenarios end by letting the pair settle and comparing the two lease databases.
"""

from __future__ import annotations

import random

import pytest

from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.lease import BindingState
from carpsim.sim.dhcp_pair import Clients, FailoverPair, db_view

S = FailoverState
B = BindingState


def fresh_pair(seed: int, **kw: object) -> FailoverPair:
    pair = FailoverPair(seed, **kw)  # type: ignore[arg-type]
    pair.start("s")
    pair.run_for(2.0)
    pair.start("p")
    assert pair.run_until_quiet(lambda: pair.both(S.NORMAL), 60.0), pair.states()
    return pair


def clients_on(pair: FailoverPair, seed: int, count: int = 20) -> Clients:
    clients = Clients(pair, count=count, rng=random.Random(seed))
    clients.begin()
    return clients


def settle_and_compare(pair: FailoverPair, clients: Clients) -> None:
    """Stop the clients, let leases run out and updates drain, then the databases agree."""
    assert pair.run_until_quiet(lambda: pair.both(S.NORMAL), pair.now + 200.0), pair.states()
    clients.active = False
    pair.run_for(200.0)
    p, s = pair.nodes["p"], pair.nodes["s"]
    assert p.machine.status()["bndupd_queue"] == 0
    assert s.machine.status()["bndupd_queue"] == 0
    a, b = db_view(p.db), db_view(s.db)
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert clients.violations == []


def test_fresh_pair_recovers_then_normal_and_divides_the_pool() -> None:
    pair = fresh_pair(1)
    for name in ("p", "s"):
        assert pair.path(name) == [S.STARTUP, S.RECOVER, S.RECOVER_DONE, S.NORMAL]
    pair.run_for(5.0)
    p, s = pair.nodes["p"].db, pair.nodes["s"].db
    assert len(p.in_state(B.BACKUP)) == len(p.in_state(B.FREE)) == 20
    assert db_view(p) == db_view(s)
    assert pair.nodes["p"].machine.status()["peer_state"] == "normal"
    # dhcpd's own figures: "Both servers normal" well within a second of the primary starting.
    assert pair.trace[-1].time - 2.0 < 1.0


def test_load_balancing_splits_discovers_by_the_rfc3074_hash() -> None:
    pair = fresh_pair(2)
    clients = clients_on(pair, 2, count=30)
    pair.run_for(40.0)
    assert clients.grants["p"] > 5
    assert clients.grants["s"] > 5
    # In NORMAL the first answer comes from the hash owner; nobody waited past 3 s.
    assert clients.failed_asks == 0
    settle_and_compare(pair, clients)


def heal_with_both_in_partner_down(pair: FailoverPair, clients: Clients) -> None:
    """Heal a partition after which both peers may be in PARTNER-DOWN.

    auto-partner-down fires on the isolated primary too, and a server in PARTNER-DOWN uses
    its partner's addresses after MCLT: until the peers reconnect (up to the 5 s retry) two
    servers would hand out the same pool. That is the protocol's known hazard of
    auto-partner-down (ISC's man page warns about it), not something a peer can detect, so
    clients get their path back to the primary once the two talk again.
    """
    pair.heal()
    pair.run_until_quiet(
        lambda: pair.nodes["p"].state not in (S.PARTNER_DOWN, S.COMMUNICATIONS_INTERRUPTED),
        pair.now + 30.0,
    )
    clients.reach = {"p", "s"}


def test_partition_partner_down_takeover_and_reintegration() -> None:
    pair = fresh_pair(3, pool_size=30)
    clients = clients_on(pair, 3)
    pair.run_for(120.0)
    # The primary loses the LAN: failover link and clients.
    pair.partition(["p"], ["s"])
    clients.reach = {"s"}
    primary_pool = {x.address for x in pair.nodes["p"].db.in_state(B.FREE)}
    pair.run_for(150.0)
    s_path = pair.path("s")
    assert s_path[-2:] == [S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN]
    down = next(t for t in pair.trace if t.node == "s" and t.new is S.PARTNER_DOWN)
    cut = next(t for t in pair.trace if t.node == "s" and t.new is S.COMMUNICATIONS_INTERRUPTED)
    assert down.time - cut.time == pytest.approx(20.0, abs=0.01)
    taken = {
        x.address
        for x in pair.nodes["s"].db.in_state(B.ACTIVE)
        if x.address in primary_pool and (x.starts - pair.nodes["s"].wall(down.time)) >= 30
    }
    assert taken, "the secondary never used the partner's pool after MCLT"
    heal_with_both_in_partner_down(pair, clients)
    assert pair.run_until_quiet(lambda: pair.both(S.NORMAL), pair.now + 60.0)
    assert pair.path("p")[-3:] == [S.POTENTIAL_CONFLICT, S.CONFLICT_DONE, S.NORMAL]
    assert pair.path("s")[-2:] == [S.POTENTIAL_CONFLICT, S.NORMAL]
    settle_and_compare(pair, clients)


def test_partition_without_auto_partner_down_both_serve_their_own_pools() -> None:
    pair = fresh_pair(4, pool_size=30, auto_partner_down=0)
    clients = clients_on(pair, 4)
    pair.run_for(60.0)
    pair.partition(["p"], ["s"])
    before = dict(clients.grants)
    pair.run_for(200.0)
    assert pair.states() == (S.COMMUNICATIONS_INTERRUPTED, S.COMMUNICATIONS_INTERRUPTED)
    assert clients.grants["p"] > before["p"]
    assert clients.grants["s"] > before["s"]
    pair.heal()
    assert pair.run_until_quiet(lambda: pair.both(S.NORMAL), pair.now + 30.0)
    assert pair.path("p")[-2:] == [S.COMMUNICATIONS_INTERRUPTED, S.NORMAL]
    settle_and_compare(pair, clients)


def _reach(pair: FailoverPair, name: str, state: S, limit: float = 300.0) -> None:
    ok = pair.run_until_quiet(lambda: pair.nodes[name].state is state, pair.now + limit)
    assert ok, (name, state, pair.states())


def _to_potential_conflict(pair: FailoverPair, clients: Clients) -> None:
    pair.partition(["p"], ["s"])
    clients.reach = {"s"}
    _reach(pair, "s", S.PARTNER_DOWN)
    pair.run_for(40.0)
    heal_with_both_in_partner_down(pair, clients)


def _to_resolution_interrupted(pair: FailoverPair, clients: Clients) -> None:
    _to_potential_conflict(pair, clients)
    ok = pair.run_until_quiet(
        lambda: pair.states() == (S.POTENTIAL_CONFLICT, S.POTENTIAL_CONFLICT), pair.now + 60.0
    )
    assert ok, pair.states()
    pair.partition(["p"], ["s"])  # again, in the middle of the resolution
    clients.reach = {"s"}


def _to_recover_wait(pair: FailoverPair, clients: Clients) -> None:
    pair.crash("s")
    _reach(pair, "p", S.PARTNER_DOWN)
    s = pair.nodes["s"]
    s.db = type(s.db)()  # a new disk
    s.record = None
    pair.start("s")


SETUPS = {
    S.STARTUP: None,
    S.RECOVER: None,
    S.RECOVER_DONE: None,
    S.NORMAL: lambda pair, clients: pair.run_for(30.0),
    S.COMMUNICATIONS_INTERRUPTED: lambda pair, clients: pair.partition(["p"], ["s"]),
    S.PARTNER_DOWN: lambda pair, clients: pair.partition(["p"], ["s"]),
    S.POTENTIAL_CONFLICT: _to_potential_conflict,
    S.CONFLICT_DONE: _to_potential_conflict,
    S.RESOLUTION_INTERRUPTED: _to_resolution_interrupted,
    S.RECOVER_WAIT: _to_recover_wait,
}


# The secondary passes through RECOVER-DONE and the primary through nothing but CONFLICT-DONE
# within a single input (the peer is already there), so those have no instant to crash in.
# Only a secondary that lost its database waits in RECOVER-WAIT here. SHUTDOWN and PAUSED are
# never entered by the pair on its own (only an illegal peer state or an operator leads there).
RESTARTS = [(st, v) for st in SETUPS for v in ("p", "s")
            if not (v == "s" and st in (S.RECOVER_DONE, S.CONFLICT_DONE))
            and not (v == "p" and st is S.RECOVER_WAIT)]  # fmt: skip


@pytest.mark.parametrize(("state", "victim"), RESTARTS, ids=lambda x: getattr(x, "word", x))
def test_restart_in_every_state(state: S, victim: str) -> None:
    seed = (state.value * 31 + ord(victim)) & 0xFFFF  # stable across processes (no str hash)
    pair = FailoverPair(seed, pool_size=30)
    clients = Clients(pair, count=15, rng=random.Random(seed))
    pair.start("s")
    pair.start("p")
    clients.begin()
    setup = SETUPS[state]
    if setup is not None:
        pair.run_until_quiet(lambda: pair.both(S.NORMAL), 60.0)
        setup(pair, clients)
    _reach(pair, victim, state)
    pair.crash(victim)
    pair.heal()
    clients.reach = {"p", "s"} - {victim}
    pair.run_for(7.0)
    pair.start(victim)
    clients.reach = {"p", "s"}
    settle_and_compare(pair, clients)


def test_secondary_that_lost_its_database_waits_mclt_in_recover_wait() -> None:
    pair = fresh_pair(5, pool_size=30)
    clients = clients_on(pair, 5)
    pair.run_for(60.0)
    pair.crash("s")
    _reach(pair, "p", S.PARTNER_DOWN)
    # A new disk: no leases, no state block.
    s = pair.nodes["s"]
    s.db = type(s.db)()
    s.record = None
    pair.run_for(10.0)
    restart = pair.now
    pair.start("s")
    _reach(pair, "s", S.RECOVER_WAIT, 30.0)
    _reach(pair, "s", S.NORMAL, 60.0)
    path = [t for t in pair.trace if t.node == "s" and t.time >= restart]
    assert [t.new for t in path] == [
        S.STARTUP, S.RECOVER, S.RECOVER_WAIT, S.RECOVER_DONE, S.NORMAL,
    ]  # fmt: skip
    assert path[3].time - restart == pytest.approx(30.0, abs=0.5)  # MCLT after RECOVER began
    assert pair.nodes["p"].state is S.NORMAL
    settle_and_compare(pair, clients)


@pytest.mark.parametrize("skew", [-45.0, 40.0])
def test_clock_skew_within_60_s_still_pairs(skew: float) -> None:
    pair = fresh_pair(6, pool_size=30, skew=(0.0, skew))
    clients = clients_on(pair, 6)
    pair.run_for(150.0)
    pair.partition(["p"], ["s"])
    clients.reach = {"s"}
    pair.run_for(100.0)
    heal_with_both_in_partner_down(pair, clients)
    settle_and_compare(pair, clients)


def test_clock_skew_beyond_60_s_is_refused() -> None:
    pair = FailoverPair(7, pool_size=30, skew=(0.0, 90.0))
    clients = Clients(pair, count=10, rng=random.Random(7))
    pair.start("s")
    pair.start("p")
    clients.begin()
    pair.run_for(120.0)
    assert pair.states() == (S.RECOVER, S.RECOVER)  # fresh servers never serve alone
    assert pair.nodes["s"].drops["connect_reject_time_mismatch"] >= 10
    assert pair.nodes["p"].drops["connect_rejected"] >= 10
    assert sum(clients.grants.values()) == 0
    assert clients.violations == []


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_jittery_link_that_keeps_breaking(seed: int) -> None:
    pair = fresh_pair(seed, pool_size=30, jitter=0.2, delay=0.01)
    clients = clients_on(pair, seed, count=25)
    rng = random.Random(seed)
    t = pair.now
    for _ in range(25):
        t += rng.uniform(3.0, 30.0)
        pair.at(t, lambda: pair.channel.reset(pair.now, "loss"))
    pair.run_until(t + 1.0)
    kinds = {tr.new for tr in pair.trace}
    assert S.COMMUNICATIONS_INTERRUPTED in kinds
    settle_and_compare(pair, clients)
