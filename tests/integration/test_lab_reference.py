"""The reference HA lab in real namespaces with the real `carpsim node` daemons.

One lab is shared by the steps of this module (they run in order): up, NAT through the WAN VIP,
Force Off node1, takeover by node2, power-on and failback, CLI views, down. Every lab here has a
unique prefix and is always torn down, even when a step fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from carpsim.lab import builder, session, state
from carpsim.lab.session import Lab
from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SERVER = "203.0.113.10"
WAN_VIP = "192.168.100.254"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carpsim", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ask(lab: Lab, host: str) -> str:
    """TCP through the firewall: what peer address the internet server saw."""
    proc = lab.run(host, [sys.executable, "-m", "carpsim.lab.whoami", "ask", SERVER], timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def ping(lab: Lab, host: str, count: int = 2) -> bool:
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", SERVER]
    return lab.run(host, argv).returncode == 0


class Shared:
    lab: Lab
    links_before: set[str]
    up_seconds: float


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    _need_root()
    s = Shared()
    s.links_before = host_links()
    s.lab = Lab.create("reference", prefix=netns.unique_prefix("cl"))
    try:
        s.up_seconds = s.lab.up()
        netns.popen(
            s.lab.namespace_of("server"),
            [sys.executable, "-m", "carpsim.lab.whoami", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        yield s
    finally:
        s.lab.down()


def test_up_converges_node1_master_node2_backup(shared: Shared) -> None:
    lab = shared.lab
    assert shared.up_seconds < 10
    states = lab.states()
    assert set(states["node1"].values()) == {"MASTER"}
    assert set(states["node2"].values()) == {"BACKUP"}
    assert sorted(v for _, v in states["node1"]) == [1, 2, 3]
    # The host namespace got nothing: no bridge, no veth end, no new link at all.
    assert host_links() == shared.links_before


def test_second_up_on_a_running_lab_says_so(shared: Shared) -> None:
    again = cli("lab", "--prefix", shared.lab.paths.prefix, "up")
    assert again.returncode == 1
    assert "already up" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert set(shared.lab.states()["node1"].values()) == {"MASTER"}


def test_lan_and_dmz_reach_the_internet_through_the_wan_vip(shared: Shared) -> None:
    lab = shared.lab
    assert ping(lab, "client1")
    seen = [ask(lab, "client1"), ask(lab, "client2"), ask(lab, "dmzsrv")]
    assert all(s.startswith(f"{WAN_VIP}:") for s in seen), seen


def test_new_tcp_from_the_wan_side_is_refused(shared: Shared) -> None:
    # The router may reach the WAN VIP, but nothing new is forwarded from outside to the LAN.
    lab = shared.lab
    lab.run("router", ["ip", "route", "add", "192.168.110.0/24", "via", WAN_VIP], check=True)
    try:
        probe = lab.run(
            "router",
            [
                sys.executable,
                "-c",
                "import socket; socket.create_connection(('192.168.110.10', 22), timeout=1)",
            ],
        )
        assert probe.returncode != 0
        assert "timed out" in probe.stderr
    finally:
        lab.run("router", ["ip", "route", "del", "192.168.110.0/24"])


def test_force_off_node1_node2_takes_over_every_vhid(shared: Shared) -> None:
    lab = shared.lab
    node1 = lab.topology.host("node1")
    t0 = time.monotonic()
    lab.kill("node1")
    assert netns.run(lab.namespace_of("node1"), ["true"]).returncode == 0
    pids = subprocess.run(
        ["ip", "netns", "pids", lab.namespace_of("node1")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert pids == []
    assert set(builder.link_states(lab.paths, node1).values()) == {"down"}
    assert lab.wait_master("node2", timeout=8, down=["node1"])
    takeover = time.monotonic() - t0
    assert set(lab.states()["node2"].values()) == {"MASTER"}
    assert lab.states()["node1"] == {}
    assert ask(lab, "client1").startswith(f"{WAN_VIP}:")
    assert ping(lab, "client1")
    print(f"takeover after Force Off: {takeover:.2f}s")


def test_power_on_node1_preempts_back(shared: Shared) -> None:
    lab = shared.lab
    t0 = time.monotonic()
    lab.start("node1")
    assert lab.wait_master("node1", timeout=8)
    print(f"failback after power-on: {time.monotonic() - t0:.2f}s")
    assert set(lab.states()["node2"].values()) == {"BACKUP"}
    assert ask(lab, "client1").startswith(f"{WAN_VIP}:")


def test_cli_status_kill_start_exec(shared: Shared) -> None:
    prefix = shared.lab.paths.prefix
    out = cli("lab", "--prefix", prefix, "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {r["vhid"]: r["state"] for r in data["vhids"]} == {
        3: {"node1": "MASTER", "node2": "BACKUP"},
        1: {"node1": "MASTER", "node2": "BACKUP"},
        2: {"node1": "MASTER", "node2": "BACKUP"},
    }
    assert data["nodes"]["node2"]["links"] == dict.fromkeys(("wan", "lan", "dmz", "sync"), "up")
    text = cli("lab", "--prefix", prefix, "status")
    assert "MASTER" in text.stdout
    assert "BACKUP" in text.stdout
    shown = cli("lab", "--prefix", prefix, "exec", "client1", "--", "ip", "-br", "addr")
    assert "192.168.110.10/24" in shown.stdout
    bad = cli("lab", "--prefix", prefix, "kill", "node9")
    assert bad.returncode == 2
    assert "unknown node 'node9'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    bad = cli("lab", "--prefix", prefix, "kill", "client1")
    assert bad.returncode == 2
    assert "not a CARP node" in bad.stderr


def test_down_leaves_nothing_behind(shared: Shared) -> None:
    lab = shared.lab
    prefix = lab.paths.prefix
    cfg = str(lab.paths.node_config("node1"))
    assert cli("lab", "--prefix", prefix, "down").returncode == 0
    assert netns.list_namespaces(prefix) == []
    assert not lab.paths.run_dir.exists()
    procs = subprocess.run(["pgrep", "-f", cfg], check=False, capture_output=True, text=True).stdout
    assert procs.strip() == ""
    assert host_links() == shared.links_before
    again = cli("lab", "--prefix", prefix, "down")
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout


def test_up_down_twice_and_failed_up_cleans_up() -> None:
    _need_root()
    prefix = netns.unique_prefix("cl")
    lab = Lab.create("reference", prefix=prefix)
    try:
        for _ in range(2):
            assert lab.up() < 10
            lab.down()
            assert netns.list_namespaces(prefix) == []
        # A lab that cannot converge in time is torn down before the error surfaces.
        with pytest.raises(session.LabNotReadyError):
            lab.up(timeout=0.2)
        assert netns.list_namespaces(prefix) == []
        assert state.read_state(lab.paths) is None
    finally:
        lab.down()


def test_three_node_topology_comes_up() -> None:
    _need_root()
    lab = Lab.create("three-node", prefix=netns.unique_prefix("cl"))
    try:
        lab.up()
        states = lab.states()
        assert set(states["node1"].values()) == {"MASTER"}
        assert set(states["node2"].values()) == set(states["node3"].values()) == {"BACKUP"}
    finally:
        lab.down()
