"""Kernel conntrack dumps off the event loop.

A dump of 50k entries takes about a second of pure-Python decoding. The event loop that runs the
replicator also runs CARP (adverts every second, every 12 ms in the fast class), so the dump
runs in a worker thread with its own ctnetlink socket (`KernelConntrackTable` is not
thread-safe) and its results come back to the loop as separate callbacks of at most `chunk`
records, each a short slice of loop time.

Incremental refresh: what the replicator needs from a periodic dump is the states whose packet
counters, TCP state, NAT or status/mark moved (conntrack sends no event for traffic). The worker
remembers each entry's signature from its previous dump and, unless the request is `full`,
forwards only the changed ones. A `full` dump (start-up, event overrun) forwards every entry and
the set of keys present, so the loop can also find states that vanished unseen.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from carpsim.errors import CarpsimError
from carpsim.net.conntrack import KernelConntrackTable, SyncExclusion
from carpsim.statesync.record import FlowKey, StateRecord

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 2000


@dataclass(frozen=True)
class DumpChunk:
    """Part of one dump's result, delivered on the loop in order."""

    generation: int
    records: list[StateRecord]
    final: bool = False
    total: int = 0
    """Entries the dump saw (final chunk only)."""
    present: frozenset[FlowKey] | None = None
    """Every key the dump saw (final chunk of a full dump only)."""
    error: str | None = None


Signature = tuple[object, ...]


def signature(rec: StateRecord) -> Signature:
    """What, if it changed, the replicator must hear about (the timeout always changes)."""
    return (rec.packets, rec.tcp_state, rec.nat_src, rec.nat_dst, rec.status, rec.mark)


class DumpWorker:
    """One thread, one netlink socket; `request()` from the loop, `on_chunk` back on the loop."""

    def __init__(
        self,
        exclude: SyncExclusion,
        loop: asyncio.AbstractEventLoop,
        on_chunk: Callable[[DumpChunk], None],
        *,
        chunk: int = DEFAULT_CHUNK,
        netns: str | None = None,
    ) -> None:
        self._exclude = exclude
        self._loop = loop
        self._on_chunk = on_chunk
        self._chunk = max(1, chunk)
        self._netns = netns
        self._requests: queue.SimpleQueue[tuple[int, bool] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ct-dump", daemon=True)
        self.dumps = 0
        self.forwarded = 0

    def start(self) -> None:
        self._thread.start()

    def request(self, generation: int, *, full: bool) -> None:
        self._requests.put((generation, full))

    def stop(self, timeout: float = 2.0) -> None:
        self._requests.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread

    def _post(self, item: DumpChunk) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._on_chunk, item)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            return False
        return True

    def _run(self) -> None:
        try:
            table = KernelConntrackTable(self._netns, exclude=self._exclude)
        except OSError as exc:
            log.warning("statesync: the dump worker cannot open ctnetlink: %s", exc)
            while (req := self._requests.get()) is not None:
                self._post(DumpChunk(req[0], [], final=True, error=str(exc)))
            return
        last: dict[FlowKey, Signature] = {}
        with table:
            while (req := self._requests.get()) is not None:
                generation, full = req
                last, ok = self._dump(table, generation, full, last)
                if not ok:
                    return

    def _dump(
        self,
        table: KernelConntrackTable,
        generation: int,
        full: bool,
        last: dict[FlowKey, Signature],
    ) -> tuple[dict[FlowKey, Signature], bool]:
        seen: dict[FlowKey, Signature] = {}
        batch: list[StateRecord] = []
        try:
            for rec in table.iter_records():
                sig = signature(rec)
                seen[rec.key] = sig
                if full or last.get(rec.key) != sig:
                    batch.append(rec)
                    if len(batch) >= self._chunk:
                        self.forwarded += len(batch)
                        if not self._post(DumpChunk(generation, batch)):
                            return seen, False
                        batch = []
        except (OSError, CarpsimError) as exc:
            # ConntrackError (the kernel's NLMSG_ERROR) is not an OSError. Whatever failed, the
            # loop must get a final chunk: until then it treats the dump as running and never
            # asks for another (no refresh, no overrun resync) while this thread would be gone.
            self._post(DumpChunk(generation, batch, final=True, error=str(exc)))
            # Keep the old signatures: the next dump compares against a complete picture.
            return last, True
        self.dumps += 1
        self.forwarded += len(batch)
        present = frozenset(seen) if full else None
        ok = self._post(DumpChunk(generation, batch, final=True, total=len(seen),
                                  present=present))  # fmt: skip
        return seen, ok
