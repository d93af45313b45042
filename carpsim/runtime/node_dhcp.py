"""The node's DHCP servers and their failover links (pfSense's dhcpd with a failover peer).

`NodeDhcp` runs one `InterfaceService` per ``dhcpd.<if>`` section of the node's config and,
where the section names a ``failover_peerip``, one `FailoverMachine` on TCP 519/520 bound to
the interface address (never the VIP: the peer must reach the node that holds the database,
whichever of them is CARP master). The wiring is the one docs/dhcp-failover.md describes:

- the machine is the server's `FailoverPolicy`, and both share the server's `LeaseDB`;
- the server's in-pool `LeaseChanged` (already fsynced) -> `machine.lease_changed` (a BNDUPD);
- the machine's `PersistLease` -> `InterfaceService.update_lease` and `PersistFailoverState`
  -> `persist_failover_state`, both fsynced before the BNDACK that follows them leaves.

Lease files live in the node's state directory (`state_dir`): next to the control socket, as
``<socket without .sock>.state/dhcpd.<if>.leases``; the lab keeps it across a power cycle, as
a firewall keeps its disk.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from carpsim.config import loads
from carpsim.config.derive import dhcp_servers
from carpsim.dhcp.actions import LeaseChanged
from carpsim.dhcp.failover.events import StateRecord
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.failover.persist import from_lease_file, to_lease_file
from carpsim.dhcp.lease import LeaseDB
from carpsim.dhcp.policy import FailoverPolicy
from carpsim.dhcp.settings import DhcpServerSettings, FailoverSettings
from carpsim.errors import ConfigError
from carpsim.net.failover_io import FailoverLink
from carpsim.runtime import dhcp_failover_metrics, dhcp_metrics
from carpsim.runtime.dhcp_service import (
    DhcpService,
    InterfaceService,
    saved_failover_state,
    serve_until_signalled,
)
from carpsim.runtime.driver import loop_factory

log = logging.getLogger("carpsim.node.dhcp")


def settings_from_file(path: Path) -> tuple[DhcpServerSettings, ...]:
    """The DHCP servers a node config file asks for (carpsim.config; role chosen as pfSense)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    return dhcp_servers(loads(text))


def state_dir_for(control: str) -> Path:
    """Where a node keeps its lease files: beside its control socket."""
    sock = Path(control)
    return sock.with_name(sock.stem + ".state")


def _pool(s: DhcpServerSettings) -> list[IPv4Address]:
    return [IPv4Address(a) for a in range(int(s.range_start), int(s.range_end) + 1)]


def _failover(s: DhcpServerSettings) -> FailoverSettings:
    assert s.failover is not None
    fo = s.failover
    return replace(
        fo,
        address=fo.address or s.interface_address,
        name=fo.name or f"dhcp_{s.interface}",
    )


def _state_writer(svc: InterfaceService, name: str) -> Callable[[StateRecord], None]:
    def write(record: StateRecord) -> None:
        svc.persist_failover_state(to_lease_file(name, record))

    return write


