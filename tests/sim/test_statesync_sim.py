"""Two real replicators on a seeded hostile link, virtual time (docs/statesync-protocol.md)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from carpsim.sim.link import Impairment
from carpsim.sim.sync_pair import SyncPair, flow_view, sync_faults
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

WAN_VIP = bytes([192, 168, 100, 254])
SERVER = bytes([203, 0, 113, 10])
CLEAN = sync_faults()
HOSTILE = sync_faults(loss=0.2, duplicate=0.1, reorder=0.3, delay=0.001, reorder_delay=0.03)


def flow(node: int, i: int, st: TcpState = TcpState.SYN_SENT, **kw: object) -> StateRecord:
    src = bytes([192, 168, 110 + node * 10, 1 + i % 250])
    key = FlowKey(6, src, 1024 + i // 250, SERVER, 443)
    return StateRecord(key, nat_src=(WAN_VIP, 1024 + (i * 7 + node) % 64000), tcp_state=st,
                       timeout=120, status=0x19E, **kw)  # type: ignore[arg-type]  # fmt: skip


def converged(pair: SyncPair) -> bool:
    a, b = (n.kernel for n in pair.members)
    ma, mb = (n.replicator.table for n in pair.members)
    return (
        flow_view(a) == flow_view(b)
        and flow_view(ma, identity=True) == flow_view(mb, identity=True)
        and flow_view(ma) == flow_view(a)
    )


def started_pair(seed: int, faults: Impairment = CLEAN, **cfg: object) -> SyncPair:
    configs = (
        ReplicatorConfig(creatorid=1, **cfg),  # type: ignore[arg-type]
        ReplicatorConfig(creatorid=2, **cfg),  # type: ignore[arg-type]
    )
    pair = SyncPair(seed, faults, configs)
    pair.start(0)
    pair.start(1)
    pair.run_for(10.0)  # bulk requests are retried every 2 s; 20% loss can eat a few
    assert [n.ready for n in pair.members] == [True, True], f"seed {seed}"
    return pair


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_tables_converge_under_loss_reordering_and_duplication(seed: int) -> None:
    pair = started_pair(seed, HOSTILE)
    rng = random.Random(seed)
    live: dict[tuple[int, int], TcpState] = {}
    for step in range(1500):
        node = rng.randrange(2)
        i = rng.randrange(300)
        op = rng.random()
        if (node, i) not in live:
            pair.local_insert(node, flow(node, i))
            live[(node, i)] = TcpState.SYN_SENT
        elif op < 0.6:
            nxt = TcpState(min(int(live[(node, i)]) + 1, int(TcpState.CLOSE)))
            pair.local_update(node, flow(node, i, nxt))
            live[(node, i)] = nxt
        else:
            pair.local_delete(node, flow(node, i).key)
            del live[(node, i)]
        if step % 10 == 0:
            pair.run_for(0.01)
    pair.run_for(10.0)
    assert converged(pair), f"seed {seed}"
    assert len(pair.members[0].kernel) == len(live)
    assert sum(n.drops["duplicate"] for n in pair.members) > 0  # the link really misbehaved
    assert pair.link.dropped > 0


@pytest.mark.slow
def test_bulk_sync_of_100k_states() -> None:
    pair = SyncPair(7, configs=(ReplicatorConfig(creatorid=1, mtu=9000),
                                ReplicatorConfig(creatorid=2, mtu=9000)), echo=False)  # fmt: skip
    pair.link.up = False  # node 0 fills its table before anyone listens
    pair.start(0)
    n = 100_000
    records = [flow(0, i, TcpState.ESTABLISHED) for i in range(n)]
    for rec in records:
        pair.members[0].kernel.put(rec)
    pair.execute(0, pair.members[0].replicator.local_snapshot(pair.now, records))
    pair.run_for(30.0)  # node 0 gave up waiting for a bulk; it is ready alone
    assert pair.members[0].ready
    pair.link.up = True
    t0 = pair.now
    pair.start(1)
    pair.run_for(10.0)
    joiner = pair.members[1]
    assert joiner.ready
    assert len(joiner.kernel) == n
    (bulk,) = joiner.bulks
    assert not bulk.gave_up
    assert bulk.count >= n  # plus full records requested for UPD_Cs that overtook the bulk
    assert bulk.duration < 5.0  # virtual seconds: 3125 frames at 50 per 20 ms tick
    assert pair.members[0].served[-1].count == n
    assert converged(pair)
    assert pair.now - t0 == pytest.approx(10.0)


def test_peer_restart_mid_bulk_still_converges() -> None:
    pair = started_pair(11, sync_faults(loss=0.05))
    for i in range(5000):
        pair.local_insert(0, flow(0, i, TcpState.ESTABLISHED))
    pair.run_for(2.0)
    assert converged(pair)
    pair.restart(1)  # fresh daemon, empty kernel: asks for everything
    pair.run_for(0.05)  # part of the bulk (5000 / 5 per frame = 1000 frames at 2500/s)
    assert 0 < len(pair.members[1].kernel) < 5000
    pair.restart(1)
    assert not pair.members[1].ready
    pair.run_for(5.0)
    assert pair.members[1].ready
    assert pair.members[1].ready_reasons[-1] == "bulk_done"
    assert converged(pair)
    assert len(pair.members[1].kernel) == 5000


def test_server_restart_mid_bulk_times_out_and_retries() -> None:
    pair = started_pair(12, bulk_timeout=1.0)
    for i in range(3000):
        pair.local_insert(0, flow(0, i, TcpState.ESTABLISHED))
    pair.run_for(2.0)
    pair.restart(1)
    pair.run_for(0.05)
    # the serving node's daemon restarts; its kernel keeps the flows, the edge re-seeds them
    pair.restart(0, keep_kernel=True)
    kernel = pair.members[0].kernel.snapshot()
    pair.execute(0, pair.members[0].replicator.local_snapshot(pair.now, kernel))
    pair.run_for(10.0)
    assert all(n.ready for n in pair.members)
    assert converged(pair)
    assert len(pair.members[1].kernel) == 3000


def test_resend_queue_overflow_falls_back_to_bulk_push() -> None:
    pair = started_pair(5, sync_faults(loss=0.3), resend_queue_frames=8)
    for i in range(400):
        pair.local_insert(0, flow(0, i))
    for i in range(0, 400, 2):
        pair.local_delete(0, flow(0, i).key)
    pair.run_for(20.0)
    assert any(s.pushed for s in pair.members[0].served)
    assert converged(pair)
    assert len(pair.members[1].kernel) == 200


def test_link_flap_after_bulk_keeps_ready_and_converges() -> None:
    """In sync once (bulk done): a flap neither demotes nor re-bulks; the resend queue heals."""
    pair = started_pair(6)
    reasons = list(pair.members[1].ready_reasons)
    assert pair.members[1].replicator.in_sync
    pair.execute(1, pair.members[1].replicator.link_down(pair.now))
    assert pair.members[1].ready
    assert pair.members[1].ready_reasons == reasons
    pair.local_insert(0, flow(0, 1, TcpState.ESTABLISHED))
    pair.run_for(1.0)
    pair.execute(1, pair.members[1].replicator.link_up(pair.now))
    pair.run_for(1.0)
    assert pair.members[1].ready
    assert converged(pair)


def test_counter_movement_refreshes_the_peer_timeout() -> None:
    pair = started_pair(8)
    rec = flow(0, 1, TcpState.ESTABLISHED)
    pair.local_insert(0, rec)
    pair.run_for(1.0)
    pair.local_update(0, replace(rec, timeout=432000, packets=(10, 9)))
    pair.run_for(1.5)
    peer_copy = pair.members[1].kernel.get(rec.key)
    assert peer_copy is not None
    assert 431990 <= peer_copy.timeout <= 432000


def test_delete_after_our_state_came_back_in_the_peers_bulk_reaches_the_peer() -> None:
    """The hypothesis falsifying example, replayed on the property test's link and configs:
    node 0's first bulk request is lost, its retry at t=2 s is answered by a bulk carrying node
    1's copy of node 0's flow; node 0 must still own the flow, so its delete reaches node 1."""
    faults = sync_faults(loss=0.15, duplicate=0.1, reorder=0.2)
    pair = SyncPair(0, faults, (ReplicatorConfig(creatorid=1, bulk_max_tries=3),
                                ReplicatorConfig(creatorid=2, bulk_max_tries=3)))  # fmt: skip
    pair.start(0)
    pair.start(1)
    k = FlowKey(6, bytes([10, 0, 0, 0]), 1000, bytes([10, 9, 0, 1]), 80)
    pair.local_insert(0, StateRecord(k, tcp_state=TcpState.NONE, timeout=60))
    pair.run_for(2.01)
    assert [s.count for s in pair.members[1].served] == [1]  # the bulk that carried it back
    pair.local_delete(0, k)
    pair.link.impairment = CLEAN
    pair.run_for(60.0)
    assert all(n.ready for n in pair.members)
    assert len(pair.members[0].kernel) == len(pair.members[1].kernel) == 0
    assert converged(pair)


@pytest.mark.parametrize(("a", "b"), [(TcpState.FIN_WAIT, TcpState.CLOSE_WAIT),
                                      (TcpState.SYN_SENT, TcpState.SYN_SENT2)])  # fmt: skip
def test_crossing_updates_of_one_flow_from_both_nodes_converge(a: TcpState, b: TcpState) -> None:
    """Both nodes see the flow (traffic moved mid-failover) and report different states at once."""
    pair = started_pair(9)
    base = TcpState.NONE if a is TcpState.SYN_SENT else TcpState.ESTABLISHED
    rec = flow(0, 1, base)
    pair.local_insert(0, rec)
    pair.run_for(1.0)
    pair.local_update(0, replace(rec, tcp_state=a))
    pair.local_update(1, replace(rec, tcp_state=b))
    pair.run_for(2.0)
    assert converged(pair)
    assert flow_view(pair.members[0].kernel)[rec.key][0] is b  # the later state wins on both


def test_split_brain_loser_does_not_outlive_the_winners_delete() -> None:
    """Node 0's sync link is down (its bulk never completes) while both nodes create the same
    tuple. Node 1's INS is lost until after node 1 deleted its state, so node 1 takes node 0's
    state when the link heals, and node 0 then gives its own up to node 1's larger identity,
    which the queued DEL_C removes. Node 0 must announce its loser, or node 1 keeps it forever."""
    faults = sync_faults(loss=0.3, duplicate=0.1, reorder=0.3)
    pair = SyncPair(80, faults, (ReplicatorConfig(creatorid=1, bulk_max_tries=3),
                                 ReplicatorConfig(creatorid=2, bulk_max_tries=3)))  # fmt: skip
    pair.start(0)
    pair.start(1)
    pair.execute(0, pair.members[0].replicator.link_down(pair.now))
    pair.run_for(0.78)
    k = FlowKey(6, bytes([10, 0, 0, 7]), 1007, bytes([10, 9, 0, 1]), 80)
    pair.local_insert(1, StateRecord(k, tcp_state=TcpState.CLOSE_WAIT, timeout=60))
    pair.local_update(0, StateRecord(k, tcp_state=TcpState.LAST_ACK, timeout=60))
    pair.run_for(1.96)
    pair.local_delete(1, k)
    pair.run_for(1.49)
    pair.link.impairment = CLEAN
    pair.execute(0, pair.members[0].replicator.link_up(pair.now))
    pair.run_for(60.0)
    assert all(n.ready for n in pair.members)
    assert len(pair.members[0].kernel) == len(pair.members[1].kernel) == 0
    assert converged(pair)


def _both_drive(pair: SyncPair, rec: StateRecord, traffic: bool) -> None:
    """Node 0 creates the flow; then both nodes drive it (traffic, or a TCP change each) so that
    their next liveness refreshes leave at the same refresh tick and cross on the wire."""
    pair.local_insert(0, rec)
    pair.run_for(0.5)
    assert pair.members[1].kernel.get(rec.key) is not None
    if traffic:
        for i in (0, 1):
            pair.local_update(i, replace(rec, packets=(5 + i, 4)))
    else:
        for i in (0, 1):
            pair.local_update(i, replace(rec, tcp_state=TcpState.FIN_WAIT))
    pair.run_for(3.0)  # several refresh ticks, the same virtual instants on both nodes


@pytest.mark.parametrize("traffic", [True, False], ids=["traffic", "idle"])
@pytest.mark.parametrize("deleter", [0, 1])
def test_crossing_refreshes_leave_the_flow_driven(traffic: bool, deleter: int) -> None:
    """Fuzz divergence: both nodes drive one flow and their refreshes (UPD_C) cross. Each used
    to hand the flow to the other, so nobody drove it: a later local delete passed for a peer
    copy expiring, was never sent, and the other node kept the flow forever."""
    pair = started_pair(11)
    rec = flow(0, 1, TcpState.ESTABLISHED)
    _both_drive(pair, rec, traffic)
    pair.local_delete(deleter, rec.key)
    pair.run_for(5.0)
    assert len(pair.members[0].kernel) == len(pair.members[1].kernel) == 0
    assert converged(pair)


def test_refresh_of_the_forwarding_node_takes_the_flow_over_and_back() -> None:
    """Failover and failback: the node that forwards a flow (its refreshes report traffic) takes
    it from the one that stopped, whose expiry then must not delete it; the way back is the same."""
    pair = started_pair(12)
    rec = flow(0, 1, TcpState.ESTABLISHED)
    pair.local_insert(0, rec)
    pair.run_for(0.5)
    pair.local_update(0, replace(rec, packets=(5, 4)))
    pair.run_for(3.0)  # node 0 forwarded once, then went idle (forced off)
    for n in range(1, 4):  # node 1 forwards now
        pair.local_update(1, replace(rec, packets=(5 + n, 4 + n)))
        pair.run_for(1.0)
    pair.run_for(2.0)
    pair.local_delete(0, rec.key)  # node 0's entry expires: not its flow any more
    pair.run_for(3.0)
    assert pair.members[1].kernel.get(rec.key) is not None
    pair.local_insert(0, replace(rec, packets=(20, 20)))  # node 0 returns and forwards again
    pair.run_for(3.0)
    assert converged(pair)
    pair.local_delete(1, rec.key)  # now node 1's copy expiring is not its call either
    pair.run_for(3.0)
    assert pair.members[0].kernel.get(rec.key) is not None
    pair.local_delete(0, rec.key)  # the driver's delete reaches the peer
    pair.run_for(3.0)
    assert len(pair.members[0].kernel) == len(pair.members[1].kernel) == 0
    assert converged(pair)
