"""The DHCP server service: one pure `DhcpServer` per interface, its sockets and lease file.

A node starts it from its `DhcpServerSettings` list and one `FailoverPolicy` per interface
(`Standalone` when none is given). Actions are executed in order; consecutive `LeaseChanged`
are written to the lease file with one fsync (group commit) before any later `Transmit`
leaves, so an ACK never announces a binding the disk could lose. Each change is also handed to
`on_lease_changed` (the node routes it to failover, which queues a BNDUPD).

Run alone (tests, experiments): ``python -m carpsim.runtime.dhcp_service --settings FILE.json
--lease-dir DIR`` with FILE a JSON list of settings objects (`settings_from_dict`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from carpsim.dhcp.actions import Action, LeaseChanged, Log, PingCheck, Transmit
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.leasefile import FailoverStateRecord, LeaseFile
from carpsim.dhcp.policy import FailoverPolicy, Standalone
from carpsim.dhcp.server import DhcpServer
from carpsim.dhcp.settings import DhcpServerSettings, StaticMapping
from carpsim.dhcp.status import status
from carpsim.net.dhcp_io import DhcpSocket, Pinger
from carpsim.runtime.driver import Driver, loop_factory
from carpsim.runtime.leasestore import LeaseStore

log = logging.getLogger(__name__)
LeaseHook = Callable[[str, LeaseChanged], None]


def wall_clock() -> int:
    return int(time.time())


def lease_path(lease_dir: Path, interface: str) -> Path:
    """Where `DhcpService` keeps an interface's lease file."""
    return lease_dir / f"dhcpd.{interface}.leases"


def saved_failover_state(lease_dir: Path, interface: str) -> dict[str, FailoverStateRecord]:
    """The failover state blocks of an interface's lease file, read before the service starts
    (the failover machine starts from them, and the policy it makes is the service's input)."""
    store = LeaseStore(lease_path(lease_dir, interface))
    try:
        return store.peek().failover
    finally:
        store.close()


class InterfaceService:
    def __init__(
        self,
        settings: DhcpServerSettings,
        policy: FailoverPolicy,
        lease_file: Path,
        loop: asyncio.AbstractEventLoop,
        on_lease_changed: LeaseHook | None = None,
    ) -> None:
        self.settings = settings
        self.store = LeaseStore(lease_file)
        loaded = self.store.load()
        self.loaded: LeaseFile = loaded
        """What the file held at start (leases, failover state blocks, skipped count)."""
        leases = [x for x in loaded.leases.values() if x.address in settings.subnet]
        self.server = DhcpServer(settings, policy, LeaseDB(leases))
        self.driver: Driver[Action] = Driver(self.server, self._execute, loop)
        self._hook = on_lease_changed
        self.sock = DhcpSocket(settings.interface, settings.interface_address, loop, self._datagram)
        self.pinger = (
            Pinger(settings.interface, loop, self._pinged) if settings.ping_check else None
        )
        self.sent: dict[str, int] = {}
        self.driver.feed(self.server.clock, wall_clock())

    def _datagram(self, data: bytes, to_broadcast: bool) -> None:
        self.driver.feed(self.server.receive, wall_clock(), data, to_broadcast)

    def _pinged(self, address: IPv4Address, answered: bool) -> None:
        self.driver.feed(self.server.ping_result, wall_clock(), address, answered)

    def _execute(self, actions: list[Action]) -> None:
        batch: list[LeaseChanged] = []
        for action in actions:
            if isinstance(action, LeaseChanged):
                batch.append(action)
                continue
            self._commit(batch)
            batch = []
            if isinstance(action, Transmit):
                self.sock.send(action)
                mtype = action.message.message_type
                name = mtype.name if mtype is not None else "BOOTP"
                self.sent[name] = self.sent.get(name, 0) + 1
            elif isinstance(action, PingCheck):
                if self.pinger is not None:
                    self.pinger.ping(action.address)
            elif isinstance(action, Log):
                log.info("%s", action.text)
        self._commit(batch)

    def _commit(self, batch: list[LeaseChanged]) -> None:
        if not batch:
            return
        self.store.append([c.lease for c in batch])
        if self._hook is not None:
            for change in batch:
                self._hook(self.settings.interface, change)

    def update_lease(self, lease: Lease) -> None:
        """A binding from failover: persisted here, then given to the server."""
        self.store.append([lease])
        self.server.update_lease(lease)
        self.driver.feed(self.server.clock, wall_clock())

    def persist_failover_state(self, record: FailoverStateRecord) -> None:
        """Write a failover state block (fsynced) before the state change takes effect."""
        self.store.append([], [record])

    def status(self) -> dict[str, Any]:
        out = status(self.settings, self.server.db, self.server.drops)
        out["sent"] = dict(self.sent)
        return out

    def close(self) -> None:
        self.driver.stop()
        self.sock.close()
        if self.pinger is not None:
            self.pinger.close()
        self.store.close()


