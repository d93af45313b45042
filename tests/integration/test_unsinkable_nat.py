"""The seed's NAT warning made visible: with outbound NAT to the interface address (topology
``nat-interface``) state sync still replicates every connection, yet every stream breaks at
failover, because the translated source was node1's own address, which node2 does not hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from carpsim.lab.session import Lab
from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]


@pytest.fixture
def prefix() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    p = netns.unique_prefix("cfn")
    try:
        yield p
    finally:
        Lab.create("nat-interface", p).down()


def test_nat_to_the_interface_address_breaks_every_stream_at_failover(
    prefix: str, tmp_path: Path
) -> None:
    js = tmp_path / "run.json"
    argv = [sys.executable, "-m", "carpsim", "lab", "--prefix", prefix, "unsinkable",
            "--topology", "nat-interface", "--settle", "6", "--json", str(js)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=140, check=False)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(js.read_text())
    assert result["statesync"]["active"] is True, "the states were replicated ..."
    tcp = result["failover"]["tcp"]
    assert tcp["streams"] == 4
    assert tcp["survived"] == 0, "... and still no stream survives"
    assert result["failover"]["verdict"] == "failure"
    # the server saw the nodes' own addresses, never the WAN VIP
    assert "192.168.100.254" not in result["server_peers"]
    assert set(result["server_peers"]) <= {"192.168.100.246", "192.168.100.248"}
    assert "UNSINKABLE: FAILURE" in proc.stdout
