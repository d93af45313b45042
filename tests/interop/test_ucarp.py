"""carpsim against Debian's real ucarp on one bridge, one VIP per VHID.

ucarp's own log is block-buffered (ucarp log.c), so its state is read from its up/down
scripts, which append a line to a file on every transition. ucarp hands received packets over
in ~1 s pcap batches (libpcap timeout): the timeouts below allow for that.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from interop.conftest import Lan, need_tool, status, try_status, vhid_state, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(90)]

VHID = 7
VIP = "10.71.0.254"
CARPSIM_IP, UCARP_IP = "10.71.0.1", "10.71.0.2"
PCAP_LAG = 1.0


def ucarp_state_file(tmp: Path) -> Path:
    return tmp / "ucarp-state"


def ucarp_state(tmp: Path) -> str | None:
    path = ucarp_state_file(tmp)
    if not path.exists():
        return None
    lines = path.read_text().split()
    return lines[-1] if lines else None


def write_scripts(tmp: Path) -> tuple[Path, Path]:
    state = ucarp_state_file(tmp)
    scripts = []
    for word in ("up", "down"):
        script = tmp / f"{word}.sh"
        script.write_text(f"#!/bin/sh\necho {word.upper()} >> {state}\n")
        script.chmod(0o755)
        scripts.append(script)
    return scripts[0], scripts[1]


def start_ucarp(lan: Lan, password: str, skew: int) -> None:
    up, down = write_scripts(lan.tmp)
    lan.popen(
        "uc",
        [
            need_tool("ucarp"),
            "-i",
            "lan",
            "-s",
            UCARP_IP,
            "-v",
            str(VHID),
            "-p",
            password,
            "-a",
            VIP,
            "-b",
            "1",
            "-k",
            str(skew),
            "-P",
            "-u",
            str(up),
            "-d",
            str(down),
        ],
        log="ucarp.log",
    )


def start_carpsim(lan: Lan, password: str, skew: int) -> str:
    control = str(lan.tmp / "cs.sock")
    lan.carpsim(
        "cs",
        "carp",
        "--interface",
        "lan",
        "--srcip",
        CARPSIM_IP,
        "--vhid",
        str(VHID),
        "--pass",
        password,
        "--addr",
        f"{VIP}/24",
        "--advbase",
        "1",
        "--advskew",
        str(skew),
        "--preempt",
        "--control",
        control,
        "--name",
        "cs",
        log="carpsim.log",
    )
    return control


def plug(lan: Lan) -> None:
    need_tool("ucarp")
    lan.plug("cs", "lan", f"{CARPSIM_IP}/24")
    lan.plug("uc", "lan", f"{UCARP_IP}/24")


def test_carpsim_master_ucarp_backup_then_ucarp_takes_over(lan: Lan) -> None:
    plug(lan)
    control = start_carpsim(lan, "s3cret", 0)
    wait_for(lambda: vhid_state(control, VHID) == "MASTER", 8, what="carpsim MASTER")
    start_ucarp(lan, "s3cret", 100)
    wait_for(lambda: ucarp_state(lan.tmp) == "DOWN", 5, what="ucarp startup downscript")
    # ucarp accepts our adverts (HMAC, checksum, TTL): it stays BACKUP past its master-down.
    time.sleep(3 + 100 / 256 + PCAP_LAG + 0.5)
    assert ucarp_state(lan.tmp) == "DOWN"
    assert vhid_state(control, VHID) == "MASTER"

    proc = lan.procs[0]
    t_kill = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: ucarp_state(lan.tmp) == "UP", 3.39 + PCAP_LAG + 2.5, what="ucarp MASTER")
    print(f"ucarp took over {time.monotonic() - t_kill:.2f}s after carpsim was killed")


def test_carpsim_preempts_a_ucarp_master(lan: Lan) -> None:
    plug(lan)
    start_ucarp(lan, "s3cret", 100)
    wait_for(lambda: ucarp_state(lan.tmp) == "UP", 3 + 100 / 256 + 3, what="lone ucarp MASTER")
    t_start = time.monotonic()
    control = start_carpsim(lan, "s3cret", 0)
    wait_for(lambda: try_status(control) is not None, 5, what="carpsim control socket")
    wait_for(lambda: vhid_state(control, VHID) == "MASTER", 3, what="carpsim preempts")
    st = status(control)["vhids"][0]
    assert st["last_advert_src"] == UCARP_IP  # it heard ucarp and preempted, not a timeout
    print(f"carpsim MASTER {time.monotonic() - t_start:.2f}s after start (preempt)")
    wait_for(lambda: ucarp_state(lan.tmp) == "DOWN", 1 + PCAP_LAG + 1.5, what="ucarp BACKUP")
    time.sleep(1.5)
    assert vhid_state(control, VHID) == "MASTER"
    assert status(control)["drops"] == {}


def test_wrong_password_counts_badauth(lan: Lan) -> None:
    plug(lan)
    control = start_carpsim(lan, "s3cret", 0)
    start_ucarp(lan, "not-the-same", 100)
    # Neither accepts the other: ucarp times out to MASTER and its adverts fail our HMAC.
    wait_for(
        lambda: ucarp_state(lan.tmp) == "UP",
        3 + 100 / 256 + PCAP_LAG + 3,
        what="ucarp MASTER (split brain)",
    )
    wait_for(lambda: status(control)["drops"].get("badauth", 0) >= 2, 4, what="badauth")
    st = status(control)
    assert set(st["drops"]) == {"badauth"}
    assert st["vhids"][0]["drops"]["badauth"] >= 2
    assert st["vhids"][0]["state"] == "MASTER"