class DhcpService:
    """Every configured interface's server; `status()` lists them for `carpsim status`."""

    def __init__(
        self,
        settings: Sequence[DhcpServerSettings],
        lease_dir: Path,
        loop: asyncio.AbstractEventLoop,
        policies: Mapping[str, FailoverPolicy] | None = None,
        on_lease_changed: LeaseHook | None = None,
    ) -> None:
        lease_dir.mkdir(parents=True, exist_ok=True)
        self.interfaces: dict[str, InterfaceService] = {}
        try:
            for s in settings:
                policy = (policies or {}).get(s.interface) or Standalone()
                path = lease_path(lease_dir, s.interface)
                self.interfaces[s.interface] = InterfaceService(
                    s, policy, path, loop, on_lease_changed
                )
        except BaseException:
            self.close()
            raise

    def status(self) -> list[dict[str, Any]]:
        return [svc.status() for svc in self.interfaces.values()]

    def update_lease(self, interface: str, lease: Lease) -> None:
        """A binding the failover peer sent (BNDUPD) for `interface`: persist, then apply."""
        self.interfaces[interface].update_lease(lease)

    def lease_counts(self) -> dict[tuple[str, str], int]:
        """(interface, binding state) -> leases, for the metrics gauge."""
        out: dict[tuple[str, str], int] = {}
        for name, svc in self.interfaces.items():
            for state in BindingState:
                out[(name, state.name.lower())] = len(svc.server.db.in_state(state))
        return out

    def close(self) -> None:
        for svc in self.interfaces.values():
            svc.close()
        self.interfaces.clear()


def settings_from_dict(d: Mapping[str, Any]) -> DhcpServerSettings:
    """Settings from JSON-friendly values (addresses as strings, MACs as aa:bb:...)."""

    def ip(x: str | None) -> IPv4Address | None:
        return None if x in (None, "") else IPv4Address(str(x))

    maps = tuple(
        StaticMapping(
            mac=bytes.fromhex(str(m["mac"]).replace(":", "")),
            ipaddr=IPv4Address(m["ipaddr"]),
            hostname=m.get("hostname"),
        )
        for m in d.get("staticmaps", ())
    )
    return DhcpServerSettings(
        interface=str(d["interface"]),
        subnet=IPv4Network(d["subnet"]),
        interface_address=IPv4Address(d["interface_address"]),
        range_start=IPv4Address(d["range_start"]),
        range_end=IPv4Address(d["range_end"]),
        gateway=ip(d.get("gateway")),
        dns_servers=tuple(IPv4Address(x) for x in d.get("dns_servers", ())),
        domain=str(d.get("domain", "")),
        default_lease_time=int(d.get("default_lease_time", 7200)),
        max_lease_time=int(d.get("max_lease_time", 86400)),
        staticmaps=maps,
        ping_check=bool(d.get("ping_check", True)),
    )


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    raw = json.loads(Path(args.settings).read_text())
    service = DhcpService([settings_from_dict(d) for d in raw], Path(args.lease_dir), loop)
    try:
        await serve_until_signalled(service.status, Path(args.status) if args.status else None)
    finally:
        service.close()


async def serve_until_signalled(status: Callable[[], object], status_path: Path | None) -> None:
    """Run until SIGTERM/SIGINT, rewriting `status_path` (atomically) twice a second: the
    standalone entry points that tests and benchmarks start as processes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if status_path is not None:
            tmp = status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status()))
            tmp.replace(status_path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m carpsim.runtime.dhcp_service")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--lease-dir", required=True)
    parser.add_argument("--status", help="rewrite this JSON file with status() twice a second")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
