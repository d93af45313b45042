"""A node on real interfaces: the pure `NodeMachines` plus the kernel edge that obeys it.

The protocol decisions, including how state sync's readiness demotes CARP, are made by
`carpsim.node.machines.NodeMachines`; this module only feeds it inputs and executes its
actions. Links (netlink) and the CARP sockets are constructor arguments, so a test can hand
in its own.

`Node.prepare()` validates everything against the host *without changing it* (interfaces
exist, scripts are executable). `start()` then sets sysctls, reclaims what a SIGKILLed
predecessor left behind (macvlans by name/MAC, VIPs on the parent), creates one DOWN macvlan
per VHID, opens one raw socket pair per parent interface and starts the driver. `stop()` sends
the bow-out advert, removes VIPs and macvlans and closes everything.

Action execution (the only place protocol decisions turn into kernel calls), in list order:

- Transmit   -> Ethernet frame from the virtual MAC (real MAC with real_mac) to 01:00:5e:00:00:12,
                or an IP_HDRINCL send for a unicast peer
- AddVip     -> VIPs onto the macvlan, macvlan UP (or VIPs onto the parent with real_mac)
- DelVip     -> VIPs removed, macvlan DOWN: a BACKUP never emits the virtual MAC
- SendGarp   -> one broadcast ARP request per IPv4 VIP from the same MAC as the adverts
- StateChanged / CountDrop -> metrics, JSON event log, hooks, logs (drops once per reason)
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from carpsim.config import derive
from carpsim.config.model import Config
from carpsim.errors import ConfigError
from carpsim.net import sysctl
from carpsim.net.carp_io import CarpSocket, PacketHandler
from carpsim.net.links import LinkInfo, Links, LinkWatcher
from carpsim.node.machines import NodeMachines
from carpsim.protocol.constants import CarpState, virtual_mac
from carpsim.protocol.events import (
    Action,
    AddVip,
    AdvertAccepted,
    CountDrop,
    DelVip,
    SendGarp,
    StateChanged,
    Transmit,
)
from carpsim.protocol.group import CarpGroup
from carpsim.protocol.machine import CarpMachine
from carpsim.runtime import hrtimer
from carpsim.runtime.control import ControlServer, JsonDict, is_listening
from carpsim.runtime.driver import Driver
from carpsim.runtime.events_log import EventsLog
from carpsim.runtime.hooks import HookRunner
from carpsim.runtime.metrics import STATE_VALUE, CarpMetrics
from carpsim.runtime.node_config import ConfigRuntime
from carpsim.runtime.node_dhcp import NodeDhcp, settings_from_file, state_dir_for
from carpsim.runtime.nodeconfig import NodeConfig, VhidSpec
from carpsim.runtime.statesync_service import StateSyncService
from carpsim.wire.garp import garp_frame, mac_bytes

log = logging.getLogger("carpsim.node")


@dataclass
class VhidRuntime:
    spec: VhidSpec
    parent: LinkInfo
    macvlan: LinkInfo | None = None
    src_mac: bytes = b""
    drops: Counter[str] = field(default_factory=Counter)
    started: bool = False

    @property
    def vhid(self) -> int:
        return self.spec.carp.vhid

    @property
    def vip_index(self) -> int:
        """Where the VIPs live: the macvlan, or the parent itself with real_mac."""
        return self.macvlan.index if self.macvlan is not None else self.parent.index


class CarpPort(Protocol):
    """What the node needs from one parent's CARP sockets (`net.carp_io.CarpSocket`)."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None: ...

    def send_advert(self, packet: bytes, src_mac: bytes) -> None: ...

    def send_frame(self, frame: bytes) -> None: ...

    def close(self) -> None: ...


SocketFactory = Callable[[str, int, PacketHandler], CarpPort]
"""(parent name, parent ifindex, on_packet(ifindex, data)) -> the parent's CARP sockets."""


