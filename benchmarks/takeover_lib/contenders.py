"""The daemons under test, each started the same way on the same segment.

Node A is the intended master (best skew / highest priority), node B the backup. Every
contender knows its theoretical master-down interval on node B (the time B waits after the
last advert it heard), which the measured detection time is compared against.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from carpsim.net import netns

from .topology import PREFIXLEN, Node, Segment

PASSWORD = "K33p_It_S3cr3t!"
VHID = 1


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class Daemon:
    """A contender process running in a node's namespace, with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the daemon and every process it forked: no goodbye of any kind."""
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(node: Node, argv: Sequence[str], log: Path) -> Daemon:
    with open(log, "ab") as out:
        proc = netns.popen(
            node.ns,
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Daemon(proc, log)


class Contender(ABC):
    name: str
    klass: str  # "advbase1" or "fast": contenders are compared within a class only

    @abstractmethod
    def master_down(self) -> float:
        """Theoretical master-down interval of node B (seconds)."""

    @abstractmethod
    def start(self, seg: Segment, node: Node, workdir: Path) -> Daemon: ...

    @abstractmethod
    def version(self) -> str: ...

    def describe(self) -> str:
        return self.name


class Carpsim(Contender):
    def __init__(
        self, name: str, klass: str, advbase: int, skews: tuple[int, int], formula: str
    ) -> None:
        self.name, self.klass = name, klass
        self.advbase, self.skews, self.formula = advbase, skews, formula

    def master_down(self) -> float:
        b, s = self.advbase, self.skews[1]
        if self.formula == "openbsd":
            return max(3 * (b + s / 256), 3 / 256)
        return 3 * b + s / 256

    def describe(self) -> str:
        return (
            f"{self.name}: advbase {self.advbase}, advskew {self.skews[0]}/{self.skews[1]}, "
            f"preempt, master-down formula {self.formula}"
        )

    def version(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "carpsim", "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "carpsim (unknown version)"

    def start(self, seg: Segment, node: Node, workdir: Path) -> Daemon:
        skew = self.skews[0 if node is seg.a else 1]
        tag = f"{self.name}-{node.name}"
        argv = [
            sys.executable,
            "-m",
            "carpsim",
            "carp",
            "--interface",
            node.ifname,
            "--srcip",
            node.ip,
            "--vhid",
            str(VHID),
            "--pass",
            PASSWORD,
            "--addr",
            f"{seg.vip}/{PREFIXLEN}",
            "--advbase",
            str(self.advbase),
            "--advskew",
            str(skew),
            "--preempt",
            "--master-down-formula",
            self.formula,
            "--events-json",
            str(workdir / f"{tag}.events.jsonl"),
            "--control",
            str(workdir / f"{tag}.sock"),
        ]
        return spawn(node, argv, workdir / f"{tag}.log")


class Ucarp(Contender):
    name, klass = "ucarp", "advbase1"
    skews = (0, 100)

    def master_down(self) -> float:
        return 3 * 1 + self.skews[1] / 256

    def describe(self) -> str:
        return "ucarp: advbase 1, advskew 0/100, preempt, up/down scripts (ip addr + arping)"

    def version(self) -> str:
        out = subprocess.run(["ucarp", "--help"], capture_output=True, text=True, check=False)
        return (out.stdout + out.stderr).strip().splitlines()[0]

    def start(self, seg: Segment, node: Node, workdir: Path) -> Daemon:
        up, down = workdir / "ucarp-up.sh", workdir / "ucarp-down.sh"
        if not up.exists():
            # The GARP runs in the background: ucarp waits for its scripts, and a blocking
            # arping would delay its first adverts (ucarp spawn.c).
            up.write_text(
                textwrap.dedent(f"""\
                #!/bin/sh
                ip addr add "$2/{PREFIXLEN}" dev "$1"
                arping -q -U -c 2 -w 1 -i "$1" -S "$2" "$2" >/dev/null 2>&1 &
                """)
            )
            down.write_text(f'#!/bin/sh\nip addr del "$2/{PREFIXLEN}" dev "$1"\n')
            up.chmod(0o755)
            down.chmod(0o755)
        skew = self.skews[0 if node is seg.a else 1]
        argv = [
            "ucarp",
            "--interface",
            node.ifname,
            "--srcip",
            node.ip,
            "--vhid",
            str(VHID),
            "--pass",
            PASSWORD,
            "--addr",
            seg.vip,
            "--advbase",
            "1",
            "--advskew",
            str(skew),
            "--preempt",
            "--upscript",
            str(up),
            "--downscript",
            str(down),
            "--facility",
            "none",
        ]
        return spawn(node, argv, workdir / f"ucarp-{node.name}.log")


class Keepalived(Contender):
    def __init__(self, name: str, klass: str, version: int, advert_int: float) -> None:
        self.name, self.klass = name, klass
        self.vrrp_version, self.advert_int = version, advert_int
        self.priorities = (150, 100)

    def master_down(self) -> float:
        # RFC 3768 / RFC 5798: 3 x interval + skew time; v2 skew is (256-prio)/256 s, v3 scales
        # it by the advert interval.
        skew = (256 - self.priorities[1]) / 256
        if self.vrrp_version == 3:
            skew *= self.advert_int
        return 3 * self.advert_int + skew

    def describe(self) -> str:
        return (
            f"{self.name}: VRRPv{self.vrrp_version}, advert_int {self.advert_int}, "
            f"priority {self.priorities[0]}/{self.priorities[1]}, preempt"
        )

    def version(self) -> str:
        out = subprocess.run(
            ["keepalived", "--version"], capture_output=True, text=True, check=False
        )
        return (out.stdout + out.stderr).strip().splitlines()[0]

    def start(self, seg: Segment, node: Node, workdir: Path) -> Daemon:
        tag = f"{self.name}-{node.name}"
        prio = self.priorities[0 if node is seg.a else 1]
        conf = workdir / f"{tag}.conf"
        conf.write_text(
            textwrap.dedent(f"""\
            global_defs {{
                router_id {tag}
                vrrp_version {self.vrrp_version}
            }}
            vrrp_instance bench {{
                state BACKUP
                interface {node.ifname}
                virtual_router_id {VHID}
                priority {prio}
                advert_int {self.advert_int}
                virtual_ipaddress {{
                    {seg.vip}/{PREFIXLEN} dev {node.ifname}
                }}
            }}
            """)
        )
        # Fresh pid files for every start: keepalived refuses to start while a pid file names a
        # live process, and the pid of a SIGKILLed child may be reused.
        run = len(list(workdir.glob(f"{tag}.*.pid.d")))
        piddir = workdir / f"{tag}.{run}.pid.d"
        piddir.mkdir()
        argv = [
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "--vrrp",
            "--dont-respawn",
            "-f",
            str(conf),
            "-p",
            str(piddir / "keepalived.pid"),
            "-r",
            str(piddir / "vrrp.pid"),
            "-c",
            str(piddir / "checkers.pid"),
        ]
        return spawn(node, argv, workdir / f"{tag}.log")


def build(names: Sequence[str], fast_skews: tuple[int, int]) -> list[Contender]:
    table: dict[str, Contender] = {
        "carpsim": Carpsim("carpsim", "advbase1", 1, (0, 100), "freebsd"),
        "ucarp": Ucarp(),
        "keepalived": Keepalived("keepalived", "advbase1", 2, 1.0),
        "carpsim-fast": Carpsim("carpsim-fast", "fast", 0, fast_skews, "openbsd"),
        "keepalived-v3": Keepalived("keepalived-v3", "fast", 3, 0.01),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown contender(s): {', '.join(unknown)}; known: {', '.join(table)}")
    return [table[n] for n in names]


ALL = ("carpsim", "ucarp", "keepalived", "carpsim-fast", "keepalived-v3")
