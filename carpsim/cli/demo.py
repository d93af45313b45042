"""`carpsim demo`: the reference cluster, a forced failover and a failback, narrated (~15 s).

Brings the reference lab up under its own prefix (``cs-demo-``), shows the CARP status of both
nodes, reaches the internet server from a LAN client through the outbound NAT, adds a firewall
rule on node1 and shows it arrive on node2 (config sync), starts a long download through it,
pulls node1's power cord while a ping runs, shows node2 taking over with the download running
(state sync had replicated the connection states), powers node1 back on, shows it sync and
preempt, and always tears the lab down again (also on Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from carpsim.cli import config_live
from carpsim.errors import EnvironmentProblem
from carpsim.lab import builder, status
from carpsim.lab.session import Lab
from carpsim.lab.tcp_probe import JsonLines
from carpsim.net import netns
from carpsim.protocol import timers
from carpsim.protocol.constants import MasterDownFormula

SERVER = "203.0.113.10"
CLIENT = "client1"
DEMO_PREFIX = "cs-demo-"


def _title(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _say(text: str) -> None:
    print(f"   {text}", flush=True)


def _show_status(lab: Lab) -> None:
    for line in status.render(status.collect(lab)).splitlines()[2:]:
        print(f"   {line}" if line else "", flush=True)


class Pinger:
    """A fast ping (10/s) from a LAN client; reports losses and the longest silence."""

    def __init__(self, lab: Lab, host: str) -> None:
        argv = ["ping", "-D", "-n", "-i", "0.1", "-W", "1", SERVER]
        self.proc = subprocess.Popen(
            netns.exec_argv(lab.namespace_of(host), argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=5)
        stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] 64 bytes", out, re.M)]
        summary = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not summary:
            return "no ping summary"
        sent, got = int(summary.group(1)), int(summary.group(2))
        gap = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
        return f"{sent} pings sent, {got} answered, {sent - got} lost; longest silence {gap:.2f}s"


class Downloads:
    """Long TCP downloads from the internet server to a LAN client, through the NAT."""

    STREAMS = 4
    PORT = 5001

    def __init__(self, lab: Lab) -> None:
        py = sys.executable
        self.server = netns.popen(
            lab.namespace_of("server"),
            [
                py,
                "-m",
                "carpsim.lab.tcp_probe",
                "serve",
                "--port",
                str(self.PORT),
                "--rate-mbit",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert self.server.stdout is not None
        JsonLines(self.server.stdout).wait_for("listening", 10.0)
        self.client = netns.popen(
            lab.namespace_of(CLIENT),
            [
                py,
                "-m",
                "carpsim.lab.tcp_probe",
                "fetch",
                SERVER,
                "--port",
                str(self.PORT),
                "--streams",
                str(self.STREAMS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert self.client.stdout is not None
        self.lines = JsonLines(self.client.stdout)

    def connected(self) -> list[str]:
        return [str(i["conn"]) for i in self.lines.snapshot() if i.get("ev") == "connect"]

    def wait_resumed(self, since: float, timeout: float) -> None:
        """Give TCP's retransmission backoff time: stop once every older stream has data."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive, older, _ = self._fate(since)
            if alive == older:
                return
            time.sleep(0.2)

    def report(self, since: float) -> str:
        """How the downloads opened before `since` (wall clock) fared after it."""
        alive, older, ended = self._fate(since)
        text = f"{alive} of {older} downloads kept receiving, {len(ended)} broken"
        if ended:
            text += " (" + ", ".join(sorted(set(ended.values()))) + ")"
        return text

    def _fate(self, since: float) -> tuple[int, int, dict[str, str]]:
        items = self.lines.snapshot()
        older = {str(i["conn"]) for i in items if i.get("ev") == "connect" and i["t"] < since}
        received: dict[str, int] = dict.fromkeys(older, 0)
        ended: dict[str, str] = {}
        for i in items:
            conn = str(i.get("conn"))
            if conn not in older:
                continue
            if i.get("ev") == "data" and float(i["last"]) >= since:
                received[conn] += int(i["n"])
            elif i.get("ev") == "end":
                ended[conn] = str(i["reason"])
        alive = [c for c, n in received.items() if n > 0 and c not in ended]
        return len(alive), len(older), ended

    def stop(self) -> None:
        for proc in (self.client, self.server):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _whoami(lab: Lab) -> str:
    proc = lab.run(CLIENT, [sys.executable, "-m", "carpsim.lab.whoami", "ask", SERVER], timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else f"FAILED ({proc.stderr.strip()})"


DEMO_RULE = {
    "interface": "lan", "action": "block", "protocol": "tcp", "source": "lan net",
    "destination": "198.51.100.0/24", "destination_port": "23", "descr": "demo: no telnet out",
}  # fmt: skip


def _rules(reply: dict[str, Any]) -> list[str]:
    rules = reply.get("config", {}).get("filter", {}).get("rule", [])
    return [str(r.get("descr", "")) for r in rules]


def _config_sync_step(lab: Lab) -> None:
    """The seed's check: add a rule on node1, see it on node2 (XML-RPC sync over SYNC)."""
    ask = config_live.socket_query(str(lab.paths.control("node1")))
    t0 = time.monotonic()
    reply = ask({"cmd": "config", "op": "add-rule", "args": {"rule": DEMO_RULE, "position": 0}})
    if not reply.get("ok"):
        _say(f"node1 refused the rule: {reply.get('error')}")
        return
    _say(f"node1: added '{DEMO_RULE['descr']}', pushing to {reply.get('pushing')}")
    peer = config_live.socket_query(str(lab.paths.control("node2")))
    seen: list[str] = []
    while time.monotonic() - t0 < 5 and DEMO_RULE["descr"] not in seen:
        seen = _rules(peer({"cmd": "config", "op": "show", "section": "filter"}))
        time.sleep(0.02)
    where = "is on node2" if DEMO_RULE["descr"] in seen else "did NOT reach node2"
    _say(f"after {time.monotonic() - t0:.2f}s the rule {where} ({len(seen)} rules there)")
    vips = peer({"cmd": "config", "op": "show", "section": "virtualip"})
    skews = sorted(
        {v["advskew"] for v in vips.get("config", {}).get("virtualip", {}).get("vip", [])}
    )
    _say(f"node2's VIPs: advskew {skews} (the master's skew + 100, as pfSense's sync sets it)")


def master_down_text(vip: dict[str, Any]) -> str:
    """A backup's master-down wait for one VIP (as `show virtualip` gives it), written the way
    its formula computes it (carpsim.protocol.timers), with the value."""
    base, skew = int(vip.get("advbase", 1)), int(vip.get("advskew", 0))
    ratio = int(vip.get("deadratio", 3))
    formula = MasterDownFormula(vip.get("master_down_formula", "freebsd"))
    value = timers.master_down_interval(base, skew, deadratio=ratio, formula=formula)
    if formula is MasterDownFormula.OPENBSD:
        text = f"{ratio} x ({base}s + {skew}/256 s)"
    else:
        text = f"{ratio} x {base}s + {skew}/256 s"
    return f"{text} = {value:.3f} s"


def _master_down(lab: Lab, node: str) -> str:
    try:
        reply = config_live.socket_query(str(lab.paths.control(node)))(
            {"cmd": "config", "op": "show", "section": "virtualip"}
        )
    except EnvironmentProblem as exc:
        return f"(cannot ask {node}: {exc})"
    vips = reply.get("config", {}).get("virtualip", {}).get("vip", [])
    return master_down_text(vips[0]) if vips else f"({node} shows no VIP)"


def _states_line(lab: Lab) -> str:
    parts = []
    for node, states in lab.states().items():
        shown = sorted(set(states.values())) or ["off"]
        parts.append(f"{node}: {'/'.join(shown)}")
    return ", ".join(parts)


_MAIN_PID = os.getpid()


def _on_term(signum: int, frame: FrameType | None) -> None:
    # Forked helpers (pyroute2 forks to create namespaces, then SIGTERMs the child) inherit this
    # handler: they must die as usual, never run the demo's teardown themselves.
    if os.getpid() != _MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def run_demo(prefix: str) -> int:
    builder.check_environment()
    lab = Lab.create("reference", prefix=prefix)
    if lab.is_up():
        _say(f"removing a previous demo lab ({prefix}) first")
        lab.down()
    signal.signal(signal.SIGTERM, _on_term)
    t_start = time.monotonic()
    try:
        _title("1. Build the reference cluster (network namespaces, nothing on the host)")
        lab.up(progress=_say)

        _title("2. Status > CARP on both nodes: node1 (advskew 0) is MASTER everywhere")
        _show_status(lab)

        _title(f"3. A LAN client ({CLIENT}, 192.168.110.10) reaches the internet server {SERVER}")
        server = netns.popen(
            lab.namespace_of("server"),
            [sys.executable, "-m", "carpsim.lab.whoami", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        ok = lab.run(CLIENT, ["ping", "-c", "3", "-i", "0.2", "-W", "1", SERVER])
        last = ok.stdout.strip().splitlines()[-2:] if ok.stdout else ["(no output)"]
        _say(f"ping: {last[0]}")
        _say(f"TCP: the server sees the client as {_whoami(lab)}")
        _say("   -> outbound NAT translated the LAN address to the WAN VIP 192.168.100.254")

        _title("4. Firewall > Rules on the master: a new rule appears on the backup (config sync)")
        _config_sync_step(lab)

        downloads = Downloads(lab)
        deadline = time.monotonic() + 10
        while len(downloads.connected()) < Downloads.STREAMS and time.monotonic() < deadline:
            time.sleep(0.1)
        _say(
            f"download: {len(downloads.connected())} TCP streams from {SERVER} to {CLIENT}, "
            "2 Mbit/s each, through node1's NAT"
        )

        _title("5. Force Off node1 (SIGKILL, every cable pulled, no goodbye) while pinging")
        pinger = Pinger(lab, CLIENT)
        time.sleep(1.0)
        t0 = time.monotonic()
        lab.kill("node1")
        _say(
            f"node1 is off; node2 declares it dead master_down = {_master_down(lab, 'node2')}"
            " after the last advert it heard"
        )
        took = lab.wait_master("node2", timeout=10, down=["node1"])
        _say(
            f"after {time.monotonic() - t0:.1f}s: {_states_line(lab)}"
            + ("" if took else "  (node2 did NOT take over)")
        )
        taken = time.time()
        time.sleep(1.0)
        downloads.wait_resumed(taken, timeout=8.0)
        _say(f"ping during failover: {pinger.stop()}")
        _say(f"download after failover: {downloads.report(taken)}")
        _say("   -> node2 already held node1's connection states (state sync over the SYNC link)")
        _say(f"TCP after failover: the server sees {_whoami(lab)} (same VIP, now on node2)")
        _show_status(lab)

        _title("6. Power node1 back on: BACKUP, pulls the state table from node2, then preempts")
        pinger = Pinger(lab, CLIENT)
        time.sleep(0.5)
        t0 = time.monotonic()
        lab.start("node1")
        back = lab.wait_master("node1", timeout=10)
        _say(
            f"after {time.monotonic() - t0:.1f}s: {_states_line(lab)}"
            + ("" if back else "  (node1 did NOT preempt)")
        )
        returned = time.time()
        time.sleep(1.0)
        downloads.wait_resumed(returned, timeout=8.0)
        _say(f"ping during failback: {pinger.stop()}")
        _say(f"download after failback: {downloads.report(returned)}")
        downloads.stop()
        _show_status(lab)
        server.kill()
        result = 0 if took and back else 1
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        result = 130
    finally:
        _title("7. Tear down")
        gone = lab.down()
        _say(f"removed {len(gone)} namespaces; nothing left (carpsim lab status says so)")
    print(f"\ndemo finished in {time.monotonic() - t_start:.0f}s", flush=True)
    return result


def _run(args: argparse.Namespace) -> int:
    return run_demo(args.prefix)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="narrated tour: reference lab, forced failover, failback, teardown"
    )
    parser.add_argument("--prefix", default=DEMO_PREFIX, help="namespace prefix for the demo lab")
    parser.set_defaults(func=_run)
