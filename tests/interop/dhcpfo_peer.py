"""A carpsim failover peer for the interop tests: one `FailoverLink` in the current namespace.

Prints one JSON line with `FailoverMachine.status()` every 0.2 s on stdout, until killed. The
first time it is NORMAL it binds one address from its own pool to client 02:00:00:00:09:09
(what the DHCP server would do) so the peer receives a BNDUPD ACTIVE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.lease import BindingState, LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings
from carpsim.net.failover_io import FailoverLink

CLIENT_MAC = bytes.fromhex("020000000909")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["primary", "secondary"], required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--first", required=True)
    ap.add_argument("--last", required=True)
    ap.add_argument("--mclt", type=int, default=30)
    ap.add_argument("--auto-partner-down", type=int, default=0)
    args = ap.parse_args()
    settings = FailoverSettings(
        peer=IPv4Address(args.peer),
        role=FailoverRole(args.role),
        address=IPv4Address(args.local),
        name="dhcp_lan",
        mclt=args.mclt,
        auto_partner_down=args.auto_partner_down,
    )
    first, last = int(IPv4Address(args.first)), int(IPv4Address(args.last))
    pool = [IPv4Address(a) for a in range(first, last + 1)]
    machine = FailoverMachine(settings, LeaseDB(), pool)
    loop = asyncio.get_running_loop()
    link = FailoverLink(machine, IPv4Address(args.local), loop)
    await link.start()
    injected = False
    while True:
        if not injected and machine.state.word == "normal" and machine.answers():
            # One client binding from our own pool, as the DHCP server would make it.
            injected = True
            wall = int(time.time())
            lease = next(x for x in sorted(machine.db, key=lambda x: x.address)
                         if machine.may_allocate(x, wall))  # fmt: skip
            granted, tstp = machine.grant(lease, 600, wall)
            bound = replace(lease, state=BindingState.ACTIVE, starts=wall, ends=wall + granted,
                            tstp=tstp, cltt=wall, hw_address=CLIENT_MAC)  # fmt: skip
            machine.db.put(bound)
            link.driver.feed(machine.lease_changed, wall, bound)
            print(json.dumps({"injected": str(bound.address), "granted": granted}), flush=True)
        status = machine.status()
        status["edge_drops"] = dict(link.drops)
        print(json.dumps(status), flush=True)
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
