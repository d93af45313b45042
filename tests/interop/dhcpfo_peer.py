"""A carpsim failover peer for the interop tests: one `FailoverLink` in the current namespace.

Prints one JSON line with `FailoverMachine.status()` every 0.2 s on stdout, until killed. The
first time it is NORMAL it binds one address from its own pool to client 02:00:00:00:09:09
(what the DHCP server would do) so the peer receives a BNDUPD ACTIVE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carpsim.dhcp.actions import LeaseChanged
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.failover.persist import from_lease_file, to_lease_file
from carpsim.dhcp.lease import BindingState, LeaseDB
from carpsim.dhcp.settings import DhcpServerSettings, FailoverRole, FailoverSettings
from carpsim.net.failover_io import FailoverLink
from carpsim.runtime.dhcp_service import InterfaceService, lease_path, saved_failover_state

CLIENT_MAC = bytes.fromhex("020000000909")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["primary", "secondary"], required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--first", required=True)
    ap.add_argument("--last", required=True)
    ap.add_argument("--mclt", type=int, default=30)
    ap.add_argument("--auto-partner-down", type=int, default=0)
    ap.add_argument("--serve", help="also run carpsim's DHCP server on this interface")
    ap.add_argument("--lease-dir", type=Path)
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
    if args.serve:
        await serve(args, settings, machine, loop)
        return
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


async def serve(
    args: argparse.Namespace,
    settings: FailoverSettings,
    machine: FailoverMachine,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The node's wiring: DHCP server + failover on one LeaseDB and one lease file."""
    server_settings = DhcpServerSettings(
        interface=args.serve,
        subnet=IPv4Network("192.168.110.0/24"),
        interface_address=IPv4Address(args.local),
        range_start=IPv4Address(args.first),
        range_end=IPv4Address(args.last),
        gateway=IPv4Address("192.168.110.254"),
        dns_servers=(IPv4Address("192.168.110.254"),),
        default_lease_time=600,
        max_lease_time=7200,
        failover=settings,
        ping_check=False,
    )
    link: FailoverLink | None = None

    def changed(_interface: str, change: LeaseChanged) -> None:
        if link is not None and change.in_pool:
            link.driver.feed(machine.lease_changed, int(time.time()), change.lease)

    args.lease_dir.mkdir(parents=True, exist_ok=True)
    saved = saved_failover_state(args.lease_dir, args.serve).get(settings.name)
    service = InterfaceService(
        server_settings, machine, lease_path(args.lease_dir, args.serve), loop, changed
    )
    machine.share_db(service.server.db)
    link = FailoverLink(
        machine,
        IPv4Address(args.local),
        loop,
        persist_lease=service.update_lease,
        persist_state=lambda rec: service.persist_failover_state(to_lease_file(settings.name, rec)),
    )
    await link.start(from_lease_file(saved, int(time.time())) if saved is not None else None)
    while True:
        st = machine.status()
        st["edge_drops"] = dict(link.drops)
        st["leases"] = [
            {"ip": str(x.address), "mac": x.hw_address.hex(), "state": x.state.name}
            for x in service.server.db.in_state(BindingState.ACTIVE)
        ]
        print(json.dumps(st), flush=True)
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
