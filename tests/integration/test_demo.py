"""`carpsim demo` end to end, as a user runs it: its narration says what the seed promises.

One run under a unique prefix (the demo's own ``--prefix``); whatever happens, no namespace of
that prefix is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from carpsim.lab.session import Lab
from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]


def test_the_demo_runs_end_to_end_and_leaves_nothing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    prefix = netns.unique_prefix("dmo")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "carpsim", "demo", "--prefix", prefix],
            check=False, capture_output=True, text=True, timeout=200,
        )  # fmt: skip
    finally:
        left = netns.list_namespaces(prefix)
        if left:
            Lab.create("reference", prefix=prefix).down()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert left == [], f"the demo left {left}"
    # 1-2: node1 is MASTER on every VHID, node2 BACKUP
    assert "node1 MASTER on every VHID" in out
    step2 = out.split("== 2.")[1].split("== 3.")[0]
    rows = re.findall(r"^\s+(\d+)\s+(\w+)\s+\S+/\d+\s+(\w+)\s+(\w+)$", step2, re.M)
    assert sorted((vhid, a, b) for vhid, _, a, b in rows) == [
        (v, "MASTER", "BACKUP") for v in ("1", "2", "3")
    ]
    # 3: through the outbound NAT, seen as the WAN VIP
    assert "the server sees the client as 192.168.100.254:" in out
    # 4: the config-sync step shows the rule on the backup, with the backup's skew
    assert re.search(r"after [\d.]+s the rule is on node2", out), out
    assert "node2's VIPs: advskew [100]" in out
    # 5: node2 takes over within its master-down, written from the timers
    assert "master_down = 3 x 1s + 100/256 s = 3.391 s" in out
    assert re.search(r"after [\d.]+s: node1: off, node2: MASTER\n", out), out
    assert "TCP after failover: the server sees 192.168.100.254:" in out
    # 6: node1 comes back and preempts
    assert re.search(r"after [\d.]+s: node1: MASTER, node2: BACKUP\n", out), out
    # 7: teardown
    assert re.search(r"removed \d+ namespaces; nothing left", out)
