"""State sync on a real node: the pure `Replicator` wired to the kernel and the SYNC link.

The daemon runs inside its node namespace, so the `KernelConntrackTable` here is that node's
conntrack table. Inputs reach the replicator through the generic `Driver`:

- conntrack events (loop.add_reader on the event socket) -> local_events (typed `CtChange`
  events); an event-socket overrun comes back as `ResyncNeeded` -> a full kernel dump, whose
  key set feeds local_resync (our states that vanished unseen);
- a kernel dump every `refresh_interval` -> local_snapshot (conntrack sends no event for traffic,
  so this is how moved counters reach the replicator's liveness refresh, docs/statesync-protocol.md
  §4). Dumps run in a worker thread with its own netlink socket (`ct_dump_worker`): only entries
  that changed since the previous dump come back, in chunks, so the loop that also runs CARP is
  never held for the length of a dump. Entries touched by an event while a dump ran are skipped
  (the event is newer than the dump's copy);
- sync frames that passed the socket's interface check and the codec's IPv4 header check
  -> frame_received;
- the sync interface's carrier -> link_up / link_down.

Actions: Transmit -> the sync socket; InstallStates / RemoveStates -> a FIFO of kernel writes
drained `WRITE_CHUNK` records per loop iteration (a 50k-state bulk or sweep never holds the
loop for long; consecutive installs coalesce into one batched apply_many);
ReadyChanged -> `on_ready(ready, reason)`, which the node turns into a CARP
demotion while not ready (as pfsync); CountDrop -> the socket's drop table (one table, keyed by
`SyncDropReason`); Bulk*/PeerRestarted -> status and logs.

The replicator already keeps the userspace mirror (conntrackd-style) and recognises the kernel's
echoes of its own installs, and the sync link's flows (proto 240, the sync addresses) are
excluded on both the kernel side and the replicator side.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from carpsim.errors import ConfigError
from carpsim.net.conntrack import (
    CtEvent,
    KernelConntrackTable,
    SyncExclusion,
)
from carpsim.net.links import LinkInfo, Links, LinkWatcher
from carpsim.net.sync_io import SyncSocket
from carpsim.protocol.constants import IPPROTO_CARP
from carpsim.runtime.ct_dump_worker import DumpChunk, DumpWorker
from carpsim.runtime.driver import Driver
from carpsim.runtime.nodeconfig import StateSyncConfig
from carpsim.statesync.constants import IPPROTO_PFSYNC
from carpsim.statesync.events import (
    Action,
    BulkCompleted,
    BulkServed,
    CountDrop,
    InstallStates,
    PeerRestarted,
    ReadyChanged,
    RemoveStates,
    ResyncNeeded,
    Transmit,
)
from carpsim.statesync.record import FlowKey, StateRecord
from carpsim.statesync.replicator import Replicator

log = logging.getLogger("carpsim.statesync")

IPPROTO_IGMP = 2
# Link-local control traffic is per node by nature: replicating a CARP advert's conntrack entry
# would only make both nodes fight over the same key.
NEVER_SYNCED = frozenset({IPPROTO_PFSYNC, IPPROTO_CARP, IPPROTO_IGMP})
NETFILTER_SYSCTLS = {
    # Every entry reports its updates and destroy, not only those created while we listen.
    "nf_conntrack_events": 1,
    # Packet counters: what tells the liveness refresh that a flow is still moving.
    "nf_conntrack_acct": 1,
}
# Kernel writes per loop iteration (~2000 records ≈ 30 ms of netlink round trips at most).
WRITE_CHUNK = 2000
RECENT = 20
"""States the status lists as "recent" (the web page's state table)."""
ReadyHandler = Callable[[bool, str], None]
"""(ready, reason): the node hands it to its composition's demotion rule."""


def set_netfilter_sysctls() -> None:
    """The sysctls the replicator needs in this namespace (the lab sets them at build too)."""
    for key, value in NETFILTER_SYSCTLS.items():
        try:
            Path("/proc/sys/net/netfilter", key).write_text(f"{value}\n")
        except OSError as exc:
            log.warning("statesync: cannot set %s=%s: %s", key, value, exc)


class StateSyncService:
    """One node's state replication; `status()` is the control socket's "statesync" section."""

    def __init__(
        self,
        config: StateSyncConfig,
        on_ready: ReadyHandler,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._on_ready = on_ready
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self.link: LinkInfo | None = None
        self.replicator: Replicator | None = None
        self.table: KernelConntrackTable | None = None
        self.sock: SyncSocket | None = None
        self._local_addrs: list[IPv4Interface] = []
        self._driver: Driver[Action] | None = None
        self._watcher: LinkWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dump_handle: asyncio.TimerHandle | None = None
        self._dumper: DumpWorker | None = None
        self._dump_gen = 0
        self._dump_inflight = False
        self._dump_want: bool | None = None  # a dump asked for while one ran (True = full)
        self._touched: set[FlowKey] = set()
        self._writes: deque[tuple[str, list[Any]]] = deque()
        self._write_handle: asyncio.Handle | None = None
        self._link_usable = True
        self.ready = False
        self.ready_reason = "starting"
        self.ready_changes: list[dict[str, Any]] = []
        self._recent: deque[FlowKey] = deque(maxlen=RECENT)
        self.counters: Counter[str] = Counter()
        self.install_failures: Counter[str] = Counter()
        self.bulk: dict[str, Any] = {
            "count": 0,
            "gave_up": 0,
            "last_duration_s": None,
            "last_states": None,
            "served": 0,
            "last_served_duration_s": None,
            "last_served_states": None,
        }
        self.kernel_states = 0
        self._logged: set[str] = set()
        self._stopped = False

    # ------------------------------------------------------------------ setup

    def prepare(self, links: Links) -> None:
        """Check the sync interface exists (ConfigError, nothing changed)."""
        link = links.lookup(self.config.interface)
        if link is None:
            raise ConfigError("statesync.interface", f"no such interface: {self.config.interface}")
        self.link = link
        self._local_addrs = links.ipv4_addresses(link.index)
        addrs = {str(a.ip) for a in self._local_addrs}
        if self.config.peer is not None:
            addrs.add(str(self.config.peer))
        rcfg = replace(
            self.config.replicator,
            excluded_protos=self.config.replicator.excluded_protos | NEVER_SYNCED,
            excluded_addresses=self.config.replicator.excluded_addresses | frozenset(addrs),
        )
        self.replicator = Replicator(rcfg, self._rng)
        self._link_usable = link.usable

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the conntrack and sync sockets and start replicating (emits ReadyChanged)."""
        assert self.link is not None, "prepare() first"
        assert self.replicator is not None
        self._loop = loop
        set_netfilter_sysctls()
        rcfg = self.replicator.config
        exclude = SyncExclusion(
            protos=frozenset(rcfg.excluded_protos), addresses=rcfg.excluded_raw()
        )
        self.table = KernelConntrackTable(exclude=exclude)
        # Subscribe before the first dump, so nothing changes unseen in between.
        self.table.subscribe()
        self._dumper = DumpWorker(exclude, loop, self._dump_chunk)
        self._dumper.start()
        peer = None if self.config.peer is None else IPv4Address(self.config.peer)
        self.sock = SyncSocket(
            self.link.name, self.link.index, self._frame, peer=peer, local=self._local_addrs
        )
        self._driver = Driver(self.replicator, self.execute, loop)
        loop.add_reader(self.table.fileno(), self._ct_readable)
        self.sock.start(loop)
        self._watcher = LinkWatcher(self._link_event)
        self._watcher.start(loop)
        rep = self.replicator
        if not self._link_usable:
            self._driver.feed(rep.link_down)
        self._driver.feed(rep.started)
        # The seed dump arrives in chunks like every other (local states then go out as INS).
        self._request_dump(full=True)
        self._dump_handle = loop.call_later(rcfg.refresh_interval, self._periodic_dump)
        dst = "group 224.0.0.240" if peer is None else f"peer {peer}"
        log.info("statesync: on %s to %s, creatorid %08x", self.link.name, dst, rcfg.creatorid)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._driver is not None:
            self._driver.stop()
        if self._dump_handle is not None:
            self._dump_handle.cancel()
        if self._dumper is not None:
            self._dumper.stop()
        if self._write_handle is not None:
            self._write_handle.cancel()
        self._writes.clear()
        if self._watcher is not None:
            self._watcher.close()
        if self.sock is not None:
            self.sock.close()
        if self.table is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(OSError, ValueError):
                    self._loop.remove_reader(self.table.fileno())
            self.table.close()

    # ------------------------------------------------------------------ inputs

    def _frame(self, payload: bytes) -> None:
        assert self._driver is not None
        assert self.replicator is not None
        self._driver.feed(self.replicator.frame_received, payload)

    def _link_event(self, index: int, flags: int, deleted: bool) -> None:
        if self.link is None or index != self.link.index or self._driver is None:
            return
        usable = not deleted and LinkInfo.flags_usable(flags)
        if usable == self._link_usable:
            return
        self._link_usable = usable
        rep = self.replicator
        assert rep is not None
        log.warning("statesync: sync link %s is %s", self.link.name, "up" if usable else "down")
        self._driver.feed(rep.link_up if usable else rep.link_down)

    def _ct_readable(self) -> None:
        assert self.table is not None
        assert self._driver is not None
        try:
            events = self.table.read_events()
        except OSError as exc:
            self._once("ct-read", "statesync: reading conntrack events failed: %s", exc)
            return
        if events:
            self._driver.feed(self._local_events, events)

    def _local_events(self, now: float, events: list[CtEvent]) -> list[Action]:
        """Many kernel events as one driver input (one timer re-arm per batch). Only the
        edge's bookkeeping here: counters, and the keys a running dump must not overwrite."""
        rep = self.replicator
        assert rep is not None
        touched = self._touched if self._dump_inflight else None
        self._seen([item.key for _kind, item in events[-RECENT:] if isinstance(item, StateRecord)])
        for kind, item in events:
            self.counters[f"ct_{kind}"] += 1
            if touched is not None and item is not None:
                touched.add(item if isinstance(item, FlowKey) else item.key)
        return rep.local_events(now, events)

    def _request_dump(self, *, full: bool) -> None:
        """Ask the worker for a dump; while one runs, remember the wish (full wins)."""
        if self._dumper is None or self._stopped:
            return
        if self._dump_inflight:
            self._dump_want = bool(self._dump_want) or full
            return
        self._dump_inflight = True
        self._dump_gen += 1
        self._touched = set()
        self.counters["dumps_full" if full else "dumps_changed"] += 1
        self._dumper.request(self._dump_gen, full=full)

    def _dump_chunk(self, chunk: DumpChunk) -> None:
        """One slice of a dump, on the loop: feed it, and finish the dump on the last one."""
        if self._stopped or self._driver is None or chunk.generation != self._dump_gen:
            return
        rep = self.replicator
        assert rep is not None
        touched = self._touched
        records = [r for r in chunk.records if r.key not in touched] if touched else chunk.records
        self.counters["dump_records_fed"] += len(records)
        if records:
            self._driver.feed(rep.local_snapshot, records)
        if not chunk.final:
            return
        if chunk.error is not None:
            self._once("dump", "statesync: conntrack dump failed: %s", chunk.error)
        else:
            self.kernel_states = chunk.total
            if chunk.present is not None:
                self._driver.feed(rep.local_resync, chunk.present, frozenset(touched))
        self._dump_inflight = False
        self._touched = set()
        want, self._dump_want = self._dump_want, None
        if want is not None:
            self._request_dump(full=want)

    def _periodic_dump(self) -> None:
        if self._stopped or self._loop is None or self.replicator is None:
            return
        self._request_dump(full=False)
        self._dump_handle = self._loop.call_later(
            self.replicator.config.refresh_interval, self._periodic_dump
        )

    # ------------------------------------------------------------------ actions

    def execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                assert self.sock is not None
                self.sock.send(action.data)
            elif isinstance(action, InstallStates):
                self._seen([r.key for r in action.records[-RECENT:]])
                self._queue_write("install", action.records)
            elif isinstance(action, RemoveStates):
                self._queue_write("remove", action.keys)
            elif isinstance(action, ReadyChanged):
                self._ready_changed(action)
            elif isinstance(action, CountDrop):
                assert self.sock is not None
                self.sock.count_drop(action.reason, action.detail)
            elif isinstance(action, BulkCompleted):
                self._bulk_completed(action)
            elif isinstance(action, BulkServed):
                self.bulk["served"] += 1
                self.bulk["last_served_duration_s"] = round(action.duration, 6)
                self.bulk["last_served_states"] = action.count
                log.info(
                    "statesync: served a %sbulk of %d states in %.3fs",
                    "pushed " if action.pushed else "",
                    action.count,
                    action.duration,
                )
            elif isinstance(action, ResyncNeeded):
                # Events were lost: a full dump (in the worker) re-reads the table, and its
                # key set tells the replicator which of our states vanished unseen.
                self._once("overrun", "statesync: conntrack event overrun; resyncing from a dump")
                self._request_dump(full=True)
            elif isinstance(action, PeerRestarted):
                self.counters["peer_restarts"] += 1
                log.info("statesync: peer epoch %08x -> %08x", action.old_epoch, action.new_epoch)

    def _queue_write(self, kind: str, items: tuple[Any, ...]) -> None:
        """Kernel writes in order; consecutive ones of a kind coalesce into bigger batches."""
        if self._writes and self._writes[-1][0] == kind:
            self._writes[-1][1].extend(items)
        else:
            self._writes.append((kind, list(items)))
        if self._write_handle is None and self._loop is not None:
            self._write_handle = self._loop.call_soon(self._drain_writes)

    def _drain_writes(self) -> None:
        """At most WRITE_CHUNK records per loop iteration, then yield to CARP and the rest."""
        self._write_handle = None
        if self._stopped:
            return
        budget = WRITE_CHUNK
        while self._writes and budget > 0:
            kind, items = self._writes[0]
            part = items[:budget]
            del items[:budget]
            if not items:
                self._writes.popleft()
            budget -= len(part)
            if kind == "install":
                self._install(part)
            else:
                self._remove(part)
        if self._writes and self._loop is not None:
            self._write_handle = self._loop.call_soon(self._drain_writes)

    @property
    def pending_writes(self) -> int:
        return sum(len(items) for _kind, items in self._writes)

    def _install(self, records: list[StateRecord]) -> None:
        assert self.table is not None
        try:
            result = self.table.apply_many(records)
        except OSError as exc:
            self.counters["install_errors"] += 1
            self._once("install", "statesync: installing states failed: %s", exc)
            return
        self.counters["states_installed"] += result.created
        self.counters["states_updated"] += result.updated
        self.counters["install_missing"] += result.missing
        for key, code in result.failed:
            reason = str(code)
            self.install_failures[reason] += 1
            self._once(f"install:{reason}", "statesync: kernel refused %s: errno %s", key, code)

    def _remove(self, keys: list[FlowKey]) -> None:
        assert self.table is not None
        try:
            result = self.table.delete_many(keys)
        except OSError as exc:
            self.counters["remove_errors"] += 1
            self._once("remove", "statesync: removing states failed: %s", exc)
            return
        self.counters["states_removed"] += result.deleted
        self.counters["remove_missing"] += result.missing

    def _ready_changed(self, action: ReadyChanged) -> None:
        self.ready = action.ready
        self.ready_reason = action.reason
        self.ready_changes.append(
            {
                "mono": round(time.monotonic(), 6),
                "wall": round(time.time(), 6),
                "ready": action.ready,
                "reason": action.reason,
            }
        )
        del self.ready_changes[:-20]
        if action.ready:
            log.info("statesync: ready (%s): CARP demotion lifted", action.reason)
        else:
            log.warning(
                "statesync: not ready (%s): CARP demoted by %d", action.reason, self.config.demote
            )
        self._on_ready(action.ready, action.reason)

    def _bulk_completed(self, action: BulkCompleted) -> None:
        self.bulk["count"] += 1
        self.bulk["last_duration_s"] = round(action.duration, 6)
        self.bulk["last_states"] = action.count
        if action.gave_up:
            self.bulk["gave_up"] += 1
            log.warning(
                "statesync: bulk update given up after %.1fs (%d states received); "
                "lifting the demotion without a complete table",
                action.duration,
                action.count,
            )
        else:
            log.info("statesync: bulk update of %d states in %.3fs", action.count, action.duration)

    def _once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)

    # ------------------------------------------------------------------ status

    @property
    def demotion(self) -> int:
        """What this subsystem currently adds to the CARP group's demote counter."""
        return 0 if self.ready else self.config.demote

    def status(self) -> dict[str, Any]:
        rep = self.replicator
        sock = self.sock
        stats = dict(rep.stats) if rep is not None else {}
        mirror = len(rep.table) if rep is not None else 0
        own = rep.own_states() if rep is not None else 0
        return {
            "enabled": True,
            "ready": self.ready,
            "reason": self.ready_reason,
            "demote": self.demotion,
            "ready_changes": list(self.ready_changes),
            "interface": self.config.interface,
            "peer": str(self.config.peer) if self.config.peer else "224.0.0.240",
            "keyed": self.config.replicator.key is not None,  # (never the key itself)
            "link_up": self._link_usable,
            "creatorid": rep.config.creatorid if rep is not None else None,
            "bulk_phase": rep.bulk_phase.value if rep is not None else None,
            "states": {
                "kernel": self.kernel_states,
                "mirror": mirror,
                "own": own,
                "peer": mirror - own,
            },
            "frames": {
                "tx": sock.tx_frames if sock else 0,
                "rx": sock.rx_frames if sock else 0,
                "tx_bytes": sock.tx_bytes if sock else 0,
                "rx_bytes": sock.rx_bytes if sock else 0,
            },
            "replicator": stats,
            "kernel": dict(self.counters),
            "pending_writes": self.pending_writes,
            "install_failures": dict(self.install_failures),
            "tx_errors": dict(sock.tx_errors) if sock else {},
            "bulk": dict(self.bulk),
            "drops": dict(sock.drops) if sock else {},
            "recent": self._recent_states(),
        }

    def _seen(self, keys: list[FlowKey]) -> None:
        for key in keys:
            with contextlib.suppress(ValueError):
                self._recent.remove(key)
            self._recent.append(key)

    def _recent_states(self) -> list[dict[str, Any]]:
        """Newest first, as the mirror holds them now; origin from the creator (own/peer), so
        the kernel's echo of a state installed from the peer still reads as the peer's."""
        rep = self.replicator
        out: list[dict[str, Any]] = []
        if rep is None:
            return out
        for key in reversed(list(self._recent)):
            rec = rep.table.get(key)
            if rec is None:
                continue  # gone since
            ip = ipaddress.ip_address
            proto = {1: "icmp", 6: "tcp", 17: "udp"}.get(key.proto, str(key.proto))
            out.append({
                "proto": proto,
                "src": f"{ip(key.src)}:{key.sport}",
                "dst": f"{ip(key.dst)}:{key.dport}",
                "state": rec.tcp_state.name if key.proto == 6 else None,
                "origin": "own" if rec.creatorid == rep.config.creatorid else "peer",
            })  # fmt: skip
        return out
