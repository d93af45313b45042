"""Namespace fixtures shared by the integration and interop tiers (CARP, lab, state sync).

`lan` gives a `Lan`: a switch namespace holding a Linux bridge, plus any number of host
namespaces each plugged into it by a veth pair. Nothing is created in the host namespace, every
name carries a unique prefix, and teardown (processes first, then namespaces) always runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from carpsim.net import netns
from carpsim.runtime.control import query

PYTHON = sys.executable


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Lan:
    """A bridge in a switch namespace and hosts (namespaces) plugged into it."""

    def __init__(self, prefix: str, tmp: Path) -> None:
        self.prefix = prefix
        self.tmp = tmp
        self.switch = f"{prefix}sw"
        self.bridges: set[str] = set()
        self.hosts: list[str] = []
        self.ports: dict[tuple[str, str], str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        netns.create(self.switch)

    def sh(self, ns: str, *argv: str, check: bool = True) -> str:
        return netns.run(ns, list(argv), check=check).stdout

    def host(self, name: str) -> str:
        ns = f"{self.prefix}{name}"
        if ns not in self.hosts:
            netns.create(ns)
            self.hosts.append(ns)
        return ns

    def bridge(self, name: str = "br0") -> str:
        if name not in self.bridges:
            self.sh(self.switch, "ip", "link", "add", name, "type", "bridge")
            # No STP delay, learning on: the fdb shows where each MAC lives.
            self.sh(self.switch, "ip", "link", "set", name, "type", "bridge", "forward_delay", "0")
            self.sh(self.switch, "ip", "link", "set", name, "up")
            self.bridges.add(name)
        return name

    def plug(self, host: str, ifname: str, address: str | None, bridge: str = "br0") -> str:
        """Connect `host` to `bridge` with a veth named `ifname` inside the host; returns port."""
        ns = self.host(host)
        self.bridge(bridge)
        port = f"p{len(self.ports)}{ifname}"[:15]
        self.sh(
            self.switch,
            "ip",
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns,
        )
        self.sh(self.switch, "ip", "link", "set", port, "master", bridge, "up")
        if address:
            self.sh(ns, "ip", "addr", "add", address, "dev", ifname)
        self.sh(ns, "ip", "link", "set", ifname, "up")
        self.ports[(host, ifname)] = port
        return port

    def port_down(self, host: str, ifname: str) -> None:
        """Cut the cable: the switch side goes down, the host loses carrier."""
        self.sh(self.switch, "ip", "link", "set", self.ports[(host, ifname)], "down")

    def port_up(self, host: str, ifname: str) -> None:
        self.sh(self.switch, "ip", "link", "set", self.ports[(host, ifname)], "up")

    def fdb_port(self, mac: str) -> str | None:
        out = self.sh(self.switch, "bridge", "fdb", "show")
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0].lower() == mac.lower() and "dev" in parts:
                return parts[parts.index("dev") + 1]
        return None

    def popen(self, host: str, argv: Sequence[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - closed with the process at teardown
        proc = netns.popen(self.host(host), list(argv), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def carpsim(self, host: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        return self.popen(host, [PYTHON, "-m", "carpsim", *args], log)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        netns.remove_all(self.prefix)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    _need_root()
    # CARPSIM_NS_TAG names whose run created the namespaces (parallel runs on one host).
    prefix = netns.unique_prefix("ct" + os.environ.get("CARPSIM_NS_TAG", ""))
    lab = Lan(prefix, tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def status(control: str) -> dict[str, Any]:
    return query(control, {"cmd": "status"}, timeout=2.0)


def try_status(control: str) -> dict[str, Any] | None:
    try:
        return status(control)
    except (OSError, ValueError):
        return None


def vhid_state(control: str, vhid: int) -> str | None:
    st = try_status(control)
    if st is None:
        return None
    for v in st["vhids"]:
        if v["vhid"] == vhid:
            return str(v["state"])
    return None
