"""SIGKILL a lease-store writer at random instants: no acknowledged lease is ever lost.

The writer prints N after append() returned (fsync done); after the kill, the file must parse
and every address must hold a lease at least as new as the last one acknowledged for it. The
writer compacts every few KiB, so kills land inside appends, fsyncs, renames and compactions.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from carpsim.dhcp.leasefile import parse

TOOL = str(Path(__file__).with_name("leasestore_writer.py"))
FIRST = IPv4Address("10.77.0.10")


def test_sigkill_at_random_instants_loses_no_acknowledged_lease(tmp_path: Path) -> None:
    path = tmp_path / "dhcpd.leases"
    rng = random.Random(1234)
    start = 0
    acked: dict[IPv4Address, int] = {}
    total = 0
    for _round in range(12):
        proc = subprocess.Popen(
            [sys.executable, TOOL, str(path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # running: at least one append has completed
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        lines = out.decode().split()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        numbers = [int(x) for x in lines if x.isdigit()]
        for n in numbers:
            acked[FIRST + n % 40] = n
        total += len(numbers)
        got = parse(path.read_text())  # never raises, whatever instant the kill hit
        for address, n in acked.items():
            lease = got.leases.get(address)
            assert lease is not None, f"acknowledged lease {n} for {address} lost"
            assert lease.starts >= n, f"{address}: file has {lease.starts}, acked {n}"
            assert lease.hostname == f"host-{lease.starts}"
        start = max(lease.starts for lease in got.leases.values()) + 1
    assert total > 100  # the writer really ran between kills
