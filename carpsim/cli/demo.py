"""`carpsim demo`: the reference cluster, a forced failover and a failback, narrated (~20 s).

Brings the reference lab up under its own prefix (``cs-demo-``), shows the CARP status of both
nodes, reaches the internet server from a LAN client through the outbound NAT, pulls node1's
power cord while a ping runs, shows node2 taking over, powers node1 back on, shows it preempt,
and always tears the lab down again (also on Ctrl-C or SIGTERM).
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

from carpsim.lab import builder, status
from carpsim.lab.session import Lab
from carpsim.net import netns

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


def _whoami(lab: Lab) -> str:
    proc = lab.run(CLIENT, [sys.executable, "-m", "carpsim.lab.whoami", "ask", SERVER], timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else f"FAILED ({proc.stderr.strip()})"


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

        _title("4. Force Off node1 (SIGKILL, every cable pulled, no goodbye) while pinging")
        pinger = Pinger(lab, CLIENT)
        time.sleep(1.0)
        t0 = time.monotonic()
        lab.kill("node1")
        _say("node1 is off; node2 declares it dead master_down = 3 x 1s + 100/256 s"
             " after the last advert it heard")
        took = lab.wait_master("node2", timeout=10, down=["node1"])
        _say(f"after {time.monotonic() - t0:.1f}s: {_states_line(lab)}"
             + ("" if took else "  (node2 did NOT take over)"))
        time.sleep(1.0)
        _say(f"ping during failover: {pinger.stop()}")
        _say(f"TCP after failover: the server sees {_whoami(lab)} (same VIP, now on node2)")
        _show_status(lab)

        _title("5. Power node1 back on: it starts as BACKUP, then preempts with advskew 0")
        pinger = Pinger(lab, CLIENT)
        time.sleep(0.5)
        t0 = time.monotonic()
        lab.start("node1")
        back = lab.wait_master("node1", timeout=10)
        _say(f"after {time.monotonic() - t0:.1f}s: {_states_line(lab)}"
             + ("" if back else "  (node1 did NOT preempt)"))
        time.sleep(1.0)
        _say(f"ping during failback: {pinger.stop()}")
        _show_status(lab)
        server.kill()
        result = 0 if took and back else 1
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        result = 130
    finally:
        _title("6. Tear down")
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