class NodeDhcp:
    """Every DHCP server of the node, each with its failover link when configured."""

    def __init__(self, settings: Sequence[DhcpServerSettings], state_dir: Path) -> None:
        self.settings = tuple(settings)
        self.state_dir = state_dir
        self.service: DhcpService | None = None
        self.machines: dict[str, FailoverMachine] = {}
        """By interface; the failover relationship of each server that has one."""
        self.links: dict[str, FailoverLink] = {}
        self._registry: CollectorRegistry | None = None
        self._collectors: list[Collector] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart: asyncio.Task[None] | None = None

    def replace_settings(self, settings: Sequence[DhcpServerSettings]) -> None:
        """A config edit or sync changed the dhcpd sections: restart every server (their lease
        files carry the bindings and the failover state over; the peers reconnect)."""
        assert self._loop is not None
        new = tuple(settings)

        async def restart() -> None:
            self.stop()
            self.settings = new
            await self.start(self._loop or asyncio.get_running_loop())
            if self._registry is not None:
                self.register_metrics(self._registry)
            log.info("dhcp: restarted on %s", ", ".join(s.interface for s in new) or "nothing")

        self._restart = self._loop.create_task(restart())

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.state_dir.mkdir(parents=True, exist_ok=True)
        failover: dict[str, FailoverSettings] = {}
        policies: dict[str, FailoverPolicy] = {}
        for s in self.settings:
            if s.failover is not None:
                failover[s.interface] = _failover(s)
                self.machines[s.interface] = FailoverMachine(
                    failover[s.interface], LeaseDB(), _pool(s)
                )
                policies[s.interface] = self.machines[s.interface]
        # Before the services open the files: they rewrite them compacted at load.
        saved = {
            name: saved_failover_state(self.state_dir, name).get(fo.name)
            for name, fo in failover.items()
        }
        self.service = DhcpService(
            self.settings, self.state_dir, loop, policies, on_lease_changed=self._changed
        )
        for name, machine in self.machines.items():
            svc = self.service.interfaces[name]
            machine.share_db(svc.server.db)
            fo = failover[name]
            assert fo.address is not None
            link = FailoverLink(
                machine,
                fo.address,
                loop,
                persist_lease=svc.update_lease,
                persist_state=_state_writer(svc, fo.name),
            )
            self.links[name] = link
            record = saved[name]
            await link.start(from_lease_file(record, int(time.time())) if record else None)
            log.info(
                "dhcp %s: failover %s as %s, %s:%d <-> %s:%d",
                name, fo.name, fo.role.value, fo.address, fo.my_port, fo.peer, fo.their_port,
            )  # fmt: skip
        for s in self.settings:
            if s.gateway_is_physical:
                log.warning(
                    "dhcp %s: gateway left empty, clients get %s (this node) as router: "
                    "they lose their gateway when this node goes down",
                    s.interface,
                    s.router,
                )

    def _changed(self, interface: str, change: LeaseChanged) -> None:
        link = self.links.get(interface)
        if link is not None and change.in_pool:
            link.driver.feed(link.machine.lease_changed, int(time.time()), change.lease)

    def stop(self) -> None:
        for link in self.links.values():
            link.stop()
        self.links.clear()
        self.machines.clear()
        if self.service is not None:
            self.service.close()
            self.service = None

    def status(self) -> list[dict[str, Any]]:
        """Per interface, the shape the web page and `carpsim status` render."""
        if self.service is None:
            return []
        out = []
        for name, svc in self.service.interfaces.items():
            entry = svc.status()
            link = self.links.get(name)
            if link is not None:
                fo = link.machine.status()
                fo["edge_drops"] = dict(link.drops)
                entry["failover"] = fo
            else:
                entry["failover"] = None
            out.append(entry)
        return out

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Collectors over the running services (replaced after a restart)."""
        for old in self._collectors:
            registry.unregister(old)
        self._registry = registry
        self._collectors = []
        if self.service is not None:
            self._collectors.append(dhcp_metrics.register(self.service, registry))
        self._collectors.append(dhcp_failover_metrics.register(self._by_relationship, registry))

    def _by_relationship(self) -> Mapping[str, FailoverMachine]:
        return {m.settings.name: m for m in self.machines.values()}


def _tuned(s: DhcpServerSettings, split: int | None, mclt: int | None) -> DhcpServerSettings:
    if s.failover is None:
        return s
    fo = s.failover
    fo = replace(fo, split=fo.split if split is None else split, mclt=mclt or fo.mclt)
    return replace(s, failover=fo)


async def _serve(args: argparse.Namespace) -> None:
    settings = settings_from_file(Path(args.config))
    if args.no_ping_check:
        settings = tuple(replace(s, ping_check=False) for s in settings)
    if args.split is not None or args.mclt is not None:
        settings = tuple(_tuned(s, args.split, args.mclt) for s in settings)
    dhcp = NodeDhcp(settings, Path(args.state_dir))
    await dhcp.start(asyncio.get_running_loop())
    try:
        await serve_until_signalled(dhcp.status, Path(args.status) if args.status else None)
    finally:
        dhcp.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """The node's DHCP servers and failover links alone, without CARP (benchmarks, tests)."""
    parser = argparse.ArgumentParser(prog="python -m carpsim.runtime.node_dhcp")
    parser.add_argument("--config", required=True, help="a node config file with dhcpd sections")
    parser.add_argument("--state-dir", required=True, help="where the lease files live")
    parser.add_argument("--status", help="rewrite this JSON file with status() twice a second")
    parser.add_argument("--no-ping-check", action="store_true", help="offer without pinging")
    parser.add_argument("--split", type=int, help="failover split (pfSense: 128)")
    parser.add_argument("--mclt", type=int, help="failover MCLT in seconds (pfSense: 600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
