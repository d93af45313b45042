"""The node's own configuration at run time: load, first apply, edits, and XML-RPC sync.

`load(path)` reads a node config through `carpsim.config` (every original node config file
loads too) and gives both the sectioned `Config` and the `NodeConfig` the CARP node runs from.
`ConfigRuntime` is what `Node` holds as ``node.config_view``:

- at start it loads the rendered nftables ruleset (only when the config has filter or NAT
  rules: a bare CARP node gets no ruleset) and the static routes;
- with ``[hasync]`` configured it runs the `ConfigSyncService` on the SYNC address; a received
  sync is applied on the node's loop (the server thread waits for it), so the kernel and the
  machines only ever change from one thread;
- the control command ``config`` shows a section, makes an edit (`carpsim.config.edit`),
  or forces a sync. An edit is applied on the loop; the push to ``synchronizetoip`` then runs
  in a thread, because its retries (4 tries, 1 s apart) must not stall CARP's adverts.

An unchanged VHID is never touched (the diff leaves it out); a changed one (skew, base,
password ...) is reconfigured in place, its machine keeping its state, so no spurious takeover.
A new VHID gets its macvlan and a machine that starts INIT -> BACKUP as at boot; a deleted one
bows out as on shutdown; new addresses for a VHID are that VHID deleted and added again. The
other VHIDs are never disturbed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carpsim.config import derive, dump, edit, legacy, loader, render
from carpsim.config.model import Config
from carpsim.configsync import apply
from carpsim.dhcp.settings import DhcpServerSettings
from carpsim.errors import ConfigError, EnvironmentProblem
from carpsim.net.config_apply import KernelApplier
from carpsim.net.conntrack import set_sysctl
from carpsim.protocol.machine import CarpMachine
from carpsim.runtime.configsync_service import (
    ConfigStore,
    ConfigSyncCollector,
    ConfigSyncService,
    SyncError,
    sync_address,
)
from carpsim.runtime.control import JsonDict
from carpsim.runtime.nodeconfig import NodeConfig, StateSyncConfig, VhidSpec, check_unique

if TYPE_CHECKING:
    from carpsim.runtime.node import Node

log = logging.getLogger("carpsim.node.config")
APPLY_TIMEOUT = 60.0
DhcpHook = Callable[[apply.ApplyPlan], None]


def node_config(config: Config) -> NodeConfig:
    """What the CARP node runs from, derived from the sectioned config."""
    vhids = tuple(
        VhidSpec(carp=v.carp, interface=v.interface, real_mac=v.real_mac, peer=v.peer)
        for v in derive.carp_vhids(config)
    )
    check_unique(vhids)
    sync = None
    s = config.statesync
    if s is not None and s.enabled:
        sync = StateSyncConfig(
            interface=s.interface,
            peer=s.peer,
            replicator=legacy.statesync_replicator(s, config.node.name),
            demote=s.demote,
        )
    n = config.node
    return NodeConfig(
        name=n.name, vhids=vhids, control=n.control, events_json=n.events_json,
        metrics_port=n.metrics_port, metrics_address=n.metrics_address, upscript=n.upscript,
        downscript=n.downscript, neutral=n.neutral, shutdown_scripts=n.shutdown_scripts,
        statesync=dump.to_data(config).get("statesync", {}), sync=sync, web=config.web,
    )  # fmt: skip


def load(path: str | Path) -> tuple[NodeConfig, Config]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config", f"{p}: not UTF-8 text") from exc
    try:
        config = loader.loads(text, str(p))
    except RecursionError as exc:
        raise ConfigError("config", f"{p}: nested too deeply to be a node config") from exc
    return node_config(config), config


def has_ruleset(config: Config) -> bool:
    return bool(config.filter.rules or config.nat.rules)


def sync_configured(config: Config) -> bool:
    """XML-RPC sync runs when hasync names a SYNC interface of this node and a password."""
    return sync_address(config) is not None and bool(config.hasync.password)


class ConfigRuntime:
    """``node.config_view``: the running `Config`, its store, sync service and edits."""

    def __init__(self, node: Node, config: Config, path: Path | None) -> None:
        self.node = node
        self.path = path
        self.store = ConfigStore(path if path is not None else Path("/nonexistent"), config)
        self.kernel = KernelApplier(devices=self.devices)
        self.sync: ConfigSyncService | None = None
        self.dhcp_hook: DhcpHook | None = None
        """Set by the DHCP wiring: restarts/stops servers as an apply plan says."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pushes: list[threading.Thread] = []

    # --- what other subsystems read ---------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.store.current

    @property
    def dhcp_servers(self) -> tuple[DhcpServerSettings, ...]:
        """The DHCP servers this config asks for (one per enabled ``dhcpd.<if>``)."""
        return derive.dhcp_servers(self.config)

    def devices(self) -> dict[str, list[str]]:
        """Logical interface -> the CARP macvlans that carry its VIPs (exact nft names)."""
        out: dict[str, list[str]] = {}
        for iface in self.config.interfaces:
            out[iface.name] = [
                rt.macvlan.name
                for rt in self.node.vhids.values()
                if rt.macvlan is not None and rt.spec.interface == iface.device
            ]
        return out

    # --- lifecycle --------------------------------------------------------------------------

    def apply_initial(self) -> None:
        """The boot config's kernel part (after the macvlans exist, before any advert)."""
        cfg = self.config
        if has_ruleset(cfg):
            self.kernel.run_nft(render(cfg, self.devices()))
            set_sysctl("nf_conntrack_tcp_loose", int(cfg.filter.tcp_loose), None)
            log.info("nftables: loaded the ruleset (%d filter rules)", len(cfg.filter.rules))
        for r in cfg.staticroutes:
            if not r.disabled:
                self.kernel.run_ip(["route", "replace", str(r.network), "via", str(r.gateway)])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        node = self.node
        assert node.control is not None
        node.control.add_command("config", self._cmd_config)
        if not sync_configured(self.config):
            return
        state_dir = (self.path.parent if self.path else Path("/run/carpsim")) / (
            f".{self.config.node.name}-configsync"
        )
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sync = ConfigSyncService(self.store, self._applier, state_dir=state_dir)
        host, port = self.sync.start()
        log.info("High Availability: XML-RPC sync server on https://%s:%d/xmlrpc.php", host, port)
        node.control.add_section("configsync", self.sync.status)
        node.metrics.registry.register(ConfigSyncCollector(self.sync))

    def stop(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        for t in self._pushes:
            t.join(timeout=0.1)

    # --- applying ---------------------------------------------------------------------------

    def _applier(self, plan: apply.ApplyPlan) -> None:
        """Called by the store (server thread or the loop): run the plan on the loop."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self.execute(plan)
            return

        async def on_loop() -> None:
            self.execute(plan)

        asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(APPLY_TIMEOUT)

    def execute(self, plan: apply.ApplyPlan) -> None:
        """Everything the plan says, in order; raises (the store rolls back) on a failure."""
        if plan.statesync_changed:
            raise EnvironmentProblem("state sync settings change only with a restart")
        if plan.nftables is not None and not has_ruleset(plan.new) and not has_ruleset(plan.old):
            plan = _without_nft(plan)
        # An update the machine cannot take in place (addresses, interface, real_mac, peer)
        # is that VHID deleted and added again; the others keep running.
        redo = [v for v in plan.vhids_update if not self._updatable(v)]
        adds = [*redo, *plan.vhids_add]
        self._check_adds(plan, adds)
        for device, vhid in plan.vhids_remove:
            self._remove_vhid(vhid, device)
        for v in redo:
            self._remove_vhid(v.carp.vhid)
        for v in adds:
            self._add_vhid(_spec(v))
        if adds or plan.vhids_remove:
            used = {rt.parent.index for rt in self.node.vhids.values()}
            for index in set(self.node.parents) - used:
                self.node.close_parent(index)  # its last VHID is gone: stop listening there
            self.node.filter_parents()
        # after the macvlans changed: the ruleset names them
        self.kernel(plan if not (adds or plan.vhids_remove) else _with_nft(plan))
        for v in plan.vhids_update:
            if v not in redo:
                self._update_vhid(v)
        if (plan.dhcp_start or plan.dhcp_stop) and self.dhcp_hook is not None:
            self.dhcp_hook(plan)
        self._sync_node_config()
        for step in plan.steps():
            log.info("config apply: %s", step)

    def _check_adds(self, plan: apply.ApplyPlan, adds: list[derive.CarpVhid]) -> None:
        """Before anything changes: one VHID number per node, every parent present."""
        if adds:
            check_unique(tuple(_spec(v) for v in derive.carp_vhids(plan.new)))
            for v in adds:
                self.node.check_vhid(_spec(v))

    def _updatable(self, v: derive.CarpVhid) -> bool:
        rt = self.node.vhids.get(v.carp.vhid)
        return rt is not None and (rt.spec.interface, rt.spec.real_mac, rt.spec.peer,
                                   rt.spec.carp.vips) == (v.interface, v.real_mac, v.peer,
                                                          v.carp.vips)  # fmt: skip

    def _update_vhid(self, v: derive.CarpVhid) -> None:
        """In place: the machine keeps its state (no takeover), status shows the new values."""
        rt = self.node.vhids[v.carp.vhid]
        rt.spec = dataclasses.replace(rt.spec, carp=v.carp)
        driver = self.node.driver
        if driver is not None:
            driver.feed(self.node.group.machine(v.carp.vhid).reconfigure, v.carp)

    def _add_vhid(self, spec: VhidSpec) -> None:
        """A new VHID: its macvlan (DOWN, 00:00:5e:00:01:VHID), the parent's CARP sockets if
        the parent is new, and a machine that starts INIT -> BACKUP as at start-up."""
        from carpsim.runtime.node import VhidRuntime  # noqa: PLC0415 - node.py imports this module

        node, vhid = self.node, spec.carp.vhid
        if vhid in node.vhids:
            raise ConfigError(f"vhid[{vhid}].vhid", "configured twice")
        parent = node.check_vhid(spec)
        up = node.open_parent(parent)
        rt = VhidRuntime(spec=spec, parent=parent)
        machine = CarpMachine(spec.carp, node.rng)
        try:
            node.provision_vhid(rt, machine)
        except Exception:
            node.deprovision_vhid(rt)  # no half-made macvlan left for the rollback to miss
            raise
        node.vhids[vhid] = rt
        if node.driver is not None:
            node.driver.feed(node.machines.add_vhid, machine, parent.index, up=up)
        log.info("vhid %d on %s: added", vhid, spec.interface)

    def _remove_vhid(self, vhid: int, device: str | None = None) -> None:
        """A deleted VHID bows out (a MASTER's 255/255 advert, as on shutdown) before its VIPs
        and macvlan go. With `device`, only the VHID on that device: rolling back an add that
        was refused must not take the same number on another interface."""
        node = self.node
        rt = node.vhids.get(vhid)
        if rt is None or (device is not None and rt.spec.interface != device):
            return  # rolling back an add that never happened
        if node.driver is not None:
            node.driver.feed(node.machines.remove_vhid, vhid)
        try:
            node.deprovision_vhid(rt)
        finally:
            del node.vhids[vhid]
            m = node.metrics
            for gauge in (m.state, m.advert_interval, m.master_down, m.last_advert_age):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(vhid))
        log.info("vhid %d on %s: removed", vhid, rt.spec.interface)

    def _sync_node_config(self) -> None:
        """`node.config.vhids` follows the live VHIDs (status, web pages and a restart agree)."""
        specs = tuple(rt.spec for _, rt in sorted(self.node.vhids.items()))
        self.node.config = dataclasses.replace(self.node.config, vhids=specs)

    # --- the control command ----------------------------------------------------------------

    def _cmd_config(self, req: JsonDict) -> JsonDict:
        op = req.get("op")
        if op == "show":
            return {"config": self._show(req.get("section"))}
        if op == "sync":
            if self.sync is None or self.config.hasync.synchronizetoip is None:
                raise ValueError("hasync: no synchronizetoip configured (nothing to sync to)")
            self._push_async()
            return {"pushing": self.sync.peer_url()}
        args = req.get("args")
        if not isinstance(op, str) or not isinstance(args, dict):
            raise ValueError('config: "op" and "args" are required')
        try:
            new = edit.edit(self.config, op, args)
        except ConfigError as exc:
            raise ValueError(f"{exc.field}: {exc.message}") from exc
        try:
            # the loop is this thread: a sync being applied holds the lock and waits for the
            # loop, so wait for nothing here
            plan = self.store.replace(new, self._applier, edit.describe(op, args), wait=False)
        except SyncError as exc:
            raise ValueError(str(exc)) from exc
        pushed = None
        if not plan.empty and self.sync is not None and new.hasync.synchronizetoip is not None:
            self._push_async()
            pushed = self.sync.peer_url()
        return {"changed": plan.diff.summary(), "steps": plan.steps(), "pushing": pushed}

    def _push_async(self) -> None:
        assert self.sync is not None
        self._pushes = [t for t in self._pushes if t.is_alive()]
        t = threading.Thread(target=self.sync.push, name="configsync-push", daemon=True)
        t.start()
        self._pushes.append(t)

    def _show(self, section: Any) -> Any:
        data = dump.to_data(self.config)
        if isinstance(data.get("hasync"), dict) and data["hasync"].get("password"):
            data["hasync"]["password"] = "********"  # noqa: S105 - masking, not a secret
        if section is None:
            return data
        if not isinstance(section, str) or section not in data:
            raise ValueError(f"no section {section!r} (sections: {', '.join(data)})")
        return {section: data[section]}


def _spec(v: derive.CarpVhid) -> VhidSpec:
    return VhidSpec(carp=v.carp, interface=v.interface, real_mac=v.real_mac, peer=v.peer)


def _with_nft(plan: apply.ApplyPlan) -> apply.ApplyPlan:
    """The ruleset matches the CARP macvlans by name: reload it when they come or go."""
    if plan.nftables is not None or not (has_ruleset(plan.new) or has_ruleset(plan.old)):
        return plan
    return dataclasses.replace(plan, nftables="")


def _without_nft(plan: apply.ApplyPlan) -> apply.ApplyPlan:
    """A node that never had a ruleset does not get one for a CARP-only change."""
    return dataclasses.replace(plan, nftables=None)
