"""The pfsync-style replicator machine (pure; docs/statesync-protocol.md §4).

Theory of operation
-------------------
One role-symmetric machine per node. It keeps a userspace *mirror* (`self.table`, an
InMemoryStateTable) of every state it knows: local ones (fed by the edge from conntrack events
through `local_inserted/updated/deleted` or `local_events`) and the peer's (received, and handed
to the edge as `InstallStates`/`RemoveStates`). Bulk transfers are served from the mirror, so
the machine never asks the edge for a kernel dump; at start-up the edge may seed it with
`local_snapshot`, and after a full dump `local_resync` finds our states that vanished unseen.

Identity: conntrack events carry no pfsync id. A local record with creatorid == id == 0 takes the
mirror's identity for its FlowKey, or a fresh (config.creatorid, counter) if the key is new.

The replicator is a composition of small machines, each with its own deadline:

* `ownership.py` - who drives each flow: the (Owner, FlowInput) -> Rule table every local event
  and received record goes through, expected kernel echoes and tombstones;
* `outbox.py` - coalesced INS/UPD/DEL_C/UPD_REQ (flush) and the UPD_C liveness refresh;
* `bulk.py` - the bulk requester (not ready until BUS END, or given up) and server;
* `transport.py` - the XSEQ extension: sequence, ACK, NACK, resend (reliability.py).

This module keeps lifecycle and readiness, and dispatches received sections through
`self._handlers` (one method per action). Once a bulk has *completed* (BUS END), the node holds
the table: a later sync-link flap neither makes it not ready nor re-requests a bulk (OpenBSD
only requests at start-up). Ready = link up and bulk finished; not ready => CARP demoted (pfsync).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from carpsim.errors import DecodeError
from carpsim.statesync import codec
from carpsim.statesync.bulk import BulkPhase, BulkRequester, BulkServer, RequestOutcome
from carpsim.statesync.codec import BulkStatus, CompressedUpdate, Frame, Section, StateRef
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import (
    UPDC_TRAFFIC,
    XSEQ_BULK,
    Act,
    BusStatus,
    SyncDropReason,
)
from carpsim.statesync.events import (
    Action,
    BulkCompleted,
    CountDrop,
    CtChange,
    LocalEvent,
    ReadyChanged,
    ResyncNeeded,
)
from carpsim.statesync.flows import Changes, Flows
from carpsim.statesync.outbox import Outbox
from carpsim.statesync.ownership import (
    FlowInput,
    Owner,
    Ownership,
)
from carpsim.statesync.record import FlowKey, StateRecord, tcp_progress
from carpsim.statesync.serial import seq_lt
from carpsim.statesync.table import InMemoryStateTable
from carpsim.statesync.transport import Transport

__all__ = ["BulkPhase", "Replicator"]

_INS = Act.INS
_UPD = Act.UPD
_DRIVEN = (Owner.LOCAL, Owner.CLAIMED)


@dataclass
class _Changes:
    """Kernel changes a received frame causes, emitted in order (before a BUS, and at the end)."""

    installed: list[StateRecord] = field(default_factory=list)
    removed: list[FlowKey] = field(default_factory=list)


def _peer_input(cur: StateRecord, rec: StateRecord) -> FlowInput:
    """Classify a full record for a key we drive."""
    if (rec.creatorid, rec.id) == (cur.creatorid, cur.id) and tcp_progress(
        rec.tcp_state
    ) <= tcp_progress(cur.tcp_state):
        return FlowInput.PEER_COPY
    if (rec.creatorid, rec.id) < (cur.creatorid, cur.id):
        return FlowInput.PEER_LOSER
    return FlowInput.PEER_STATE


def _upd_c_input(cur: StateRecord, u: CompressedUpdate) -> FlowInput:
    if tcp_progress(u.tcp_state) > tcp_progress(cur.tcp_state):
        return FlowInput.PEER_PROGRESS
    return FlowInput.PEER_TRAFFIC if u.flags & UPDC_TRAFFIC else FlowInput.PEER_REFRESH


class Replicator:
    """Pure state-sync machine. Every input takes `now` and returns a list of actions."""

    def __init__(self, config: ReplicatorConfig, rng: random.Random) -> None:
        self.config = config
        self.table = InMemoryStateTable()
        self.epoch = rng.getrandbits(32) | 1
        self.stats: dict[str, int] = {}
        """Plain counters for metrics (frames/records sent and received, resends, ...)."""
        self._started = False
        self._link_up = True
        self.ready = False
        self.ready_reason = "starting"
        # A bulk completed (BUS END): from then on link flaps do not cost readiness.
        self._in_sync = False
        self.own = Ownership()
        self.outbox = Outbox(config, self.own, self.table, self.stats)
        self.transport = Transport(config, self.epoch, self.stats)
        self.requester = BulkRequester(config)
        self.server = BulkServer(config)
        first_id = (rng.getrandbits(31) << 32) | 1
        self.flows = Flows(
            config,
            table=self.table,
            own=self.own,
            outbox=self.outbox,
            bulk=self.requester,
            stats=self.stats,
            first_id=first_id,
        )
        flows = self.flows
        self._handlers: dict[int, Callable[[float, Section, Changes, list[Action]], None]] = {
            Act.INS: flows.on_states,
            Act.UPD: self._on_upd,
            Act.UPD_C: flows.on_upd_c,
            Act.DEL_C: flows.on_del_c,
            Act.UPD_REQ: self._on_upd_req,
            Act.CLR: flows.on_clr,
            Act.BUS: self._on_bus,
        }

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        if not self._started:
            return None
        cands = [self.outbox.next_deadline(self._link_up), self.requester.next_deadline()]
        if self._link_up:
            cands += (self.server.next_deadline(), self.transport.next_deadline())
        times = [t for t in cands if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Action]:
        """:param now: monotonic seconds; fires every deadline that has passed."""
        out: list[Action] = []
        if not self._started:
            return out
        req = self.requester.next_deadline()
        if req is not None and now >= req:
            self._bulk_request_expired(now, out)
        if self._link_up:
            ob = self.outbox
            if ob.flush_at is not None and now >= ob.flush_at:
                self._flush(now, out)
            serve = self.server.next_deadline()
            if serve is not None and now >= serve:
                if self.server.active:
                    self._serve_tick(now, out)
                else:
                    self._serve_start(now, out, pushed=False)
            self.transport.on_timer(now, out)
        refresh = self.outbox.refresh_at
        if refresh is not None and now >= refresh:
            self.outbox.refresh_at = now + self.config.refresh_interval
            self.flows.expire(now)
            if self._link_up:
                self._refresh(now, out)
        return out

    # ------------------------------------------------------------------ lifecycle inputs

    def started(self, now: float) -> list[Action]:
        """The daemon came up: announce not-ready and ask the peer for everything."""
        out: list[Action] = []
        if self._started:
            return out
        self._started = True
        self.outbox.refresh_at = now + self.config.refresh_interval
        self.ready_reason = "bulk_pending" if self._link_up else "link_down"
        out.append(ReadyChanged(False, self.ready_reason))
        if self._link_up:
            self._bulk_request_start(now, out)
        return out

    def link_up(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self._link_up:
            return out
        self._link_up = True
        if self._started:
            if not self._in_sync:
                self._bulk_request_start(now, out)
            self._set_ready(out)
            if self.outbox.has_pending():
                self.outbox.flush_at = now
        return out

    def link_down(self, now: float) -> list[Action]:
        out: list[Action] = []
        if not self._link_up:
            return out
        self._link_up = False
        if self._started:
            self._set_ready(out)
        return out

    def _set_ready(self, out: list[Action], done_reason: str | None = None) -> None:
        done = self.requester.phase is BulkPhase.DONE
        if self._in_sync and done:
            ready, reason = True, done_reason or self.ready_reason
        elif not self._link_up:
            ready, reason = False, "link_down"
        elif not done:
            ready, reason = False, "bulk_pending"
        else:
            ready, reason = True, done_reason or self.ready_reason
        if ready != self.ready:
            self.ready, self.ready_reason = ready, reason
            out.append(ReadyChanged(ready, reason))
        else:
            self.ready_reason = reason

    # ------------------------------------------------------------------ local (kernel) inputs

    def local_inserted(self, now: float, record: StateRecord) -> list[Action]:
        """A conntrack NEW event (or any local state the edge wants replicated)."""
        out: list[Action] = []
        self.flows.local_change(now, record, out)
        return self._maybe_flush_now(now, out)

    def local_updated(self, now: float, record: StateRecord) -> list[Action]:
        """A conntrack UPDATE event or a fresh dump entry (counters/timeout moved)."""
        return self.local_inserted(now, record)

    def local_snapshot(self, now: float, records: Iterable[StateRecord]) -> list[Action]:
        """Seed or refresh from a kernel dump (same rules as `local_updated` per record)."""
        out: list[Action] = []
        for rec in records:
            self.flows.local_change(now, rec, out)
        return self._maybe_flush_now(now, out)

    def local_deleted(self, now: float, key: FlowKey) -> list[Action]:
        """A conntrack DESTROY event; unknown keys are ignored (echo of a RemoveStates)."""
        out: list[Action] = []
        if self.flows.local_delete(now, key, out):
            self._maybe_flush_now(now, out)
        return out

    def local_events(self, now: float, events: Iterable[LocalEvent]) -> list[Action]:
        """A batch of conntrack events in kernel order (one timer re-arm per batch).

        An overrun (events were lost) asks the edge for a full dump: `ResyncNeeded`, answered
        by `local_snapshot` + `local_resync`.
        """
        out: list[Action] = []
        for kind, item in events:
            if kind is CtChange.DESTROY:
                assert isinstance(item, FlowKey)
                self.flows.local_delete(now, item, out)
            elif kind is CtChange.OVERRUN:
                out.append(ResyncNeeded())
            else:
                assert isinstance(item, StateRecord)
                self.flows.local_change(now, item, out)
        return self._maybe_flush_now(now, out)

    def local_resync(
        self, now: float, present: frozenset[FlowKey], touched: frozenset[FlowKey]
    ) -> list[Action]:
        """After a full kernel dump: states we created that the dump did not see (`present`)
        and no event mentioned while it ran (`touched`) were deleted unseen."""
        cid = self.config.creatorid
        gone = [
            r.key
            for r in self.table
            if r.creatorid == cid and r.key not in present and r.key not in touched
        ]
        out: list[Action] = []
        for key in gone:
            self.flows.local_delete(now, key, out)
        return self._maybe_flush_now(now, out)

    def _maybe_flush_now(self, now: float, out: list[Action]) -> list[Action]:
        if self._link_up and self.outbox.full():
            self._flush(now, out)
        return out

    # ------------------------------------------------------------------ received frames

    def frame_received(self, now: float, data: bytes) -> list[Action]:
        """A pfsync payload arrived on the sync link (the edge checked the interface and the
        IPv4 header with `codec.decode_packet`)."""
        out: list[Action] = []
        refused = self.transport.authenticate(data)
        if refused is not None:
            out.append(refused)
            return out
        try:
            frame = codec.decode_frame(data)
        except DecodeError as exc:
            out.append(CountDrop(SyncDropReason(exc.reason), exc.detail))
            return out
        self._count("frames_rx")
        hdr = frame.seq
        if hdr is None:
            self._process(frame, now, out)
            return out
        if hdr.epoch == self.epoch:
            out.append(self.transport.loop_drop())
            return out
        if (
            hdr.ack_epoch == self.epoch
            and self.transport.sender.ack_valid(hdr.ack)
            and seq_lt(self.own.peer_ack, hdr.ack)
        ):
            self.own.peer_ack = hdr.ack
        for f in self.transport.receive(now, hdr, frame, self._link_up, out, size=len(data)):
            self._process(f, now, out)
        if self.transport.take_abandoned() and not self.server.active:
            self._serve_start(now, out, pushed=True)
        if self._link_up and self.transport.ack_due_now(now):
            self.transport.send_control(now, out)
        return out

    def _process(self, frame: Frame, now: float, out: list[Action]) -> None:
        changes = Changes()
        handlers = self._handlers
        for section in frame.sections:
            handler = handlers.get(section.action)
            if handler is not None:
                handler(now, section, changes, out)
        self.flows.emit(now, changes, out)

    def _on_upd(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        self.flows.on_states(now, section, ch, out)
        self.requester.progress(now, len(section.items))

    def _on_upd_req(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        bulk = False
        for ref in section.items:
            assert isinstance(ref, StateRef)
            if ref.id == 0 and ref.creatorid == 0:
                bulk = True
                continue
            cur = self.table.by_id(ref.creatorid, ref.id)
            if cur is not None:
                self.own.announce.setdefault(cur.key, Act.UPD)
                self.outbox.arm(now)
        if bulk:
            if self.server.admit(now):
                self._serve_start(now, out, pushed=False)
            else:
                self._count("bulk_requests_coalesced")

    def _on_bus(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        for bus in section.items:
            assert isinstance(bus, BulkStatus)
            if bus.creatorid == self.config.creatorid:
                continue
            self.flows.emit(now, ch, out)
            if bus.status is BusStatus.START:
                local = self.own.local
                cid = bus.creatorid
                candidates = {
                    r.key for r in self.table if r.creatorid == cid and r.key not in local
                }
                self.requester.start_seen(now, cid, candidates)
            elif not self._bulk_end_seen(now, bus.creatorid, out):
                out.append(CountDrop(SyncDropReason.BADBUS, "BUS END without its BUS START"))

    # ------------------------------------------------------------------ bulk

    def _bulk_request_start(self, now: float, out: list[Action]) -> None:
        self.transport.send_unsequenced([self.requester.start(now)], out)

    def _bulk_request_expired(self, now: float, out: list[Action]) -> None:
        req = self.requester
        outcome = req.expired(now, self._link_up)
        if outcome is RequestOutcome.RETRY:
            self.transport.send_unsequenced([req.request(now)], out)
        elif outcome is RequestOutcome.GAVE_UP:
            self.flows.synced()
            out.append(BulkCompleted(now - req.first_at, req.count, gave_up=True))
            self._set_ready(out, "bulk_gave_up")

    def _bulk_end_seen(self, now: float, creatorid: int, out: list[Action]) -> bool:
        seen = self.requester.end_seen(creatorid)
        if seen is None:
            return False
        stale, completed = seen
        self.flows.forget_stale(now, stale, out)
        if completed:
            self.flows.synced()
            req = self.requester
            out.append(BulkCompleted(now - req.first_at, req.count))
            self._in_sync = True
            self._set_ready(out, "bulk_done")
        return True

    def _serve_start(self, now: float, out: list[Action], *, pushed: bool) -> None:
        if not self._link_up:
            return  # the requester retries; a push is re-triggered by the next loss
        excluded = self.flows.excluded
        keys = [r.key for r in self.table if not excluded(r.key)]
        self._send(now, [self.server.start(now, keys, pushed=pushed)], out, XSEQ_BULK)
        self._serve_tick(now, out)

    def _serve_tick(self, now: float, out: list[Action]) -> None:
        bodies, served = self.server.tick(now, self.table.get, self.transport.backlog)
        self._send(now, bodies, out, XSEQ_BULK)
        if served is not None:
            out.append(served)
            self.server.finish()

    # ------------------------------------------------------------------ outgoing

    def _flush(self, now: float, out: list[Action]) -> None:
        if not self._link_up:
            self.outbox.flush_at = None
            return
        reqs, data = self.outbox.flush()
        self.transport.send_unsequenced(reqs, out)
        self._send(now, data, out, 0)

    def _refresh(self, now: float, out: list[Action]) -> None:
        next_seq = self.transport.next_seq if self.config.reliable else None
        self._send(now, self.outbox.refresh(now, next_seq), out, 0)

    def _send(self, now: float, bodies: list[bytes], out: list[Action], flags: int) -> None:
        self.transport.send(now, bodies, out, flags)
        if (
            self.config.reliable
            and self.transport.take_abandoned()
            and self.transport.receiver.peer_epoch
            and not self.server.active
        ):
            # Unacknowledged data was dropped: only a full transfer can cover it now.
            self._serve_start(now, out, pushed=True)

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # ------------------------------------------------------------------ introspection

    @property
    def bulk_phase(self) -> BulkPhase:
        return self.requester.phase

    @property
    def in_sync(self) -> bool:
        """A bulk update completed: link flaps no longer affect readiness."""
        return self._in_sync

    @property
    def serving_bulk(self) -> bool:
        return self.server.active

    def pending_count(self) -> int:
        return self.outbox.pending_count()

    def own_states(self) -> int:
        """Mirror states this node created (kept by the table: no walk)."""
        return self.table.count_creator(self.config.creatorid)
