"""One lab as an object: up, down, kill, start, exec — what `carpsim lab` and the demo call.

lab = Lab.create("reference", prefix="cs7f3a-")   # or Lab.attach(prefix) for a running one
# Lab.create(..., statesync=False): node configs get [statesync] enabled = false
lab.up(progress=print)          # builds, starts daemons, waits for node1 MASTER everywhere
lab.kill("node1"); lab.start("node1")
lab.down()                      # idempotent; finds everything by prefix
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from carpsim.errors import CarpsimError, ConfigError
from carpsim.lab import builder, nodes, state, topology
from carpsim.lab.state import LabPaths
from carpsim.lab.topology import Host, Topology
from carpsim.net import netns

Progress = Callable[[str], None]
READY_TIMEOUT = 10.0


class LabAlreadyUpError(CarpsimError):
    """`up` on a prefix whose lab is already running."""


class LabNotReadyError(CarpsimError):
    """The daemons did not reach the expected CARP states in time."""


def _quiet(_: str) -> None:
    return None


def resolve_prefix(explicit: str | None, lab_name: str | None = None) -> str:
    """--prefix, then $CARPSIM_LAB_PREFIX, then the only running lab, then the default."""
    if explicit:
        return state.check_prefix(explicit)
    env = os.environ.get("CARPSIM_LAB_PREFIX")
    if env:
        return state.check_prefix(env)
    if lab_name is None:
        running = state.running_prefixes()
        if len(running) == 1:
            return running[0]
        if len(running) > 1:
            raise ConfigError("prefix", f"several labs run ({', '.join(running)}): give --prefix")
    return state.default_prefix(lab_name or "reference")


@dataclass
class Lab:
    topology: Topology
    paths: LabPaths
    source: str
    statesync: bool = True
    """Replicate connection state between the nodes (False: the no-sync control run)."""
    dhcp: str = "vip"
    """The nodes' DHCP gateway: ``vip``, ``empty`` (each node's own address) or ``off``."""

    @classmethod
    def create(
        cls,
        spec: str | None = None,
        prefix: str | None = None,
        *,
        statesync: bool = True,
        dhcp: str = "vip",
    ) -> Lab:
        source, text = topology.resolve(spec)
        topo = topology.loads(text, source)
        return cls(topo, LabPaths(resolve_prefix(prefix, topo.name)), source, statesync, dhcp)

    @classmethod
    def attach(cls, prefix: str | None = None) -> Lab:
        """The lab running under a prefix (its topology copy from the run dir)."""
        paths = LabPaths(resolve_prefix(prefix))
        data = state.read_state(paths)
        if data is None or not paths.topology_file.is_file():
            raise ConfigError(
                "prefix", f"no lab is running under {paths.prefix!r} (start one: carpsim lab up)"
            )
        topo = topology.loads(paths.topology_file.read_text(), str(paths.topology_file))
        return cls(
            topo,
            paths,
            str(data.get("source", "")),
            bool(data.get("statesync", True)),
            str(data.get("dhcp", "vip")),
        )

    # --- lifecycle ----------------------------------------------------------------------

    def is_up(self) -> bool:
        return state.read_state(self.paths) is not None or bool(
            netns.list_namespaces(self.paths.prefix)
        )

    def up(self, progress: Progress = _quiet, timeout: float = READY_TIMEOUT) -> float:
        """Build everything and wait until the preferred node is MASTER on every VHID.

        Returns the seconds from the first daemon start to convergence. On any failure
        everything built so far is torn down before the exception propagates.
        """
        builder.check_environment()
        if self.is_up():
            raise LabAlreadyUpError(
                f"lab {self.topology.name!r} is already up under prefix {self.paths.prefix!r}"
                " (carpsim lab status; carpsim lab down)"
            )
        t0 = time.monotonic()
        owner = os.getpid()
        try:
            self.paths.run_dir.mkdir(parents=True, exist_ok=True)
            self.paths.topology_file.write_text(topology.resolve(self.source)[1])
            st = state.new_state(self.paths, self.topology.name, self.source)
            st["statesync"] = self.statesync
            st["dhcp"] = self.dhcp
            state.write_state(self.paths, st)
            progress(f"building lab {self.topology.name!r} (prefix {self.paths.prefix})")
            builder.build(self.topology, self.paths, progress)
            started = time.monotonic()
            for node in self.topology.nodes:
                nodes.write_config(
                    self.topology, self.paths, node, statesync=self.statesync, dhcp=self.dhcp
                )
                pid = nodes.start_daemon(self.paths, node)
                progress(f"{node.name:<8} carpsim node started (pid {pid}, advskew {node.advskew})")
            master = nodes.preferred_master(self.topology)
            progress(f"waiting for {master} to become MASTER on every VHID ...")
            want = nodes.expected_states(self.topology, master)
            seen = nodes.wait_for(self.paths, want, timeout)
            if seen != want:
                raise LabNotReadyError(
                    f"CARP did not converge within {timeout:.0f}s: {_describe(seen)}"
                    f" (logs: {self.paths.run_dir}/*.log)"
                )
            elapsed = time.monotonic() - started
            st["ready"] = True
            state.write_state(self.paths, st)
            progress(f"ready in {time.monotonic() - t0:.1f}s: {master} MASTER on every VHID")
            return elapsed
        except BaseException:
            # Only the process that built the lab tears it down: a forked helper hit by the
            # same Ctrl-C (pyroute2 forks to create namespaces) must not race it.
            if os.getpid() == owner:
                self.down()
            raise

    def down(self) -> list[str]:
        """Remove every namespace, process and run-dir file of this prefix (idempotent)."""
        gone = builder.teardown(self.paths)
        state.remove_run_dir(self.paths)
        return gone

    # --- power switch -------------------------------------------------------------------

    def node(self, name: str) -> Host:
        try:
            host = self.topology.host(name)
        except KeyError:
            known = self.node_names()
            raise ConfigError("node", f"unknown node {name!r} (nodes: {known})") from None
        if not host.is_node:
            raise ConfigError("node", f"{name!r} is a {host.role}, not a CARP node")
        return host

    def node_names(self) -> str:
        return ", ".join(n.name for n in self.topology.nodes)

    def kill(self, name: str) -> None:
        nodes.force_off(self.topology, self.paths, self.node(name))

    def start(self, name: str, timeout: float = 5.0) -> int:
        """Power a node back on; returns the daemon pid once its control socket answers."""
        node = self.node(name)
        pid = nodes.power_on(self.topology, self.paths, node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if nodes.query_status(self.paths, name, timeout=0.5) is not None:
                return pid
            if nodes.daemon_pid(self.paths, name) is None:
                break
            time.sleep(0.05)
        raise LabNotReadyError(
            f"{name}: daemon did not answer on {self.paths.control(name)}"
            f" (log: {self.paths.log(name)})"
        )

    def wait_master(self, master: str, timeout: float, down: Sequence[str] = ()) -> bool:
        """Wait until `master` is MASTER on every VHID and the other live nodes BACKUP."""
        want = {
            k: v for k, v in nodes.expected_states(self.topology, master).items() if k not in down
        }
        return nodes.wait_for(self.paths, want, timeout) == want

    # --- inspection ---------------------------------------------------------------------

    def namespace_of(self, host: str) -> str:
        if host == state.SWITCH:
            return self.paths.switch
        try:
            self.topology.host(host)
        except KeyError:
            names = ", ".join(h.name for h in self.topology.hosts)
            raise ConfigError("host", f"unknown host {host!r} (known: {names}, sw)") from None
        return self.paths.namespace(host)

    def run(
        self, host: str, argv: Sequence[str], timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return netns.run(self.namespace_of(host), argv, check=check, timeout=timeout)

    def states(self) -> dict[str, dict[nodes.VhidKey, str]]:
        return {
            n.name: nodes.vhid_states(nodes.query_status(self.paths, n.name))
            for n in self.topology.nodes
        }

    def state_data(self) -> dict[str, Any]:
        return state.read_state(self.paths) or {}


def _describe(seen: dict[str, dict[nodes.VhidKey, str]]) -> str:
    parts = []
    for node, states in seen.items():
        if not states:
            parts.append(f"{node} not answering")
        else:
            parts.append(f"{node} " + " ".join(f"{i}/{v}={s}" for (i, v), s in states.items()))
    return "; ".join(parts)
