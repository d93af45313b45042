"""Two carpsim nodes and a client on a bridge: election, virtual-MAC takeover, failback.

Everything runs in namespaces (switch, node1, node2, client); nothing touches the host's.
Timings are measured from each daemon's JSON event log (CLOCK_MONOTONIC, shared by all
namespaces) against the moment the test acted.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import Lan, read_events, vhid_state, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

VIP = "10.42.0.254"
VMAC = "00:00:5e:00:01:01"
PASSWORD = "K33p_It_S3cr3t!"
MARGIN = 0.6  # scheduling + one netlink round trip, generous for a loaded 2-core box


class Node:
    def __init__(self, lan: Lan, name: str, addr: str, skew: int, *extra: str) -> None:
        self.lan, self.name, self.addr, self.skew, self.extra = lan, name, addr, skew, extra
        self.control = str(lan.tmp / f"{name}.sock")
        self.events = lan.tmp / f"{name}.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, vhid: int = 1, iface: str = "lan", vip: str = VIP) -> None:
        self.starts += 1
        self.proc = self.lan.carpsim(
            self.name,
            "carp",
            "--interface",
            iface,
            "--srcip",
            self.addr.split("/")[0],
            "--vhid",
            str(vhid),
            "--pass",
            PASSWORD,
            "--addr",
            f"{vip}/24",
            "--advbase",
            "1",
            "--advskew",
            str(self.skew),
            "--preempt",
            "--control",
            self.control,
            "--events-json",
            str(self.events),
            "--name",
            self.name,
            *self.extra,
            log=f"{self.name}.{self.starts}.log",
        )

    def state(self, vhid: int = 1) -> str | None:
        return vhid_state(self.control, vhid)

    def wait_state(self, state: str, vhid: int = 1, timeout: float = 8.0) -> None:
        wait_for(lambda: self.state(vhid) == state, timeout, what=f"{self.name} {state}")

    def became(self, state: str, after: float, vhid: int = 1) -> float | None:
        for ev in read_events(self.events):
            if ev["vhid"] == vhid and ev["to"] == state and ev["mono"] >= after:
                return float(ev["mono"])
        return None

    def log(self) -> str:
        return "\n".join(
            (self.lan.tmp / f"{self.name}.{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )


def pair(lan: Lan) -> tuple[Node, Node, str]:
    lan.plug("n1", "lan", "10.42.0.1/24")
    lan.plug("n2", "lan", "10.42.0.2/24")
    lan.plug("cl", "eth0", "10.42.0.10/24")
    n1, n2 = Node(lan, "n1", "10.42.0.1", 0), Node(lan, "n2", "10.42.0.2", 100)
    n1.start()
    n2.start()
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2, lan.host("cl")


def ping(lan: Lan, client: str, count: int = 1) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", client, "ping", "-c", str(count), "-W", "1", "-i", "0.2", VIP],
        capture_output=True,
        check=False,
    )
    return out.returncode == 0


def neigh_mac(lan: Lan, client: str) -> str | None:
    out = lan.sh(client, "ip", "neigh", "show", VIP)
    parts = out.split()
    return parts[parts.index("lladdr") + 1] if "lladdr" in parts else None


def macvlans(lan: Lan, host: str) -> list[str]:
    out = lan.sh(host, "ip", "-o", "link", "show", "type", "macvlan")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def macvlan_flags(lan: Lan, host: str) -> list[bool]:
    """Administrative UP flag of each macvlan in `host`."""
    out = lan.sh(host, "ip", "-o", "link", "show", "type", "macvlan")
    return ["UP" in line.split("<", 1)[1].split(">", 1)[0].split(",") for line in out.splitlines()]


def test_election_takeover_and_failback(lan: Lan) -> None:
    n1, n2, client = pair(lan)
    assert ping(lan, client)
    assert neigh_mac(lan, client) == VMAC
    assert lan.fdb_port(VMAC) == lan.ports[("n1", "lan")]
    # The BACKUP's macvlan is down: nothing with the virtual MAC can leave node2.
    assert macvlan_flags(lan, lan.host("n2")) == [False]
    assert macvlan_flags(lan, lan.host("n1")) == [True]

    # Force node1 off without a goodbye: SIGKILL and the cable cut.
    assert n1.proc is not None
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait()
    lan.port_down("n1", "lan")
    t_kill = time.monotonic()
    n2.wait_state("MASTER", timeout=6)
    took = n2.became("MASTER", t_kill)
    assert took is not None
    master_down = 3 + 100 / 256
    print(f"takeover after SIGKILL + link cut: {took - t_kill:.3f}s (md {master_down:.2f}s)")
    assert took - t_kill <= master_down + MARGIN
    # The new master's GARP moved the virtual MAC to its port; the client's ARP entry is the same.
    wait_for(lambda: lan.fdb_port(VMAC) == lan.ports[("n2", "lan")], 3, what="fdb move")
    assert ping(lan, client)
    assert neigh_mac(lan, client) == VMAC

    # Failback: node1 returns (its stale macvlan is reclaimed) and preempts with skew 0.
    assert macvlans(lan, lan.host("n1")), "SIGKILL should leave the macvlan behind"
    lan.port_up("n1", "lan")
    t_back = time.monotonic()
    n1.start()
    n1.wait_state("MASTER", timeout=8)
    n2.wait_state("BACKUP", timeout=3)
    assert "removing stale macvlan" in n1.log()
    assert len(macvlans(lan, lan.host("n1"))) == 1
    back = n1.became("MASTER", t_back)
    assert back is not None
    print(f"failback (preempt) after restart: {back - t_back:.3f}s")
    wait_for(lambda: lan.fdb_port(VMAC) == lan.ports[("n1", "lan")], 3, what="fdb back")
    assert ping(lan, client)


def test_sigterm_bows_out_for_immediate_takeover(lan: Lan) -> None:
    n1, n2, client = pair(lan)
    assert n1.proc is not None
    t_term = time.monotonic()
    n1.proc.send_signal(signal.SIGTERM)
    assert n1.proc.wait(timeout=5) == 0
    n2.wait_state("MASTER", timeout=3)
    took = n2.became("MASTER", t_term)
    assert took is not None
    print(f"takeover after SIGTERM bow-out: {took - t_term:.3f}s")
    assert took - t_term < 1.0  # master-down would be 3.39 s
    assert n2.became("MASTER", t_term) is not None
    assert macvlans(lan, lan.host("n1")) == []
    assert VIP not in lan.sh(lan.host("n1"), "ip", "-4", "addr")
    assert ping(lan, client)


@pytest.mark.parametrize("real_mac", [False, True], ids=["macvlan", "real-mac"])
def test_restart_after_sigkill_reclaims_stale_vip(lan: Lan, real_mac: bool) -> None:
    lan.plug("n1", "lan", "10.42.0.1/24")
    extra = ("--real-mac",) if real_mac else ()
    n1 = Node(lan, "n1", "10.42.0.1", 0, *extra)
    n1.start()
    n1.wait_state("MASTER")
    assert n1.proc is not None
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait()
    host = lan.host("n1")
    assert VIP in lan.sh(host, "ip", "-4", "addr"), "SIGKILL leaves the VIP configured"
    n1.start()
    wait_for(lambda: n1.state() == "BACKUP", 5, what="restart in BACKUP")
    # While BACKUP after the restart, the stale VIP is gone.
    assert VIP not in lan.sh(host, "ip", "-4", "addr")
    if not real_mac:
        assert "removing stale macvlan" in n1.log()
    else:
        assert "removed stale VIP" in n1.log()
    n1.wait_state("MASTER")
    assert lan.sh(host, "ip", "-4", "addr").count(VIP) == 1
