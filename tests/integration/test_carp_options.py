"""Less common `carpsim carp` options on real interfaces: unicast --peer, hooks, --real-mac."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import Lan, status, vhid_state, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def carp(lan: Lan, host: str, addr: str, skew: int, *extra: str) -> str:
    control = str(lan.tmp / f"{host}.sock")
    lan.carpsim(
        host,
        "carp",
        "--interface",
        "lan",
        "--srcip",
        addr,
        "--vhid",
        "5",
        "--pass",
        "pw",
        "--addr",
        "10.91.0.254/24",
        "--advskew",
        str(skew),
        "--preempt",
        "--control",
        control,
        "--name",
        host,
        *extra,
        log=f"{host}.log",
    )
    return control


def test_unicast_peers_elect_and_fail_over(lan: Lan) -> None:
    lan.plug("n1", "lan", "10.91.0.1/24")
    lan.plug("n2", "lan", "10.91.0.2/24")
    lan.plug("mon", "eth0", None)
    c1 = carp(lan, "n1", "10.91.0.1", 0, "--peer", "10.91.0.2")
    c2 = carp(lan, "n2", "10.91.0.2", 100, "--peer", "10.91.0.1")
    wait_for(lambda: vhid_state(c1, 5) == "MASTER", 8, what="n1 MASTER")
    wait_for(lambda: vhid_state(c2, 5) == "BACKUP", 2, what="n2 BACKUP")
    time.sleep(1.5)
    st = status(c2)
    assert st["vhids"][0]["last_advert_src"] == "10.91.0.1"
    assert st["vhids"][0]["peer"] == "10.91.0.1"
    assert st["drops"] == {}
    lan.procs[0].send_signal(signal.SIGTERM)
    wait_for(lambda: vhid_state(c2, 5) == "MASTER", 1.0, what="n2 MASTER after bow-out")


def test_hooks_run_asynchronously_with_ucarp_arguments(lan: Lan) -> None:
    lan.plug("n1", "lan", "10.91.0.1/24")
    log = lan.tmp / "hooks.log"
    scripts = []
    for word in ("up", "down"):
        path = lan.tmp / f"{word}.sh"
        # A slow script: if hooks blocked the loop, adverts would stall for 2 s.
        path.write_text(f'#!/bin/sh\necho "{word} $1 $2" >> {log}\nsleep 2\n')
        path.chmod(0o755)
        scripts.append(str(path))
    control = carp(
        lan,
        "n1",
        "10.91.0.1",
        0,
        "--upscript",
        scripts[0],
        "--downscript",
        scripts[1],
        "--shutdown",
    )
    wait_for(lambda: vhid_state(control, 5) == "MASTER", 8, what="MASTER")
    tx0 = status(control)["tx_packets"]
    time.sleep(1.6)  # the upscript is still sleeping; adverts must keep flowing
    assert status(control)["tx_packets"] > tx0
    proc = lan.procs[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=8) == 0
    # startup downscript (not --neutral), upscript on MASTER, downscript on --shutdown
    assert Path(log).read_text().splitlines() == [
        "down lan 10.91.0.254",
        "up lan 10.91.0.254",
        "down lan 10.91.0.254",
    ]


def test_real_mac_keeps_the_vip_on_the_parent(lan: Lan) -> None:
    lan.plug("n1", "lan", "10.91.0.1/24")
    lan.plug("cl", "eth0", "10.91.0.10/24")
    control = carp(lan, "n1", "10.91.0.1", 0, "--real-mac")
    wait_for(lambda: vhid_state(control, 5) == "MASTER", 8, what="MASTER")
    host = lan.host("n1")
    assert "10.91.0.254/24" in lan.sh(host, "ip", "-4", "addr", "show", "dev", "lan")
    assert lan.sh(host, "ip", "-o", "link", "show", "type", "macvlan") == ""
    real = lan.sh(host, "cat", "/sys/class/net/lan/address").strip()
    lan.sh(lan.host("cl"), "ping", "-c", "1", "-W", "1", "10.91.0.254")
    assert real in lan.sh(lan.host("cl"), "ip", "neigh", "show", "10.91.0.254")
