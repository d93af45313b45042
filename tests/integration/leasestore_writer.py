"""Child process for the lease-store crash test: append leases forever, print each ACK.

    python leasestore_writer.py FILE START

Each line ``N`` on stdout is printed only after `LeaseStore.append` returned for lease N
(address FIRST + N % 40, starts = N), i.e. after it was fsynced: an acknowledged lease.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path

from carpsim.dhcp.lease import BindingState, Lease
from carpsim.runtime.leasestore import LeaseStore

FIRST = IPv4Address("10.77.0.10")


def main() -> None:
    store = LeaseStore(Path(sys.argv[1]), compact_bytes=4096)
    store.load()
    n = int(sys.argv[2])
    while True:
        lease = Lease(
            FIRST + n % 40,
            BindingState.ACTIVE,
            starts=n,
            ends=n + 600,
            cltt=n,
            hw_address=n.to_bytes(6, "big"),
            hostname=f"host-{n}",
        )
        batch = [lease] if n % 3 else [lease, Lease(FIRST + 41, BindingState.FREE, starts=n)]
        store.append(batch)
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()
        n += 1


if __name__ == "__main__":
    main()
