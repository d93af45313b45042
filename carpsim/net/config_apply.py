"""The kernel half of an `ApplyPlan`: the nftables ruleset, conntrack's loose pickup, routes.

CARP, the DHCP server and state sync are the node's machines; the node runs this applier and
then its own steps (`ConfigStore.replace` calls the reverse plan if any step raises, so a
failed load leaves the old ruleset, which `nft -f` never half-replaces anyway).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence

from carpsim.config import render
from carpsim.configsync.apply import ApplyPlan
from carpsim.errors import EnvironmentProblem
from carpsim.net import netns as netns_mod
from carpsim.net.conntrack import set_sysctl

Devices = Callable[[], Mapping[str, Sequence[str]]]


class KernelApplier:
    def __init__(self, namespace: str | None = None, devices: Devices | None = None) -> None:
        """`namespace`: run there (tests, tools); None = the caller's own (the daemon).
        `devices`: the CARP macvlan names per logical interface, read at apply time."""
        self.namespace = namespace
        self.devices = devices

    def _argv(self, argv: list[str]) -> list[str]:
        return netns_mod.exec_argv(self.namespace, argv) if self.namespace else argv

    def _run(self, argv: list[str], text: str | None = None, check: bool = True) -> None:
        try:
            proc = subprocess.run(
                self._argv(argv), input=text, capture_output=True, text=True, check=False,
                timeout=30,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"{argv[0]} not found") from exc
        if check and proc.returncode != 0:
            raise EnvironmentProblem(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")

    def run_nft(self, text: str) -> None:
        """Load one ruleset document (atomic: nft -f replaces all of it or nothing)."""
        self._run(["nft", "-f", "-"], text)

    def run_ip(self, args: list[str]) -> None:
        self._run(["ip", *args])

    def __call__(self, plan: ApplyPlan) -> None:
        if plan.nftables is not None:
            text = plan.nftables if self.devices is None else render(plan.new, self.devices())
            self.run_nft(text)
        if plan.tcp_loose is not None:
            set_sysctl("nf_conntrack_tcp_loose", int(plan.tcp_loose), self.namespace)
        for r in plan.routes_remove:
            # already gone is fine: the goal is its absence
            self._run(["ip", "route", "del", str(r.network), "via", str(r.gateway)], check=False)
        for r in plan.routes_add:
            self._run(["ip", "route", "replace", str(r.network), "via", str(r.gateway)])