class Node:
    """One carpsim node: CARP VHIDs, optional state sync, the control socket and metrics."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        rng: random.Random | None = None,
        links: Links | None = None,
        socket_factory: SocketFactory = CarpSocket,
        document: Config | None = None,
        document_path: Path | None = None,
    ) -> None:
        """`document`: the sectioned config this node runs from (its rules, NAT, sync, DHCP
        servers), with the file edits and received syncs are written to
        (runtime/node_config.py). `document_path` alone: the DHCP servers are read from it."""
        self.config = config
        self._document_path = document_path
        self.dhcp: NodeDhcp | None = None
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self.links = links if links is not None else Links()
        self._socket_factory = socket_factory
        self.metrics = CarpMetrics()
        self.hooks = HookRunner()
        self.vhids: dict[int, VhidRuntime] = {}
        self.parents: dict[int, LinkInfo] = {}
        self._parent_up: dict[int, bool] = {}
        self._sockets: dict[int, CarpPort] = {}
        self._watcher: LinkWatcher | None = None
        self._events: EventsLog | None = None
        self._driver: Driver[Action] | None = None
        self.control: ControlServer | None = None
        self._web: Any = None  # the [web] pages' aiohttp runner (carpsim/web/node_app.py)
        self.group = CarpGroup(CarpMachine(spec.carp, self.rng) for spec in config.vhids)
        self.machines = NodeMachines(
            self.group,
            with_sync=config.sync is not None,
            sync_demote=config.sync.demote if config.sync is not None else 0,
        )
        self.drops: Counter[str] = Counter()
        self.rx_packets = 0
        self.tx_packets = 0
        self.tx_errors: Counter[str] = Counter()
        self._logged_drops: set[str] = set()
        self._logged_tx: set[str] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested = asyncio.Event()
        self.config_view: ConfigRuntime | None = None
        if document is not None:
            self.config_view = ConfigRuntime(self, document, document_path)
        self.statesync: StateSyncService | None = None
        if config.sync is not None:
            self.statesync = StateSyncService(config.sync, self._statesync_ready, rng=self.rng)

    @property
    def driver(self) -> Driver[Action] | None:
        """The CARP driver once `start_machines` ran: feed admin inputs through it."""
        return self._driver

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Check the host can run this config; raises ConfigError and changes nothing."""
        if is_listening(self.config.control):
            # Checked first: start() reclaims "stale" macvlans and VIPs, which would tear down
            # the running daemon's before failing on the busy socket.
            raise ConfigError(
                "node.control",
                f"{self.config.control} is in use by a running "
                "daemon (stop it first, or give this node another control path)",
            )
        for spec in self.config.vhids:
            parent = self.check_vhid(spec)
            self.parents[parent.index] = parent
            self.vhids[spec.carp.vhid] = VhidRuntime(spec=spec, parent=parent)
            if spec.carp.srcip not in {a.ip for a in self.links.ipv4_addresses(parent.index)}:
                log.warning("vhid %d: srcip %s is not configured on %s; adverts still use it",
                            spec.carp.vhid, spec.carp.srcip, spec.interface)  # fmt: skip
        for name, script in (
            ("upscript", self.config.upscript),
            ("downscript", self.config.downscript),
        ):
            if script is not None and not (os.path.isfile(script) and os.access(script, os.X_OK)):
                raise ConfigError(name, f"not an executable file: {script}")
        self.group.bind_interfaces({v: rt.parent.index for v, rt in self.vhids.items()})
        if self.statesync is not None:
            self.statesync.prepare(self.links)
        dhcp = (
            self.config_view.dhcp_servers
            if self.config_view is not None
            else settings_from_file(self._document_path)
            if self._document_path is not None
            else ()
        )
        if dhcp or self.config_view is not None:
            # With a live config an edit or sync may add servers later: keep the wiring ready.
            self.dhcp = NodeDhcp(dhcp, state_dir_for(self.config.control))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.events_json:
            self._events = EventsLog(cfg.events_json, cfg.name)
        self._provision()
        if self.config_view is not None:
            self.config_view.apply_initial()  # the ruleset is in before the first advert
        self.open_sockets()
        self.start_machines(loop)
        for sock in self._sockets.values():
            sock.start(loop)
        self._watcher = LinkWatcher(self._link_event)
        self._watcher.start(loop)
        self.control = ControlServer(cfg.control, self.status)
        self.control.add_command("demote", self._cmd_demote)
        self.control.add_command("shutdown", self._cmd_shutdown)
        self.control.add_command("metrics", self._cmd_metrics)
        if self.statesync is not None:
            from carpsim.runtime import statesync_metrics  # noqa: PLC0415 - only with sync

            self.control.add_section("statesync", self.statesync.status)
            statesync_metrics.register(self.metrics.registry, self.statesync)
        if self.config_view is not None:
            self.config_view.start(loop)
        if self.dhcp is not None:
            await self.dhcp.start(loop)
            self.control.add_section("dhcp", self.dhcp.status)
            self.dhcp.register_metrics(self.metrics.registry)
            if self.config_view is not None:
                dhcp = self.dhcp
                self.config_view.dhcp_hook = lambda plan: dhcp.replace_settings(
                    derive.dhcp_servers(plan.new)
                )
        await self.control.start()
        if cfg.web is not None:
            from carpsim.web import node_app  # noqa: PLC0415 - aiohttp only when pages are on

            self._web = await node_app.serve(cfg.web, self.control.status, cfg.name)
        if cfg.metrics_port:
            self.metrics.serve(cfg.metrics_port, cfg.metrics_address)
        log.info("node %s: %d vhid(s) started", cfg.name, len(self.vhids))

    def _provision(self) -> None:
        """Host changes: sysctls, reclaim a killed predecessor's leftovers, the macvlans."""
        for parent in self.parents.values():
            sysctl.prepare_parent(parent.name)
        for rt in self.vhids.values():
            self.provision_vhid(rt, self.group.machine(rt.vhid))

    def provision_vhid(self, rt: VhidRuntime, m: CarpMachine) -> None:
        self._reclaim(rt)
        if rt.spec.real_mac:
            rt.src_mac = mac_bytes(rt.parent.mac)
        else:
            rt.macvlan = self.links.create_macvlan(rt.parent, rt.vhid)
            sysctl.prepare_macvlan(rt.macvlan.name)
            rt.src_mac = mac_bytes(virtual_mac(rt.vhid))
        vhid = str(rt.vhid)
        self.metrics.state.labels(vhid=vhid).set(0)
        self.metrics.advert_interval.labels(vhid=vhid).set(m.advert_interval)
        self.metrics.master_down.labels(vhid=vhid).set(m.master_down_interval)
        self.metrics.track_age(rt.vhid, functools.partial(self._age, m))

    # ------------------------------------------------------------------ live VHID changes

    def check_vhid(self, spec: VhidSpec) -> LinkInfo:
        """What `prepare` checks for one VHID, before a live add touches anything."""
        where = f"vhid[{spec.carp.vhid}].interface"
        parent = self.links.lookup(spec.interface)
        if parent is None:
            raise ConfigError(where, f"no such interface: {spec.interface}")
        if parent.kind == "macvlan" and parent.name.startswith("carp"):
            raise ConfigError(where, f"{spec.interface} is a carpsim macvlan, not a parent")
        return parent

    def open_parent(self, parent: LinkInfo) -> bool:
        """The parent's CARP sockets, once (a live edit may bring a new parent); usable?"""
        index = parent.index
        if index not in self._sockets:
            if index not in self.parents:
                sysctl.prepare_parent(parent.name)
                self.parents[index] = parent
            sock = self._sockets[index] = self._socket_factory(parent.name, index, self._packet)
            self._parent_up[index] = parent.usable
            if self._loop is not None:
                sock.start(self._loop)
        return self._parent_up[index]

    def close_parent(self, index: int) -> None:
        """The last VHID on this parent was deleted: stop listening there."""
        self._sockets.pop(index).close()
        del self.parents[index], self._parent_up[index]

    def filter_parents(self, *, drain: bool = False) -> None:
        """The kernel drops what is no advert of ours: each parent admits exactly its VHIDs
        (`drain` the queue at start; a live change keeps it, the old filter passed it)."""
        for index, sock in self._sockets.items():
            if isinstance(sock, CarpSocket):
                vhids = [v for v, rt in self.vhids.items() if rt.parent.index == index]
                (sock.restrict_vhids if drain else sock.serve_vhids)(vhids)

    def deprovision_vhid(self, rt: VhidRuntime) -> None:
        """Its VIPs off, its macvlan gone (after the machine's bow-out was executed)."""
        for vip in rt.spec.carp.vips:
            self.links.del_address(rt.vip_index, vip)
        if rt.macvlan is not None:
            self.links.delete(rt.macvlan.index)
            rt.macvlan = None

    def open_sockets(self) -> None:
        """One CARP socket set per parent, from the injected factory (not yet reading)."""
        for parent in list(self.parents.values()):
            self.open_parent(parent)
        self.filter_parents(drain=True)

    def start_machines(self, loop: asyncio.AbstractEventLoop) -> None:
        """The driver, state sync, and CARP's start on the usable parents."""
        self._loop = loop
        # The Replicator has its own driver in StateSyncService (it runs the kernel side
        # too), so this driver's timer is the group's; every input still goes through the
        # composition, whose rules turn the Replicator's readiness into demotion.
        self._driver = Driver(self.group, self.execute, loop)
        if self.statesync is not None:
            # Before the first advert: a node without the state table starts demoted (as pfsync).
            self.statesync.start(loop)
        up = [v for v, rt in self.vhids.items() if self._parent_up[rt.parent.index]]
        down = [v for v in self.vhids if v not in up]
        self._driver.feed(self.machines.start, up, down)

    def _reclaim(self, rt: VhidRuntime) -> None:
        """Remove what a SIGKILLed run left: its macvlan and any VIP still on the parent."""
        for stale in self.links.stale_macvlans(rt.parent, {rt.vhid}):
            log.warning("vhid %d: removing stale macvlan %s", rt.vhid, stale.name)
            self.links.delete(stale.index)
        for vip in rt.spec.carp.vips:
            if self.links.del_address(rt.parent.index, vip):
                log.warning("vhid %d: removed stale VIP %s from %s", rt.vhid, vip, rt.parent.name)

    async def stop(self) -> None:  # noqa: C901 - each teardown step is guarded on its own so one failure cannot skip the rest
        """Bow out, remove VIPs and macvlans, close sockets (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        if self._driver is not None:
            self._driver.feed(self.machines.shutdown)
            self._driver.stop()
        # After the bow-out: stopping state sync joins the dump worker, which can block the
        # loop for up to its join timeout while a large dump finishes.
        if self.statesync is not None:
            self.statesync.stop()
        if self.config_view is not None:
            self.config_view.stop()
        if self.dhcp is not None:
            self.dhcp.stop()
        for rt in self.vhids.values():
            try:
                self.deprovision_vhid(rt)
            except (OSError, NetlinkError) as exc:
                # One refusal must not leave the other VHIDs' VIPs, the sockets and the
                # control socket behind.
                log.error("vhid %d: cleanup failed: %s", rt.vhid, exc)
        if self._watcher is not None:
            self._watcher.close()
        for sock in self._sockets.values():
            sock.close()
        if self._web is not None:
            await self._web.cleanup()
        if self.control is not None:
            await self.control.close()
        await self.hooks.drain()
        if self._events is not None:
            self._events.close()
        self.links.close()

    # ------------------------------------------------------------------ inputs

    def _packet(self, ifindex: int, data: bytes) -> None:
        assert self._driver is not None
        own = self.group.rx_own
        self._driver.feed(self.machines.packet_received, data, ifindex)
        if self.group.rx_own == own:  # our own adverts heard back are not received packets
            self.rx_packets += 1
            self.metrics.rx_packets.labels(af="inet").inc()

    def _link_event(self, index: int, flags: int, deleted: bool) -> None:
        if index not in self._parent_up or self._driver is None or self._stopping:
            return
        usable = not deleted and LinkInfo.flags_usable(flags)
        if usable == self._parent_up[index]:
            return
        self._parent_up[index] = usable
        vhids = [v for v, rt in self.vhids.items() if rt.parent.index == index]
        name = self.parents[index].name
        log.warning("parent %s is %s: vhids %s", name, "up" if usable else "down", vhids)
        self._driver.feed(self.machines.link_up if usable else self.machines.link_down, vhids)

    def _cmd_demote(self, req: JsonDict) -> JsonDict:
        value = req.get("value")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise ValueError("demote: value must be an integer 0..255")
        assert self._driver is not None
        self._driver.feed(self.machines.set_admin_demote, value)
        return {"demote": self.group.group_demote}

    def _cmd_metrics(self, _req: JsonDict) -> JsonDict:
        from prometheus_client import generate_latest  # noqa: PLC0415

        return {"text": generate_latest(self.metrics.registry).decode()}

    def _statesync_ready(self, ready: bool, reason: str) -> None:
        """Replicator readiness, handed to the composition's demotion rule (as pfsync)."""
        if self._driver is None:
            return
        # Called from inside the statesync driver's execute: feeding the CARP driver here is
        # a separate machine, so there is no re-entrancy into the replicator.
        self._driver.feed(self.machines.ready_changed, ready)
        log.info("statesync %s (%s): group demote now %d", "ready" if ready else "not ready",
                 reason, self.group.group_demote)  # fmt: skip

    def _cmd_shutdown(self, _req: JsonDict) -> JsonDict:
        self.stop_requested.set()
        return {"stopping": True}

    # ------------------------------------------------------------------ actions

    def execute(self, actions: list[Action]) -> None:
        # In list order: the machine already puts the VIPs ahead of the advert and the GARP,
        # and the transition's bookkeeping after them (see CarpMachine._become_master).
        for action in actions:
            if isinstance(action, AddVip):
                self._add_vip(action)
            elif isinstance(action, Transmit):
                self._transmit(action)
            elif isinstance(action, SendGarp):
                self._garp(action)
            elif isinstance(action, DelVip):
                self._del_vip(action)
            elif isinstance(action, StateChanged):
                self._state_changed(action)
            elif isinstance(action, CountDrop):
                self._count_drop(action)
            elif isinstance(action, AdvertAccepted):
                pass  # the machine keeps last_advert_at/src for status and metrics
        self.metrics.demote.set(self.group.group_demote)

    def _tx_error(self, what: str, exc: OSError) -> None:
        reason = errno.errorcode.get(exc.errno or 0, "oserror").lower()
        self.tx_errors[reason] += 1
        self.metrics.tx_errors.labels(reason=reason).inc()
        if reason not in self._logged_tx:
            self._logged_tx.add(reason)
            log.warning("send %s failed (%s): %s; further %s errors are only counted",
                        what, reason, exc, reason)  # fmt: skip

    def _transmit(self, action: Transmit) -> None:
        rt = self.vhids[action.vhid]
        sock = self._sockets[rt.parent.index]
        try:
            sock.send_advert(action.packet, rt.src_mac)
        except OSError as exc:
            self._tx_error("advert", exc)
            return
        self.tx_packets += 1
        self.metrics.tx_packets.labels(af="inet").inc()

    def _garp(self, action: SendGarp) -> None:
        rt = self.vhids[action.vhid]
        sock = self._sockets[rt.parent.index]
        for vip in action.vips:
            if isinstance(vip, IPv4Interface):
                try:
                    sock.send_frame(garp_frame(rt.src_mac, vip.ip))
                except OSError as exc:
                    self._tx_error("garp", exc)

    def _add_vip(self, action: AddVip) -> None:
        rt = self.vhids[action.vhid]
        try:
            for vip in action.vips:
                self.links.add_address(rt.vip_index, vip)
            if rt.macvlan is not None:
                self.links.set_up(rt.macvlan.index, True)
        except (OSError, NetlinkError) as exc:
            # NetlinkError is not an OSError: uncaught, it would abort this batch of actions
            # and skip the new master's advert and GARP.
            log.error("vhid %d: adding VIPs failed: %s", action.vhid, exc)

    def _del_vip(self, action: DelVip) -> None:
        rt = self.vhids[action.vhid]
        try:
            if rt.macvlan is not None:
                self.links.set_up(rt.macvlan.index, False)
            for vip in action.vips:
                self.links.del_address(rt.vip_index, vip)
        except (OSError, NetlinkError) as exc:
            log.error("vhid %d: removing VIPs failed: %s", action.vhid, exc)

    def _state_changed(self, action: StateChanged) -> None:
        rt = self.vhids[action.vhid]
        old, new = action.old.name, action.new.name
        vhid = str(action.vhid)
        self.metrics.transitions.labels(vhid=vhid, **{"from": old, "to": new}).inc()
        self.metrics.state.labels(vhid=vhid).set(STATE_VALUE[new])
        log.info(
            "vhid %d on %s: %s -> %s (%s)", action.vhid, rt.spec.interface, old, new, action.reason
        )
        if self._events is not None:
            self._events.transition(action.vhid, old, new, action.reason)
        self._run_hooks(rt, action)
        rt.started = True

    def _run_hooks(self, rt: VhidRuntime, action: StateChanged) -> None:
        cfg = self.config
        if self._stopping and not cfg.shutdown_scripts:
            return
        script = None
        if action.new is CarpState.MASTER:
            script = cfg.upscript
        elif action.old is CarpState.MASTER:
            script = cfg.downscript
        elif action.new is CarpState.BACKUP and not rt.started and not cfg.neutral:
            script = cfg.downscript  # ucarp runs the downscript at startup unless --neutral
        if script is None:
            return
        for vip in rt.spec.carp.vips:
            self.hooks.run(rt.vhid, script, [rt.spec.interface, str(vip.ip)])

    def _count_drop(self, action: CountDrop) -> None:
        reason = str(action.reason)
        self.drops[reason] += 1
        self.metrics.rx_dropped.labels(reason=reason).inc()
        if action.vhid is not None and action.vhid in self.vhids:
            self.vhids[action.vhid].drops[reason] += 1
        if reason not in self._logged_drops:
            self._logged_drops.add(reason)
            log.warning("dropped a packet: %s (%s); further %s drops are only counted",
                        reason, action.detail, reason)  # fmt: skip

    # ------------------------------------------------------------------ status

    def _age(self, m: CarpMachine) -> float | None:
        at = m.last_advert_at
        if at is None or self._loop is None:
            return None
        # Same clock as the driver's inputs; also read from the metrics thread (no loop state).
        return max(0.0, hrtimer.monotonic() - at)

    def status(self) -> dict[str, Any]:
        vhids = []
        for vhid, rt in sorted(self.vhids.items()):
            m = self.group.machine(vhid)
            age = self._age(m)
            vhids.append(
                {
                    "vhid": vhid,
                    "interface": rt.spec.interface,
                    "vips": [str(v) for v in rt.spec.carp.vips],
                    "state": m.state.name,
                    "advbase": rt.spec.carp.advbase,
                    "advskew": m.effective_advskew,
                    "demote": m.demote,
                    "master_down_s": round(m.master_down_interval, 6),
                    "advert_interval_s": round(m.advert_interval, 6),
                    "last_advert_age_s": None if age is None else round(age, 3),
                    "last_advert_src": m.last_advert_src,
                    "drops": dict(rt.drops),
                    "real_mac": rt.spec.real_mac,
                    "peer": None if rt.spec.peer is None else str(rt.spec.peer),
                }
            )
        return {
            "node": self.config.name,
            "pid": os.getpid(),
            "vhids": vhids,
            "drops": dict(self.drops),
            "rate_limited": sum(
                s.buckets.dropped for s in self._sockets.values() if isinstance(s, CarpSocket)
            ),
            "rx_packets": self.rx_packets,
            "tx_packets": self.tx_packets,
            "tx_errors": dict(self.tx_errors),
            "demote": self.group.group_demote,
            "admin_demote": self.machines.admin_demote,
        }
