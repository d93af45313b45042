"""Named simulated scenarios, shared by `carpsim simulate` and tests/sim.

Each scenario builds a `CarpLan` (the CARP preset of `sim.runner`), scripts faults at fixed
virtual times, runs it and returns it; the timeline is `runner.trace`. Nodes use the reference
LAN (VHID 1, VIP 192.168.110.254, node1 .251 advskew 0, node2 .252 advskew 100, advbase 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_interface

from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import MasterDownFormula
from carpsim.protocol.group import DemoteStyle
from carpsim.sim.carp_lan import CarpLan
from carpsim.sim.link import Impairment

PASSWORD = b"K33p_It_S3cr3t!"


def lan_config(
    node_index: int,
    *,
    vhid: int = 1,
    advskew: int = 0,
    advbase: int = 1,
    preempt: bool = False,
    formula: MasterDownFormula = MasterDownFormula.FREEBSD,
) -> CarpConfig:
    """CARP config for node `node_index` (1-based) on the reference segment of `vhid`."""
    subnet = {1: 110, 2: 120, 3: 100}.get(vhid, 100 + vhid)
    return CarpConfig(
        vhid=vhid,
        vips=(ip_interface(f"192.168.{subnet}.254/24"),),
        srcip=IPv4Address(f"192.168.{subnet}.{250 + node_index}"),
        password=PASSWORD,
        advbase=advbase,
        advskew=advskew,
        preempt=preempt,
        master_down_formula=formula,
    )


def pair(seed: int = 0, *, preempt: bool = False, impairment: Impairment | None = None) -> CarpLan:
    """node1 (skew 0) and node2 (skew 100) on VHID 1, not yet started."""
    runner = CarpLan(seed=seed, impairment=impairment)
    runner.add_carp_node("node1", [lan_config(1, advskew=0, preempt=preempt)])
    runner.add_carp_node("node2", [lan_config(2, advskew=100, preempt=preempt)])
    return runner


# ------------------------------------------------------------------------------ scenarios


def startup(seed: int = 0) -> CarpLan:
    """Both nodes start together; node1 (skew 0) is MASTER at exactly 3.0 s."""
    runner = pair(seed)
    runner.start("node1")
    runner.start("node2")
    runner.run_until(10.0)
    return runner


def failover_kill(seed: int = 0) -> CarpLan:
    """node1 MASTER, killed at 10.5 s; node2 takes over at last advert (10.0) + 3 + 100/256."""
    runner = pair(seed)
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.kill("node1"))
    runner.run_until(20.0)
    return runner


def preempt_failback(seed: int = 0) -> CarpLan:
    """Kill node1, node2 takes over; node1 restarts at 20.25 s and preempts on node2's advert."""
    runner = pair(seed, preempt=True)
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.kill("node1"))
    runner.at(20.25, lambda: runner.restart("node1"))
    runner.run_until(30.0)
    return runner


def partition_heal(seed: int = 0) -> CarpLan:
    """A partition at 10.5 s gives two masters; healing at 20.5 s leaves one within 1 s."""
    runner = pair(seed)
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.partition(["node1"], ["node2"]))
    runner.at(20.5, runner.heal)
    runner.run_until(30.0)
    return runner


def demotion(seed: int = 0) -> CarpLan:
    """Three VHIDs per node; node1 loses VHID 3's link at 10.5 s and the group fails over.

    The demote byte makes node2 take VHIDs 1 and 2 at once; VHID 3 follows after its
    master-down interval (10.0 + 3 + 100/256).
    """
    runner = CarpLan(seed=seed)
    for index, skew in ((1, 0), (2, 100)):
        configs = [lan_config(index, vhid=v, advskew=skew) for v in (1, 2, 3)]
        runner.add_carp_node(f"node{index}", configs, demote_style=DemoteStyle.OPENBSD)
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.link_down("node1", [3]))
    runner.run_until(20.0)
    return runner


def bow_out(seed: int = 0) -> CarpLan:
    """node1 stops cleanly at 10.5 s; its 255/255 advert makes node2 MASTER at once."""
    runner = pair(seed)
    runner.start("node1")
    runner.start("node2")
    runner.at(10.5, lambda: runner.stop("node1"))
    runner.run_until(15.0)
    return runner


def three_nodes(seed: int = 0) -> CarpLan:
    """Skews 0, 50, 100: node1 wins; killed at 10.5 s, node2 (skew 50) follows at 13.1953125."""
    runner = CarpLan(seed=seed)
    for index, skew in ((1, 0), (2, 50), (3, 100)):
        runner.add_carp_node(f"node{index}", [lan_config(index, advskew=skew)])
        runner.start(f"node{index}")
    runner.at(10.5, lambda: runner.kill("node1"))
    runner.run_until(20.0)
    return runner


def advbase_zero(seed: int = 0, duration: float = 600.0) -> CarpLan:
    """OpenBSD sub-second mode (advbase 0, skews 3 and 6) under 1% loss: no spurious flip."""
    imp = Impairment(loss=0.01, delay=0.0002, jitter=0.0005)
    runner = CarpLan(seed=seed, impairment=imp)
    ob = MasterDownFormula.OPENBSD
    runner.add_carp_node("node1", [lan_config(1, advbase=0, advskew=3, formula=ob)])
    runner.add_carp_node("node2", [lan_config(2, advbase=0, advskew=6, formula=ob)])
    runner.start("node1")
    runner.start("node2")
    runner.run_until(duration)
    return runner


def two_node_failover(seed: int = 0) -> float:
    """One complete failover; returns the virtual time node2 became MASTER (benchmark unit)."""
    runner = pair(seed)
    runner.start("node1")
    runner.start("node2")
    runner.run_until(4.5)
    runner.kill("node1")
    runner.run_until_quiet(lambda: bool(runner.masters(1)), 20.0)
    return runner.now


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[int], CarpLan]

    @property
    def description(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("startup", startup),
        Scenario("failover-kill", failover_kill),
        Scenario("preempt-failback", preempt_failback),
        Scenario("partition-heal", partition_heal),
        Scenario("demotion", demotion),
        Scenario("bow-out", bow_out),
        Scenario("three-nodes", three_nodes),
        Scenario("advbase-zero", advbase_zero),
    )
}
