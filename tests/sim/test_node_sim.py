"""Whole nodes (CARP + state sync in one NodeMachines) in virtual time: a restarted node stays
demoted until its bulk is done, then preempts."""

from __future__ import annotations

from carpsim.protocol.constants import CarpState
from carpsim.sim.carp_lan import TraceEvent
from carpsim.sim.ha_pair import HaPair
from carpsim.sim.scenarios import lan_config
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

MASTER, BACKUP = CarpState.MASTER, CarpState.BACKUP
FLOWS = 1000
NODE2_PERIOD = 1 + 100 / 256


def flow(i: int) -> StateRecord:
    key = FlowKey(6, bytes([192, 168, 110, 1 + i % 250]), 1024 + i, bytes([203, 0, 113, 10]), 443)
    return StateRecord(key, tcp_state=TcpState.ESTABLISHED, timeout=600)


def ha_pair() -> HaPair:
    # One bulk frame per 20 ms tick, so a restarted node's bulk takes seconds, not
    # milliseconds, and spans several of its peer's adverts.
    slow = {"bulk_frames_per_tick": 1}
    return HaPair(
        (
            (lan_config(1, advskew=0, preempt=True),),
            (lan_config(2, advskew=100, preempt=True),),
        ),
        seed=3,
        sync=(ReplicatorConfig(creatorid=1, **slow), ReplicatorConfig(creatorid=2, **slow)),  # type: ignore[arg-type]
    )


def notes(pair: HaPair, node: str) -> list[tuple[float, str]]:
    return [(e.time, e.reason) for e in pair.trace if e.node == node and e.new is None]


def changes(pair: HaPair, node: str) -> list[TraceEvent]:
    return [e for e in pair.trace if e.node == node and e.new is not None]


def test_restarted_node_is_demoted_until_bulk_done_then_preempts() -> None:
    pair = ha_pair()
    pair.boot("node1")
    pair.boot("node2")
    pair.run_until(5.0)
    assert pair.masters(1) == ["node1"]
    node1, node2 = pair.nodes["node1"], pair.nodes["node2"]
    assert node1.machines.sync_ready
    assert node2.machines.sync_ready
    for i in range(FLOWS):
        pair.local_insert("node1", flow(i))
    pair.run_until(10.5)
    assert len(node2.sync_exec.kernel) == FLOWS

    pair.kill("node1")
    pair.run_until(20.0)
    assert pair.masters(1) == ["node2"]
    assert changes(pair, "node2")[-1].reason == "master_down"

    # node1 restarts: a fresh daemon with an empty kernel, not ready, demoted from the start.
    pair.boot("node1")
    assert node1.incarnation == 2  # the same node, a second daemon
    restarted = pair.now
    assert not node1.machines.sync_ready
    assert node1.machines.total_demote == 32
    assert node1.machines.carp.machine(1).demote == 32
    assert node1.state(1) is BACKUP

    def bulk_done() -> bool:
        return node1.machines.sync_ready

    assert pair.run_until_quiet(bulk_done, restarted + 30.0)
    done_at = pair.now
    assert (done_at, "sync ready (bulk_done)") in notes(pair, "node1")
    assert done_at - restarted > 2 * NODE2_PERIOD  # several adverts heard while demoted
    assert len(node1.sync_exec.kernel) == FLOWS
    # Demoted, node1 heard node2's slower adverts and did not preempt.
    assert [e for e in changes(pair, "node1") if e.time >= restarted and e.new is MASTER] == []
    assert node1.machines.carp.machine(1).demote == 0

    pair.run_until(done_at + 2 * NODE2_PERIOD)
    took = [e for e in changes(pair, "node1") if e.time >= restarted and e.new is MASTER]
    assert [e.reason for e in took] == ["preempt"]
    assert done_at < took[0].time <= done_at + NODE2_PERIOD  # on node2's next advert
    assert changes(pair, "node2")[-1] == TraceEvent(
        took[0].time, "node2", 1, MASTER, BACKUP, "preferred_master"
    )
    assert pair.masters(1) == ["node1"]
    assert node1.carp_exec.vips_up[1]
    assert not node2.carp_exec.vips_up[1]


def test_nodes_booting_together_are_ready_before_the_election() -> None:
    pair = ha_pair()
    pair.boot("node1")
    pair.boot("node2")
    pair.run_until(4.0)
    for name in pair.nodes:
        assert [r for _, r in notes(pair, name)] == [
            "boot",
            "sync not ready (bulk_pending)",
            "sync ready (bulk_done)",  # the empty tables' bulks, within milliseconds
        ]
    assert [n.machines.total_demote for n in pair.nodes.values()] == [0, 0]
    assert [(e.time, e.reason) for e in changes(pair, "node1")][-1] == (3.0, "master_down")


def test_admin_demote_and_sync_demotion_add_up() -> None:
    pair = ha_pair()
    pair.boot("node1")
    node1 = pair.nodes["node1"]
    machines = node1.machines
    assert not machines.sync_ready  # no peer yet: the bulk request is unanswered
    assert machines.total_demote == 32
    node1.carp_exec.execute(pair.now, machines.set_admin_demote(pair.now, 5))
    assert machines.carp.machine(1).demote == 37
    pair.boot("node2")
    pair.run_until(1.0)
    assert machines.sync_ready
    assert machines.carp.machine(1).demote == 5
