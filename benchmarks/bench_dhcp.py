"""perfdhcp against a carpsim DHCP failover pair and an ISC dhcpd pair, same topology, same run.

    sudo python benchmarks/bench_dhcp.py [--rate 300] [--period 20] [--clients 8000]

Needs root, ``dhcpd`` (isc-dhcp-server) and ``perfdhcp`` (``apt-get install kea-admin``). Per
pair: a switch namespace with one bridge, servers A (primary, 192.168.64.251/18) and B
(secondary, .252), a client namespace (.10) where perfdhcp acts as a relay unicasting to A.
Both pairs: split 256 (A answers every client and sends B a BNDUPD for each lease; see
benchmarks/README.md for why), mclt 30, no ping check. Halfway through the run A is SIGKILLed
and restarted 1 s later from its lease file. Then B is asked to agree:

- DORA exchanges/s and DISCOVER->OFFER / REQUEST->ACK latency p50/p99 (perfdhcp ``-x t``);
- BNDUPD->BNDACK latency p50/p99, from a capture of the failover TCP stream on the bridge;
- duplicates: an address ACKed to two clients, or active for two MACs in the lease files;
- lost: an address perfdhcp got an ACK for that is not active in A's lease file afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carpsim.dhcp import codec as dhcp_codec
from carpsim.dhcp import leasefile
from carpsim.dhcp.failover import codec as fo_codec
from carpsim.dhcp.lease import BindingState
from carpsim.dhcp.options import MessageType
from carpsim.errors import DecodeError
from carpsim.wire.pcap import ETHERTYPE_IPV4, network_payload, read_frames

A, B, CLIENT = "192.168.64.251", "192.168.64.252", "192.168.64.10"

NODE_TOML = """[node]
name = "{name}"
[interfaces.lan]
device = "eth0"
address = "{me}/18"
[[virtualip.vip]]
interface = "lan"
vhid = 1
subnet = "192.168.64.254"
password = "bench"
advskew = {skew}
[dhcpd.lan]
enable = true
range = {{ from = "192.168.65.0", to = "192.168.127.250" }}
gateway = "192.168.64.254"
dnsserver = ["192.168.64.254"]
failover_peerip = "{peer}"
"""

DHCPD_CONF = """authoritative;
ping-check false;
failover peer "dhcp_lan" {{
  {role};
  address {me};
  port {port};
  peer address {peer};
  peer port {peer_port};
  max-response-delay 10;
  max-unacked-updates 10;
  load balance max seconds 3;
  {primary_only}
}}
subnet 192.168.64.0 netmask 255.255.192.0 {{
  option routers 192.168.64.254;
  option domain-name-servers 192.168.64.254;
  default-lease-time 7200;
  max-lease-time 86400;
  pool {{
    failover peer "dhcp_lan";
    range 192.168.65.0 192.168.127.250;
  }}
}}
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def nsx(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


class Segment:
    """Switch + two servers + one client, every name under a unique prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sw, self.a, self.b, self.c = (prefix + x for x in ("sw", "a", "b", "c"))
        for ns in (self.sw, self.a, self.b, self.c):
            sh("ip", "netns", "add", ns)
            sh(*nsx(ns, "ip", "link", "set", "lo", "up"))
        sh(*nsx(self.sw, "ip", "link", "add", "br0", "type", "bridge"))
        sh(*nsx(self.sw, "ip", "link", "set", "br0", "up"))
        for ns, addr in ((self.a, A), (self.b, B), (self.c, CLIENT)):
            port = "p" + ns[-1]
            sh(*nsx(self.sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns))  # fmt: skip
            sh(*nsx(self.sw, "ip", "link", "set", port, "master", "br0", "up"))
            sh(*nsx(ns, "ip", "addr", "add", f"{addr}/18", "dev", "eth0"))
            sh(*nsx(ns, "ip", "link", "set", "eth0", "up"))

    def close(self) -> None:
        for ns in (self.sw, self.a, self.b, self.c):
            sh(*nsx(ns, "sh", "-c", "kill -9 $(ip netns pids $(ip netns identify)) 2>/dev/null"),
               check=False)  # fmt: skip
            sh("ip", "netns", "del", ns, check=False)


class Pair:
    """Start/kill/restart one server implementation on A and B."""

    name = ""

    def __init__(self, seg: Segment, work: Path) -> None:
        self.seg, self.work = seg, work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, side: str) -> list[str]:
        raise NotImplementedError

    def lease_file(self, side: str) -> Path:
        raise NotImplementedError

    def states(self, side: str) -> str | None:
        raise NotImplementedError

    def start(self, side: str) -> None:
        ns = self.seg.a if side == "a" else self.seg.b
        log = open(self.work / f"{side}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[side] = subprocess.Popen(nsx(ns, *self.argv(side)), stdout=log, stderr=log)

    def kill(self, side: str) -> None:
        proc = self.procs.pop(side)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # `ip netns exec` execs the server, so the pid is the server's own.

    def stop(self) -> None:
        for side in list(self.procs):
            self.kill(side)

    def wait_normal(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.states("a") == "normal" and self.states("b") == "normal":
                return True
            time.sleep(0.25)
        return False

    def leases(self, side: str) -> dict[str, tuple[BindingState, str]]:
        text = self.lease_file(side).read_text(errors="replace")
        return {str(x.address): (x.state, x.hw_address.hex())
                for x in leasefile.parse(text).leases.values()}  # fmt: skip

    def settled(self, timeout: float) -> bool:
        """Wait until the pool division's BNDUPDs are done (B's lease file stops growing)."""
        deadline, last, still = time.monotonic() + timeout, -1, 0
        while time.monotonic() < deadline:
            size = self.lease_file("b").stat().st_size
            still = still + 1 if size == last else 0
            if still >= 8:
                return True
            last = size
            time.sleep(0.25)
        return False

    def agree(self, timeout: float) -> tuple[dict[str, tuple[BindingState, str]], ...]:
        """Both lease files, once B holds every binding A holds (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            a, b = self.leases("a"), self.leases("b")
            bound = {ip: v for ip, v in a.items() if v[0] is BindingState.ACTIVE}
            if all(b.get(ip) == v for ip, v in bound.items()) or time.monotonic() > deadline:
                return a, b
            time.sleep(0.5)


class CarpsimPair(Pair):
    name = "carpsim"

    def __init__(self, seg: Segment, work: Path) -> None:
        super().__init__(seg, work)
        for side, me, peer, skew in (("a", A, B, 0), ("b", B, A, 100)):
            (work / f"{side}.toml").write_text(
                NODE_TOML.format(name=side, me=me, peer=peer, skew=skew)
            )

    def argv(self, side: str) -> list[str]:
        return [sys.executable, "-m", "carpsim.runtime.node_dhcp", "--config",
                str(self.work / f"{side}.toml"), "--state-dir", str(self.work / f"{side}.state"),
                "--status", str(self.work / f"{side}.json"), "--no-ping-check", "--split", "256",
                "--mclt", "30"]  # fmt: skip

    def lease_file(self, side: str) -> Path:
        return self.work / f"{side}.state" / "dhcpd.eth0.leases"

    def states(self, side: str) -> str | None:
        try:
            status = json.loads((self.work / f"{side}.json").read_text())
        except (OSError, ValueError):
            return None
        fo = status[0].get("failover") or {}
        return str(fo.get("my_state")) if fo.get("peer_state") == "normal" else None


class DhcpdPair(Pair):
    name = "ISC dhcpd 4.4"

    def __init__(self, seg: Segment, work: Path) -> None:
        super().__init__(seg, work)
        for side, me, peer, role in (("a", A, B, "primary"), ("b", B, A, "secondary")):
            primary = role == "primary"
            (work / f"{side}.conf").write_text(DHCPD_CONF.format(
                role=role, me=me, peer=peer, port=519 if primary else 520,
                peer_port=520 if primary else 519,
                primary_only="mclt 30;\n  split 256;" if primary else "",
            ))  # fmt: skip
            (work / f"{side}.leases").write_text("")

    def argv(self, side: str) -> list[str]:
        argv = ["dhcpd", "-4", "-f", "-d", "-cf", str(self.work / f"{side}.conf")]
        return [*argv, "-lf", str(self.lease_file(side)), "-pf", str(self.work / f"{side}.pid"),
                "eth0"]  # fmt: skip

    def lease_file(self, side: str) -> Path:
        return self.work / f"{side}.leases"

    def states(self, side: str) -> str | None:
        text = (self.work / f"{side}.log").read_text(errors="replace")
        moves = re.findall(r"I move from \S+ to (\S+)", text)
        peer = re.findall(r"peer moves from \S+ to (\S+)", text)
        if moves and peer and peer[-1] == "normal":
            return str(moves[-1])
        return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def perfdhcp_report(text: str) -> dict[str, Any]:
    """Rate, per-exchange latencies (``-x t``) and the ACKed addresses (``-x l``)."""
    out: dict[str, Any] = {}
    m = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", text)
    out["rate"] = float(m.group(1)) if m else 0.0
    sent = re.findall(r"sent packets: (\d+)", text)
    recv = re.findall(r"received packets: (\d+)", text)
    out["sent"], out["received"] = [int(x) for x in sent], [int(x) for x in recv]
    # Offers are not leases: after the kill a restarted server may re-offer an address it had
    # offered (never ACKed) to another client. Only the REQUEST-ACK section's count matters.
    ack_part = text.split("***Statistics for: REQUEST-ACK***", 1)[-1].split("***", 1)[0]
    m = re.search(r"non unique addresses: (\d+)", ack_part)
    out["non_unique"] = int(m.group(1)) if m else 0
    do: list[float] = []
    ra: list[float] = []
    section: list[float] | None = None
    acked: list[str] = []
    for line in text.splitlines():
        if line.startswith("***Timestamps for packets: DISCOVER-OFFER"):
            section = do
        elif line.startswith("***Timestamps for packets: REQUEST-ACK"):
            section = ra
        elif line.startswith("***"):
            section = None
        t = re.match(r"sent / received: ([\d.]+) / ([\d.]+)", line)
        if t and section is not None:
            section.append((float(t.group(2)) - float(t.group(1))) * 1000.0)
        lease = re.match(r"^,(\d+\.\d+\.\d+\.\d+),$", line)
        if lease:
            acked.append(lease.group(1))
    out["do_ms"], out["ra_ms"], out["acked"] = do, ra, acked
    return out


def capture_report(pcap: Path) -> tuple[list[float], dict[str, set[str]]]:
    """From the capture on the bridge: BNDUPD (A) -> BNDACK (B) latencies for the same address
    in ms, and every DHCPACK the servers sent (address -> client MACs)."""
    pending: dict[str, float] = {}
    latencies: list[float] = []
    acks: dict[str, set[str]] = {}
    framers: dict[tuple[str, int], fo_codec.StreamFramer] = {}
    for frame in read_frames(pcap.read_bytes()):
        l3 = network_payload(frame)
        if l3 is None or l3[0] != ETHERTYPE_IPV4 or len(l3[1]) < 28:
            continue
        ip = l3[1]
        ihl = (ip[0] & 0x0F) * 4
        seg = ip[ihl : int.from_bytes(ip[2:4], "big")]
        src = ".".join(map(str, ip[12:16]))
        if ip[9] == 17:
            with contextlib.suppress(DecodeError):
                msg = dhcp_codec.decode(bytes(seg[8:]))
                if msg.message_type is MessageType.ACK and msg.yiaddr != dhcp_codec.ZERO:
                    acks.setdefault(str(msg.yiaddr), set()).add(msg.chaddr.hex())
            continue
        if ip[9] != 6 or len(seg) < 20:
            continue
        payload = seg[(seg[12] >> 4) * 4 :]
        if not payload:
            continue
        key = (src, int.from_bytes(seg[0:2], "big"))
        messages, _ = framers.setdefault(key, fo_codec.StreamFramer()).feed(bytes(payload))
        for fo in messages:
            d = fo_codec.describe(fo)
            addr = str(d.get("assigned_ip", ""))
            if d["type"] == "BNDUPD" and src == A:
                pending.setdefault(addr, frame.time)
            elif d["type"] == "BNDACK" and src == B and addr in pending:
                latencies.append((frame.time - pending.pop(addr)) * 1000.0)
    return latencies, acks


def run_pair(make: Callable[[Segment, Path], Pair], args: argparse.Namespace) -> dict[str, Any]:
    seg = Segment(f"bdh{os.getpid() % 10000}{make.__name__[0].lower()}")
    work = Path(tempfile.mkdtemp(prefix="bench-dhcp-"))
    pair = make(seg, work)
    cap: subprocess.Popen[bytes] | None = None
    try:
        pair.start("a")
        pair.start("b")
        if not pair.wait_normal(60.0):
            raise RuntimeError(f"{pair.name}: the pair did not reach normal (logs in {work})")
        t_settle = time.monotonic()
        pair.settled(300.0)
        settle_s = time.monotonic() - t_settle
        cap = subprocess.Popen(nsx(seg.sw, "tcpdump", "-i", "br0", "-w", str(work / "fo.pcap"),
                                   "-U", "tcp port 519 or tcp port 520 or udp port 67"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.5)
        perf = subprocess.Popen(
            nsx(seg.c, "perfdhcp", "-4", "-l", "eth0", "-r", str(args.rate), "-R",
                str(args.clients), "-p", str(args.period), "-u", "-x", "tl", A),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(args.period / 2)
        pair.kill("a")
        time.sleep(1.0)
        pair.start("a")
        text, _ = perf.communicate(timeout=args.period + 60)
        (work / "perfdhcp.txt").write_text(text)
        t_end = time.monotonic()
        agreed = pair.wait_normal(60.0)
        a_db, b_db = pair.agree(180.0)
        agree_s = time.monotonic() - t_end
        report = perfdhcp_report(text)
        report.pop("acked")  # perfdhcp lists offered addresses too: the capture has the ACKs
        cap.send_signal(signal.SIGINT)
        cap.wait(10)
        bnd, acks = capture_report(work / "fo.pcap")
        acked = list(acks)
        unbound = (BindingState.FREE, BindingState.BACKUP)
        lost = sorted(
            ip for ip in set(acked) if a_db.get(ip, (BindingState.FREE, ""))[0] in unbound
        )
        a_act = {ip: mac for ip, (st, mac) in a_db.items() if st is BindingState.ACTIVE}
        b_act = {ip: mac for ip, (st, mac) in b_db.items() if st is BindingState.ACTIVE}
        twice = sorted(ip for ip in set(a_act) & set(b_act) if a_act[ip] != b_act[ip])
        differ = len(set(a_act.items()) ^ set(b_act.items()))
        return {
            "server": pair.name,
            "dora_per_s": report["rate"],
            "do_p50_ms": percentile(report["do_ms"], 0.5),
            "do_p99_ms": percentile(report["do_ms"], 0.99),
            "ra_p50_ms": percentile(report["ra_ms"], 0.5),
            "ra_p99_ms": percentile(report["ra_ms"], 0.99),
            "bndupd_p50_ms": percentile(bnd, 0.5),
            "bndupd_p99_ms": percentile(bnd, 0.99),
            "bndupd_samples": len(bnd),
            "acked": len(acked),
            "lost_acked": len(lost),
            "duplicates": len(twice)
            + report["non_unique"]
            + sum(1 for macs in acks.values() if len(macs) > 1),
            "normal_after": agreed,
            "active_a": len(a_act),
            "active_b": len(b_act),
            "differ_after": differ,
            "pool_division_s": round(settle_s, 1),
            "agree_after_s": round(agree_s, 1),
            "work": str(work),
        }
    finally:
        if cap is not None and cap.poll() is None:
            cap.kill()
        pair.stop()
        seg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--period", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8000)
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--only", choices=["carpsim", "dhcpd"])
    args = ap.parse_args()
    rows = []
    for make in (CarpsimPair, DhcpdPair):
        if args.only and (args.only == "dhcpd") != (make is DhcpdPair):
            continue
        rows.append(run_pair(make, args))
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
