"""The seed's NAT warning as a lab topology: outbound NAT to each node's own WAN address.

`carpsim lint --topology nat-interface` must say why before anyone runs it (the failover that
breaks every stream is tests/integration/test_unsinkable_nat.py)."""

from __future__ import annotations

import pytest

from carpsim.cli import main
from carpsim.config import fromlab, render
from carpsim.errors import ConfigError
from carpsim.lab import topology


def test_variant_renders_snat_to_each_nodes_own_address() -> None:
    t = topology.load("nat-interface")
    configs = fromlab.node_configs(t)
    assert "snat to 192.168.100.246 random" in render(configs["node1"])
    assert "snat to 192.168.100.248 random" in render(configs["node2"])
    ref = fromlab.node_configs(topology.load("reference"))
    assert "snat to 192.168.100.254 random" in render(ref["node2"])


def test_lint_says_why_before_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--topology", "nat-interface"]) == 1
    out = capsys.readouterr().out
    assert "nat.outbound.rule[0].target: error: translates to the interface address" in out
    assert "every stream breaks" in out
    assert main(["lint", "--topology", "reference"]) == 0


def test_nat_target_is_checked() -> None:
    text = topology.resolve("reference")[1].replace(
        'sync = "sync"', 'sync = "sync"\nnat_target = "x"'
    )
    with pytest.raises(ConfigError, match=r"firewall\.nat_target"):
        topology.loads(text, "test")
