"""carpsim's failover peer against Debian's real ISC dhcpd 4.4, in both roles.

dhcpd runs with ``-d -f`` and its own -cf/-lf/-pf files in its namespace (never the Debian
service), configured like the pfSense-style lab pair (primary on 519, secondary on 520, mclt 30,
split 128). A tcpdump on the link lets tshark's dhcpfo dissector check every message carpsim
sent.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carpsim.net import netns
from interop.conftest import need_tool, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(120)]

PRIMARY_IP, SECONDARY_IP = "192.168.110.2", "192.168.110.3"
FIRST, LAST = "192.168.110.100", "192.168.110.199"
PEER = Path(__file__).with_name("dhcpfo_peer.py")
BAD = "_ws.malformed || (dhcpfo && _ws.expert.severity >= warning)"
"""tshark display filter: a malformed packet, or a dissector warning on a failover message."""


def dhcpd_conf(role: str) -> str:
    me, peer = (PRIMARY_IP, SECONDARY_IP) if role == "primary" else (SECONDARY_IP, PRIMARY_IP)
    port, peer_port = (519, 520) if role == "primary" else (520, 519)
    primary_only = "  mclt 30;\n  split 128;\n" if role == "primary" else ""
    return f"""authoritative;
default-lease-time 600;
max-lease-time 7200;
ddns-update-style none;
failover peer "dhcp_lan" {{
  {role};
  address {me};
  port {port};
  peer address {peer};
  peer port {peer_port};
  max-response-delay 10;
  max-unacked-updates 10;
{primary_only}  load balance max seconds 3;
  auto-partner-down 5;
}}
subnet 192.168.110.0 netmask 255.255.255.0 {{
  option routers 192.168.110.254;
  pool {{
    failover peer "dhcp_lan";
    deny dynamic bootp clients;
    range {FIRST} {LAST};
  }}
}}
"""


class Pair:
    """Two namespaces joined by one veth: dhcpd in one, carpsim's peer in the other."""

    def __init__(self, tmp: Path, dhcpd_role: str) -> None:
        self.tmp = tmp
        self.prefix = netns.unique_prefix("dhcpfo")
        self.dhcpd_ns, self.ours_ns = f"{self.prefix}isc", f"{self.prefix}cs"
        self.dhcpd_role = dhcpd_role
        self.our_role = "secondary" if dhcpd_role == "primary" else "primary"
        self.dhcpd_ip = PRIMARY_IP if dhcpd_role == "primary" else SECONDARY_IP
        self.our_ip = SECONDARY_IP if dhcpd_role == "primary" else PRIMARY_IP
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dhcpd: subprocess.Popen[bytes] | None = None
        netns.create(self.dhcpd_ns)
        netns.create(self.ours_ns)
        netns.run(self.dhcpd_ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name",
                                  "eth0", "netns", self.ours_ns])  # fmt: skip
        for ns, ip in ((self.dhcpd_ns, self.dhcpd_ip), (self.ours_ns, self.our_ip)):
            netns.run(ns, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
            netns.run(ns, ["ip", "link", "set", "eth0", "up"])
            netns.run(ns, ["ip", "link", "set", "lo", "up"])
        (tmp / "dhcpd.conf").write_text(dhcpd_conf(dhcpd_role))
        (tmp / "dhcpd.leases").write_text("")

    def popen(self, ns: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - closed with the process
        proc = netns.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_dhcpd(self) -> None:
        t = self.tmp
        argv = ["dhcpd", "-4", "-d", "-f", "-cf", str(t / "dhcpd.conf")]
        argv += ["-lf", str(t / "dhcpd.leases"), "-pf", str(t / "dhcpd.pid"), "eth0"]
        self.dhcpd = self.popen(self.dhcpd_ns, argv, "dhcpd.log")

    def kill_dhcpd(self) -> None:
        assert self.dhcpd is not None
        self.dhcpd.send_signal(signal.SIGKILL)
        self.dhcpd.wait(timeout=5)

    def start_ours(self) -> None:
        self.ours = self.popen(self.ours_ns, [sys.executable, str(PEER), "--role", self.our_role,
            "--local", self.our_ip, "--peer", self.dhcpd_ip, "--first", FIRST, "--last", LAST,
            "--auto-partner-down", "5"], "ours.log")  # fmt: skip

    def capture(self) -> subprocess.Popen[bytes]:
        pcap = self.tmp / "fo.pcap"
        return self.popen(self.ours_ns, ["tcpdump", "-i", "eth0", "-U", "--immediate-mode",
            "-w", str(pcap), "tcp port 519 or tcp port 520"], "tcpdump.log")  # fmt: skip

    def status(self) -> dict[str, Any] | None:
        lines = (self.tmp / "ours.log").read_text().splitlines()
        for line in reversed(lines):
            with contextlib.suppress(json.JSONDecodeError):
                value: dict[str, Any] = json.loads(line)
                return value
        return None

    def dhcpd_log(self) -> str:
        return (self.tmp / "dhcpd.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        netns.remove_all(self.prefix)


@pytest.fixture
def pair_factory(tmp_path: Path) -> Iterator[list[Pair]]:
    made: list[Pair] = []
    try:
        yield made
    finally:
        for p in made:
            p.close()


def both_normal(p: Pair) -> bool:
    st = p.status()
    return bool(st and st["my_state"] == "normal" and st["peer_state"] == "normal"
                and "Both servers normal" in p.dhcpd_log())  # fmt: skip


@pytest.mark.parametrize("dhcpd_role", ["primary", "secondary"])
def test_carpsim_pairs_with_isc_dhcpd(
    pair_factory: list[Pair], tmp_path: Path, dhcpd_role: str
) -> None:
    need_tool("dhcpd")
    need_tool("tcpdump")
    tshark = need_tool("tshark")
    p = Pair(tmp_path, dhcpd_role)
    pair_factory.append(p)
    cap = p.capture()
    time.sleep(0.5)
    p.start_ours()
    p.start_dhcpd()
    wait_for(lambda: both_normal(p), 30.0, 0.2, "both servers normal")
    st = p.status()
    assert st is not None
    # Every BNDUPD answered both ways (dhcpd rejects the crossing half of the UPDREQALL
    # answers with reason 16, as it does with another dhcpd), our client binding accepted.
    wait_for(lambda: "02:00:00:00:09:09" in (tmp_path / "dhcpd.leases").read_text(), 10.0,
             0.2, "our BNDUPD ACTIVE in dhcpd's lease file")  # fmt: skip
    wait_for(lambda: (p.status() or {}).get("unacked") == 0, 5.0, 0.2, "all acked")
    st = p.status()
    assert st is not None
    assert st["bndupd_acked"] >= 1
    assert st["bndupd_acked"] + st["bndupd_rejected"] == st["messages_out"]["BNDUPD"]
    assert st["messages_in"].get("BNDUPD", 0) >= 50
    assert st["messages_out"]["BNDACK"] == st["messages_in"]["BNDUPD"]
    assert set(st["drops"]) <= {"bndupd_rejected_16", "bndupd_less_critical"}
    assert st["drops"].get("bndupd_illegal_ip", 0) == 0
    assert "foreign_peer" not in st["edge_drops"]
    # dhcpd dies: we lose the link, serve alone, then partner-down after auto-partner-down.
    p.kill_dhcpd()
    wait_for(lambda: (p.status() or {}).get("my_state") == "partner-down", 20.0, 0.2,
             "partner-down")  # fmt: skip
    # dhcpd restarts from its lease file and the pair is back to normal.
    p.start_dhcpd()
    wait_for(lambda: p.dhcpd_log().count("Both servers normal") >= 2
             and (p.status() or {}).get("my_state") == "normal", 40.0, 0.2,
             "normal again after restart")  # fmt: skip
    time.sleep(1.0)
    cap.send_signal(signal.SIGINT)
    cap.wait(timeout=5)
    ours = p.our_ip
    out = subprocess.run(
        [tshark, "-r", str(tmp_path / "fo.pcap"), "-d", "tcp.port==519,dhcpfo",
         "-d", "tcp.port==520,dhcpfo", "-Y", f"dhcpfo && ip.src=={ours}",
         "-T", "fields", "-e", "dhcpfo.type", "-e", "_ws.expert.message"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    types: set[str] = set()
    for line in out.stdout.splitlines():
        fields = line.split("\t")
        types.update(t for t in fields[0].split(",") if t)
        assert "alformed" not in line, line
    expected = {"5", "10", "3", "4", "11"} if dhcpd_role == "secondary" else {"6", "10", "3", "4"}
    assert expected <= types, types
    everything = subprocess.run(
        [tshark, "-r", str(tmp_path / "fo.pcap"), "-d", "tcp.port==519,dhcpfo",
         "-d", "tcp.port==520,dhcpfo", "-Y", BAD],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert everything.stdout.strip() == "", everything.stdout


def test_connection_from_another_address_is_refused(
    pair_factory: list[Pair], tmp_path: Path
) -> None:
    p = Pair(tmp_path, "primary")  # we are the secondary, listening on .3:520
    pair_factory.append(p)
    netns.run(p.dhcpd_ns, ["ip", "addr", "add", "192.168.110.9/24", "dev", "eth0"])
    p.start_ours()
    wait_for(lambda: p.status() is not None, 10.0, 0.1, "our peer running")
    probe = "\n".join([
        "import socket",
        "s = socket.socket()",
        "s.bind(('192.168.110.9', 0))",
        f"s.connect(('{p.our_ip}', 520))",
        "s.settimeout(3)",
        "try:",
        "    print('closed' if s.recv(100) == b'' else 'data')",
        "except ConnectionResetError:",
        "    print('closed')",
    ])  # fmt: skip
    out = netns.run(p.dhcpd_ns, [sys.executable, "-c", probe]).stdout
    assert out.strip() == "closed"
    wait_for(lambda: (p.status() or {}).get("edge_drops", {}).get("foreign_peer") == 1, 5.0,
             0.1, "foreign_peer counted")  # fmt: skip
    st = p.status()
    assert st is not None
    assert st["link"] == "down"
    assert st["my_state"] == "startup"
