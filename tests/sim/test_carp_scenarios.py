"""CARP elections in virtual time: exact transition times from the protocol/timers.py formulas."""

from __future__ import annotations

import pytest

from carpsim.protocol.constants import CarpState
from carpsim.sim.carp_lan import CarpLan, TraceEvent
from carpsim.sim.link import Impairment
from carpsim.sim.scenarios import (
    SCENARIOS,
    advbase_zero,
    bow_out,
    demotion,
    failover_kill,
    lan_config,
    pair,
    partition_heal,
    preempt_failback,
    startup,
    three_nodes,
    two_node_failover,
)

MASTER, BACKUP, INIT = CarpState.MASTER, CarpState.BACKUP, CarpState.INIT
SKEW100_DOWN = 3 + 100 / 256  # FreeBSD formula, advbase 1


def changes(runner: CarpLan) -> list[tuple[float, str, int | None, CarpState, str]]:
    out = []
    for e in runner.trace:
        if e.new is not None and e.old is not INIT:
            out.append((e.time, e.node, e.vhid, e.new, e.reason))
    return out


def assert_vips_follow_state(runner: CarpLan) -> None:
    for node in runner.nodes.values():
        if not node.alive:
            continue
        for vhid in node.group.machines:
            assert node.vips_up.get(vhid, False) == (node.state(vhid) is MASTER), (node.name, vhid)


def test_startup_election() -> None:
    runner = startup()
    assert changes(runner) == [(3.0, "node1", 1, MASTER, "master_down")]
    assert runner.masters(1) == ["node1"]
    assert runner.nodes["node1"].garps[1] == 2  # takeover GARP + the one after two adverts
    assert runner.nodes["node2"].adverts_sent == 0
    assert runner.nodes["node2"].adverts_accepted == 8  # adverts at 3.0 .. 10.0
    assert_vips_follow_state(runner)


def test_master_killed_backup_takes_over_at_last_advert_plus_master_down() -> None:
    runner = failover_kill()
    last_advert = 10.0
    assert changes(runner) == [
        (3.0, "node1", 1, MASTER, "master_down"),
        (last_advert + SKEW100_DOWN, "node2", 1, MASTER, "master_down"),
    ]
    assert runner.nodes["node2"].group.machine(1).last_advert_at == last_advert
    assert runner.masters(1) == ["node2"]
    assert_vips_follow_state(runner)


def test_preempt_and_failback() -> None:
    runner = preempt_failback()
    # node2's adverts run at 13.390625 + k * (1 + 100/256); the first after 20.25 is k = 5.
    failback = 13.390625 + 5 * (1 + 100 / 256)
    assert changes(runner)[-2:] == [
        (failback, "node1", 1, MASTER, "preempt"),
        (failback, "node2", 1, BACKUP, "preferred_master"),
    ]
    assert runner.masters(1) == ["node1"]
    assert_vips_follow_state(runner)


def test_without_preempt_a_returning_faster_node_stays_backup() -> None:
    runner = pair()
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.kill("node1"))
    runner.at(20.25, lambda: runner.restart("node1"))
    runner.run_until(60.0)
    assert runner.masters(1) == ["node2"]
    assert runner.nodes["node1"].state(1) is BACKUP


def test_partition_gives_two_masters_and_heal_one_within_an_interval() -> None:
    runner = partition_heal()
    assert (13.390625, "node2", 1, MASTER, "master_down") in changes(runner)
    heal_at = 20.5
    last = changes(runner)[-1]
    assert last == (21.0, "node2", 1, BACKUP, "preferred_master")
    assert last[0] - heal_at <= 1.0  # node1's advert interval
    assert runner.masters(1) == ["node1"]
    assert_vips_follow_state(runner)


def test_demotion_fails_the_whole_group_over() -> None:
    runner = demotion()
    after = [c for c in changes(runner) if c[0] >= 10.5]
    assert (10.5, "node2", 1, MASTER, "peer_demoted") in after
    assert (10.5, "node2", 2, MASTER, "peer_demoted") in after
    assert (10.5, "node1", 1, BACKUP, "preferred_master") in after
    assert (10.5, "node1", 2, BACKUP, "preferred_master") in after
    assert (10.0 + SKEW100_DOWN, "node2", 3, MASTER, "master_down") in after
    assert all(runner.masters(v) == ["node2"] for v in (1, 2, 3))
    assert runner.nodes["node1"].group.machine(1).demote == 1
    assert_vips_follow_state(runner)


def test_link_back_up_undemotes_but_without_preempt_node2_keeps_the_group() -> None:
    runner = demotion()
    runner.link_up("node1", [3])
    runner.run_for(10.0)
    assert runner.nodes["node1"].group.machine(1).demote == 0
    assert all(runner.masters(v) == ["node2"] for v in (1, 2, 3))


def test_bow_out_means_immediate_takeover() -> None:
    runner = bow_out()
    assert changes(runner)[-2:] == [
        (10.5, "node1", 1, INIT, "shutdown"),
        (10.5, "node2", 1, MASTER, "peer_will_time_out"),
    ]


def test_three_nodes_elect_by_skew() -> None:
    runner = three_nodes()
    assert changes(runner) == [
        (3.0, "node1", 1, MASTER, "master_down"),
        (10.0 + 3 + 50 / 256, "node2", 1, MASTER, "master_down"),
    ]
    assert runner.nodes["node3"].state(1) is BACKUP


def test_equal_skews_both_step_down_no_ip_tie_break() -> None:
    runner = CarpLan(seed=3)
    runner.add_carp_node("a", [lan_config(1, advskew=10)])
    runner.add_carp_node("b", [lan_config(2, advskew=10)])
    runner.start("a")
    runner.start("b")
    runner.run_until(3 + 10 / 256)
    t = 3 + 10 / 256
    # Both time out together; when the adverts cross, the BSD rule makes BOTH step down,
    # whatever their addresses (BSD ip_carp.c).
    assert sorted(changes(runner), key=lambda c: (c[1], -c[3].value)) == [
        (t, "a", 1, MASTER, "master_down"),
        (t, "a", 1, BACKUP, "preferred_master"),
        (t, "b", 1, MASTER, "master_down"),
        (t, "b", 1, BACKUP, "preferred_master"),
    ]
    assert runner.masters(1) == []


@pytest.mark.slow
def test_advbase_zero_is_stable_under_one_percent_loss_for_ten_minutes() -> None:
    runner = advbase_zero(seed=7)
    assert runner.now == 600.0
    flips = [e for e in runner.trace if e.new is not None and e.old is not INIT]
    assert flips == [TraceEvent(9 / 256, "node1", 1, BACKUP, MASTER, "master_down")]
    assert runner.lan.lost > 100  # loss really happened
    assert runner.nodes["node1"].adverts_sent > 600 / (3 / 256) * 0.99


def test_same_seed_same_timeline_with_impairments() -> None:
    imp = Impairment(loss=0.2, delay=0.001, jitter=0.01, duplicate=0.1)

    def run(seed: int) -> list[TraceEvent]:
        runner = pair(seed, impairment=imp)
        runner.start("node1")
        runner.start("node2")
        runner.run_until(120.0)
        return runner.trace

    assert run(5) == run(5)


def test_duplicates_and_loss_never_leave_vips_inconsistent() -> None:
    runner = pair(11, impairment=Impairment(loss=0.3, duplicate=0.3, delay=0.002, jitter=0.05))
    runner.start("node1")
    runner.start("node2")
    for t in range(1, 200):
        runner.run_until(float(t))
        assert_vips_follow_state(runner)


def test_failover_helper_matches_formula() -> None:
    assert two_node_failover(0) == 4.0 + SKEW100_DOWN


def test_every_named_scenario_runs() -> None:
    for name, scenario in SCENARIOS.items():
        if name == "advbase-zero":
            continue
        runner = scenario.run(1)
        assert any(e.new is MASTER for e in runner.trace), name
