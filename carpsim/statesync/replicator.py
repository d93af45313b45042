"""The pfsync-style replicator machine (pure; statesync-spec §1.6-1.7, §4.3).

Theory of operation
-------------------
One role-symmetric machine per node. It keeps a userspace *mirror* (`self.table`, an
InMemoryStateTable) of every state it knows: local ones (fed by the edge from conntrack events
through `local_inserted/updated/deleted`) and the peer's (received, and handed to the edge as
`InstallStates`/`RemoveStates`). Bulk transfers are served from the mirror, so the machine never
asks the edge for a kernel dump; at start-up the edge may seed it with `local_snapshot`.

Identity: conntrack events carry no pfsync id. A local record with creatorid == id == 0 takes the
mirror's identity for its FlowKey, or a fresh (config.creatorid, counter) if the key is new.

What goes out:
* material local changes (new key, TCP state, NAT) -> full INS/UPD, coalesced per key for
  `flush_interval` (or at once when a frame's worth is pending); deletes -> DEL_C.
* counter-only changes (traffic, which in the kernel refreshes the timeout) -> UPD_C with the
  remaining timeout, at most once per `refresh_interval`; plus a slow round-robin sweep of
  `sweep_per_interval` local states, so idle-but-alive flows are refreshed too.
* a local event identical in TCP state and NAT to the mirror is the kernel echoing our own
  install and is not re-sent (pfsync never re-broadcasts received changes).

Bulk (spec §1.6): `started`/`link_up` send UPD_REQ 0/0 (unsequenced) every
`bulk_retry_interval` until BUS START, then wait for BUS END with a silence timeout of
`bulk_timeout`; after `bulk_max_tries` requests the node becomes ready anyway (bulk_gave_up).
Once a bulk has *completed* (BUS END), the node holds the table: a later sync-link flap neither
makes it not ready nor re-requests a bulk (OpenBSD only requests at start-up). What it misses
while the link is down comes back through the reliability layer (resend queue, NACK), or, if
the peer had to give frames up, through the peer's bulk push.
The server answers with BUS START, paced UPD frames from a key snapshot, BUS END. On BUS END the
receiver also drops states of that creator that the bulk did not mention (deletes lost in an
abandoned gap). Ready = link up and bulk finished; not ready => the edge demotes CARP (§1.7).

Reliability (config.reliable): every data frame carries an XSEQ; see reliability.py.
"""

from __future__ import annotations

import enum
import random
from dataclasses import replace

from carpsim.errors import DecodeError
from carpsim.statesync import codec
from carpsim.statesync.codec import (
    BulkStatus,
    Clear,
    CompressedUpdate,
    Frame,
    NackRange,
    StateRef,
)
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import (
    REF_LEN,
    STATE_1400_LEN,
    SUBHEADER_LEN,
    UPD_C_LEN,
    UPDC_TRAFFIC,
    XSEQ_BULK,
    XSEQ_RESTART,
    Act,
    BusStatus,
    SyncDropReason,
)
from carpsim.statesync.events import (
    Action,
    BulkCompleted,
    BulkServed,
    CountDrop,
    InstallStates,
    PeerRestarted,
    ReadyChanged,
    RemoveStates,
    Transmit,
)
from carpsim.statesync.record import FlowKey, StateRecord, tcp_progress
from carpsim.statesync.reliability import ReliableReceiver, ReliableSender
from carpsim.statesync.table import InMemoryStateTable

_REQ_ALL = codec.section_bytes(Act.UPD_REQ, [codec.REF.pack(0, 0)])
_INS = Act.INS
_UPD = Act.UPD


class BulkPhase(enum.Enum):
    IDLE = "idle"
    REQUESTED = "requested"
    RECEIVING = "receiving"
    DONE = "done"


def _pack_bodies(groups: list[tuple[int, list[bytes], int]], budget: int) -> list[bytes]:
    """Fill frames: groups of (action, packed records, record size) -> list of frame bodies."""
    bodies: list[bytes] = []
    parts: list[bytes] = []
    used = 0
    for action, records, size in groups:
        i = 0
        while i < len(records):
            room = (budget - used - SUBHEADER_LEN) // size
            if room <= 0:
                bodies.append(b"".join(parts))
                parts, used = [], 0
                continue
            chunk = records[i : i + room]
            parts.append(codec.section_bytes(action, chunk))
            used += SUBHEADER_LEN + size * len(chunk)
            i += len(chunk)
    if parts:
        bodies.append(b"".join(parts))
    return bodies


def _copy_of_ours(cur: StateRecord, rec: StateRecord) -> bool:
    """`rec` names the connection `cur` (same identity) and shows no TCP progress beyond it."""
    return (rec.creatorid, rec.id) == (cur.creatorid, cur.id) and tcp_progress(
        rec.tcp_state
    ) <= tcp_progress(cur.tcp_state)


class Replicator:
    """Pure state-sync machine. Every input takes `now` and returns a list of actions."""

    def __init__(self, config: ReplicatorConfig, rng: random.Random) -> None:
        self.config = config
        self.table = InMemoryStateTable()
        self.epoch = rng.getrandbits(32) | 1
        self._next_id = (rng.getrandbits(31) << 32) | 1
        self._sender = ReliableSender(self.epoch, config.resend_queue_frames)
        self._receiver = ReliableReceiver(config.reorder_window)
        self._excluded = config.excluded_raw()
        self._budget = config.frame_budget()
        self._started = False
        self._link_up = True
        self.ready = False
        self.ready_reason = "starting"
        # A bulk completed (BUS END): from then on link flaps do not cost readiness.
        self._in_sync = False
        # bulk request (we are the receiver)
        self.bulk_phase = BulkPhase.IDLE
        self._req_tries = 0
        self._req_deadline: float | None = None
        self._req_first_at = 0.0
        self._req_count = 0
        self._sweep_creator: int | None = None
        self._sweep_keys: set[FlowKey] = set()
        # bulk serve (we are the sender)
        self._serve_keys: list[FlowKey] | None = None
        self._serve_pos = 0
        self._serve_at = 0.0
        self._serve_started = 0.0
        self._serve_pushed = False
        self._serve_count = 0
        # incremental output
        self._pending_full: dict[FlowKey, int] = {}
        self._pending_dels: dict[tuple[int, int], None] = {}
        self._pending_reqs: dict[tuple[int, int], None] = {}
        self._pending_updc: dict[FlowKey, None] = {}
        self._flush_at: float | None = None
        self._refresh_at: float | None = None
        # locally-driven states -> when their timeout was read
        self._local: dict[FlowKey, float] = {}
        self._sweep_cursor: list[FlowKey] = []
        self._restart_flag = XSEQ_RESTART
        # key -> expected kernel echoes of our own Install/RemoveStates:
        # (when, tcp, nat_src, nat_dst), tcp None for a removal. Events are asynchronous at
        # the edge, so by the time an echo arrives the mirror may have moved on; matching it
        # against this list keeps it from being mistaken for a new local flow (and replicated
        # back as a zombie).
        self._echo: dict[FlowKey, list[tuple[float, object, object, object]]] = {}
        # identities we deleted locally -> when: a record for one of them that crossed our
        # DEL_C on the wire (e.g. in the peer's bulk) must not resurrect the state here.
        self._tombstones: dict[tuple[int, int], float] = {}
        # Claims (see `_claiming`): key -> seq of the last frame that carried our refresh with
        # UPDC_TRAFFIC for it (0 in plain mode); `_peer_ack`: the peer's cumulative ACK of our
        # stream, i.e. everything up to it was processed there.
        self._claims: dict[FlowKey, int] = {}
        self._peer_ack = 0
        self.stats: dict[str, int] = {}
        """Plain counters for metrics (frames/records sent and received, resends, ...)."""

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        if not self._started:
            return None
        cands: list[float] = []
        if self._started:
            if self._refresh_at is not None:
                cands.append(self._refresh_at)
            if self._req_deadline is not None:
                cands.append(self._req_deadline)
        if self._link_up:
            if self._flush_at is not None:
                cands.append(self._flush_at)
            if self._serve_keys is not None:
                cands.append(self._serve_at)
            if self.config.reliable:
                r = self._receiver
                for t in (r.ack_due, r.nack_due, self._sender.rto_deadline):
                    if t is not None:
                        cands.append(t)
        return min(cands) if cands else None

    def on_timer(self, now: float) -> list[Action]:
        """:param now: monotonic seconds; fires every deadline that has passed."""
        out: list[Action] = []
        if not self._started:
            return out
        if self._req_deadline is not None and now >= self._req_deadline:
            self._bulk_request_expired(now, out)
        if self._link_up:
            if self._flush_at is not None and now >= self._flush_at:
                self._flush(now, out)
            if self._serve_keys is not None and now >= self._serve_at:
                self._serve_tick(now, out)
            if self.config.reliable:
                self._reliability_timers(now, out)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = now + self.config.refresh_interval
            self._expire_echoes(now)
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
        self._refresh_at = now + self.config.refresh_interval
        out.append(ReadyChanged(False, "bulk_pending" if self._link_up else "link_down"))
        self.ready_reason = out[-1].reason  # type: ignore[union-attr]
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
            if self._has_pending():
                self._flush_at = now
        return out

    def link_down(self, now: float) -> list[Action]:
        out: list[Action] = []
        if not self._link_up:
            return out
        self._link_up = False
        if self._started:
            self._set_ready(out)
        return out

    # ------------------------------------------------------------------ local (kernel) inputs

    def _excluded_record(self, key: FlowKey) -> bool:
        return key.proto in self.config.excluded_protos or (
            bool(self._excluded) and (key.src in self._excluded or key.dst in self._excluded)
        )

    def local_inserted(self, now: float, record: StateRecord) -> list[Action]:
        """A conntrack NEW event (or any local state the edge wants replicated)."""
        self._local_change(now, record)
        return self._maybe_flush_now(now)

    def local_updated(self, now: float, record: StateRecord) -> list[Action]:
        """A conntrack UPDATE event or a fresh dump entry (counters/timeout moved)."""
        self._local_change(now, record)
        return self._maybe_flush_now(now)

    def local_snapshot(self, now: float, records: list[StateRecord]) -> list[Action]:
        """Seed or refresh from a kernel dump (same rules as `local_updated` per record)."""
        for rec in records:
            self._local_change(now, rec)
        return self._maybe_flush_now(now)

    def local_deleted(self, now: float, key: FlowKey) -> list[Action]:
        """A conntrack DESTROY event; unknown keys are ignored (echo of a RemoveStates)."""
        if key in self._echo and self._consume_echo(now, key, None, None, None):
            return []
        cur = self.table.get(key)
        if cur is None:
            return []
        self.table.delete(key)
        owned = self._local.pop(key, None) is not None
        self._pending_updc.pop(key, None)
        self._claims.pop(key, None)
        self._sweep_keys.discard(key)
        # Even with its INS still pending the peer may know the state (a bulk reads the
        # table directly), so the DEL_C always goes out; deletes are idempotent.
        self._pending_full.pop(key, None)
        if not owned:
            # A state the peer drives (we only hold its copy) ended here, typically by
            # expiring: the owner decides its life. If it is still alive there, the owner's
            # next refresh names an id we no longer know and we fetch it again (UPD_REQ).
            return []
        self._retire(now, cur)
        return self._maybe_flush_now(now)

    def _hand_over(self, key: FlowKey) -> bool:
        """The peer drives this state from now on; True if we drove it.

        Traffic we saw but did not refresh yet is dropped with it: refreshed with
        UPDC_TRAFFIC after we gave the state up, it would take the state from the peer while
        we no longer drive it either (fuzz: nobody drove the flow).
        """
        self._claims.pop(key, None)
        self._pending_updc.pop(key, None)
        if self._local.pop(key, None) is None:
            return False
        self._count("handovers_rx")
        return True

    def _claiming(self, key: FlowKey) -> bool:
        """We forward this flow as far as the peer can know: traffic not yet refreshed, or our
        last refresh reporting traffic not yet processed by the peer.

        A refresh with UPDC_TRAFFIC takes a state only from a receiver not claiming it. Two
        crossing ones cannot each take it: node A gives up only after B processed A's last
        claim, so B would have processed A's claim before A processed B's, and vice versa.
        """
        if key in self._pending_updc:
            return True
        seq = self._claims.get(key)
        if seq is None:
            return False
        if seq <= self._peer_ack:
            del self._claims[key]
            return False
        return True

    def _retire(self, now: float, gone: StateRecord) -> None:
        """A state we drove ended here: DEL_C its identity, refuse it if it comes back."""
        ident = (gone.creatorid, gone.id)
        self._pending_full.pop(gone.key, None)
        self._pending_updc.pop(gone.key, None)
        self._pending_dels[ident] = None
        self._tombstones[ident] = now
        self._arm_flush(now)

    def _local_change(self, now: float, rec: StateRecord) -> None:
        key = rec.key
        if self._excluded_record(key):
            return
        if key in self._echo and self._consume_echo(
            now, key, rec.tcp_state, rec.nat_src, rec.nat_dst
        ):
            return
        cur = self.table.get(key)
        if rec.id == 0 and rec.creatorid == 0:
            if cur is not None and tcp_progress(rec.tcp_state) >= tcp_progress(cur.tcp_state):
                rec = replace(rec, creatorid=cur.creatorid, id=cur.id)
            else:
                rec = replace(rec, creatorid=self.config.creatorid, id=self._next_id)
                self._next_id += 1
        self._sweep_keys.discard(key)
        if cur is None or (cur.creatorid, cur.id) != (rec.creatorid, rec.id):
            if cur is not None:
                self._retire(now, cur)
            self.table.put(rec)
            self._pending_full[key] = _INS
        elif (
            # (a local TCP state that went backwards got a new identity above: the tuple
            # was reused by a new connection, which peers accept as a replacement)
            cur.tcp_state != rec.tcp_state
            or cur.nat_src != rec.nat_src
            or cur.nat_dst != rec.nat_dst
        ):
            self.table.put(rec)
            self._pending_full.setdefault(key, _UPD)
        elif sum(rec.packets) > sum(cur.packets):
            self.table.put(rec)
            self._pending_updc[key] = None
            self._local[key] = now
            return
        else:
            return  # echo of our own install, or nothing the peer needs
        self._local[key] = now
        self._pending_updc.pop(key, None)
        self._arm_flush(now)

    # ------------------------------------------------------------------ received frames

    def frame_received(self, now: float, data: bytes) -> list[Action]:
        """A pfsync payload arrived on the sync link (edge already checked TTL 255, interface)."""
        out: list[Action] = []
        try:
            frame = codec.decode_frame(data)
        except DecodeError as exc:
            out.append(CountDrop(exc.reason, exc.detail))
            return out
        self._count("frames_rx")
        hdr = frame.seq
        if hdr is None:
            self._process(frame, now, out)
            return out
        if hdr.epoch == self.epoch:
            out.append(CountDrop(SyncDropReason.LOOP, "own epoch"))
            return out
        self._sender.on_ack(hdr.ack_epoch, hdr.ack, now, self.config.resend_timeout)
        if hdr.ack_epoch == self.epoch and hdr.ack > self._peer_ack:
            self._peer_ack = hdr.ack
        cfg = self.config
        if hdr.ack_epoch == self.epoch and self._link_up:
            for section in frame.sections:
                if section.action == Act.XNACK:
                    ranges = [i for i in section.items if isinstance(i, NackRange)]
                    limit = cfg.resend_burst * 4
                    for seq in self._sender.on_nack(ranges, now, limit, cfg.resend_timeout / 2):
                        self._resend(seq, out)
        frames, rebased, drop = self._receiver.accept(hdr, frame, now, self.config.ack_delay)
        if rebased is not None:
            out.append(PeerRestarted(rebased, hdr.epoch))
            if hdr.ack_epoch != self.epoch:
                # A new incarnation that has not heard our stream yet: it requests a bulk,
                # which supersedes everything queued for its predecessor.
                self._sender.abandon_all()
                self._sender.take_abandoned()
                self._restart_flag = XSEQ_RESTART
        if drop is not None:
            out.append(CountDrop(drop, f"seq {hdr.seq}"))
        for f in frames:
            self._process(f, now, out)
        if self._sender.take_abandoned() and self._serve_keys is None:
            self._serve_start(now, out, pushed=True)
        if self._link_up and (
            self._receiver.unacked >= self.config.ack_every or self._receiver.nack_due == now
        ):
            self._send_control(now, out)
        return out

    def _process(self, frame: Frame, now: float, out: list[Action]) -> None:
        installed: list[StateRecord] = []
        removed: list[FlowKey] = []
        table = self.table
        for section in frame.sections:
            act = section.action
            if act in (_INS, _UPD):
                for rec in section.items:
                    assert isinstance(rec, StateRecord)
                    key = rec.key
                    if key.proto in self.config.excluded_protos:
                        continue
                    if self._tombstones and (rec.creatorid, rec.id) in self._tombstones:
                        out.append(CountDrop(SyncDropReason.STALE, "deleted here"))
                        continue
                    cur = table.get(key)
                    if cur is not None and key in self._local and _copy_of_ours(cur, rec):
                        # A state we drive coming back: a bulk re-states every state the
                        # server holds, our own included, possibly older than what we sent
                        # since. Only the peer seeing the flow progress is news; anything else
                        # must neither overwrite our kernel's version nor take the state from
                        # us (our later delete would pass for the expiry of a peer-driven
                        # copy and never go out). Ours is on its way to the peer already.
                        if (rec.tcp_state, rec.nat_src, rec.nat_dst) != (
                            cur.tcp_state,
                            cur.nat_src,
                            cur.nat_dst,
                        ):
                            out.append(CountDrop(SyncDropReason.STALE, "copy of a local state"))
                        continue
                    if (
                        cur is not None
                        and key in self._local
                        and (rec.creatorid, rec.id) < (cur.creatorid, cur.id)
                    ):
                        # Both nodes created this tuple (split brain): the larger identity
                        # wins on both sides, so they converge; ours is already on its way.
                        out.append(CountDrop(SyncDropReason.COLLISION, "local state kept"))
                        continue
                    if table.apply(rec):
                        installed.append(rec)
                        if (
                            self._hand_over(key)
                            and cur is not None
                            and ((cur.creatorid, cur.id) != (rec.creatorid, rec.id))
                        ):
                            # Our own state under this tuple lost (split-brain collision, or
                            # the peer reused the tuple): it ends here like a local delete.
                            # Unannounced, a copy the peer took while its own was gone (our
                            # INS crossed its DEL_C) would outlive it there.
                            self._retire(now, cur)
                    elif table.get(key) != rec:
                        out.append(CountDrop(SyncDropReason.STALE, "tcp state would go back"))
                    self._sweep_keys.discard(key)
                if act == _UPD and self.bulk_phase is BulkPhase.RECEIVING:
                    # only bulk-shaped progress keeps a transfer alive, not ACKs or refreshes
                    self._req_count += len(section.items)
                    self._req_deadline = now + self.config.bulk_timeout
            elif act == Act.UPD_C:
                for u in section.items:
                    assert isinstance(u, CompressedUpdate)
                    cur = table.by_id(u.creatorid, u.id)
                    if cur is None:
                        if (u.creatorid, u.id) in self._tombstones:
                            continue
                        self._pending_reqs[(u.creatorid, u.id)] = None
                        self._arm_flush(now)
                        continue
                    new = replace(cur, tcp_state=u.tcp_state, timeout=u.timeout,
                                  status=u.status, mark=u.mark)  # fmt: skip
                    if tcp_progress(u.tcp_state) < tcp_progress(cur.tcp_state):
                        out.append(CountDrop(SyncDropReason.STALE, "compressed update"))
                        continue
                    applied = table.apply(new)
                    if applied:
                        installed.append(new)
                    key = cur.key
                    if key not in self._local:
                        continue
                    if tcp_progress(u.tcp_state) > tcp_progress(cur.tcp_state) or (
                        u.flags & UPDC_TRAFFIC and not self._claiming(key)
                    ):
                        # The peer saw the flow progress, or forwards it while we stopped
                        # (failover): it drives the state from now on.
                        self._hand_over(key)
                    elif applied:
                        # Both drive it (an idle peer's sweep, or both forward it): we keep
                        # driving, with the peer's timeout as the latest reading.
                        self._local[key] = now
            elif act == Act.DEL_C:
                for ref in section.items:
                    assert isinstance(ref, StateRef)
                    gone = table.delete_by_id(ref.creatorid, ref.id)
                    if gone is not None:
                        removed.append(gone)
                        self._local.pop(gone, None)
                        self._claims.pop(gone, None)
                        self._pending_full.pop(gone, None)
                        self._pending_updc.pop(gone, None)
            elif act == Act.UPD_REQ:
                for ref in section.items:
                    assert isinstance(ref, StateRef)
                    if ref.id == 0 and ref.creatorid == 0:
                        self._serve_start(now, out, pushed=False)
                        continue
                    cur = table.by_id(ref.creatorid, ref.id)
                    if cur is not None:
                        self._pending_full.setdefault(cur.key, _UPD)
                        self._arm_flush(now)
            elif act == Act.CLR:
                for clr in section.items:
                    assert isinstance(clr, Clear)
                    if clr.creatorid != self.config.creatorid:
                        removed.extend(table.clear_creator(clr.creatorid))
                        for k in removed:
                            self._local.pop(k, None)
            elif act == Act.BUS:
                for bus in section.items:
                    assert isinstance(bus, BulkStatus)
                    if bus.creatorid == self.config.creatorid:
                        continue
                    if installed or removed:
                        self._emit_changes(now, installed, removed, out)
                        installed, removed = [], []
                    if bus.status is BusStatus.START:
                        self._bulk_start_seen(now, bus.creatorid)
                    else:
                        self._bulk_end_seen(now, bus.creatorid, out)
        self._emit_changes(now, installed, removed, out)

    def _emit_changes(
        self, now: float, installed: list[StateRecord], removed: list[FlowKey], out: list[Action]
    ) -> None:
        echo = self._echo
        if removed:
            out.append(RemoveStates(tuple(removed)))
            for k in removed:
                echo.setdefault(k, []).append((now, None, None, None))
        if installed:
            out.append(InstallStates(tuple(installed)))
            for r in installed:
                echo.setdefault(r.key, []).append((now, r.tcp_state, r.nat_src, r.nat_dst))

    def _consume_echo(
        self, now: float, key: FlowKey, tcp: object, nat_src: object, nat_dst: object
    ) -> bool:
        expected = self._echo[key]
        horizon = now - self.config.echo_window
        for i, (when, e_tcp, e_src, e_dst) in enumerate(expected):
            if when >= horizon and (e_tcp, e_src, e_dst) == (tcp, nat_src, nat_dst):
                del expected[: i + 1]
                if not expected:
                    del self._echo[key]
                return True
        return False

    def _expire_echoes(self, now: float) -> None:
        ack = self._peer_ack
        for k in [k for k, seq in self._claims.items() if seq <= ack]:
            del self._claims[k]
        horizon = now - self.config.echo_window
        for k in [k for k, v in self._echo.items() if v[-1][0] < horizon]:
            del self._echo[k]
        horizon = now - self.config.tombstone_window
        tomb = self._tombstones
        while tomb:
            ident, when = next(iter(tomb.items()))
            if when >= horizon:
                break
            del tomb[ident]

    # ------------------------------------------------------------------ bulk: requester side

    def _bulk_request_start(self, now: float, out: list[Action]) -> None:
        self.bulk_phase = BulkPhase.REQUESTED
        self._req_tries = 0
        self._req_first_at = now
        self._send_bulk_request(now, out)

    def _send_bulk_request(self, now: float, out: list[Action]) -> None:
        self._req_tries += 1
        self._req_deadline = now + self.config.bulk_retry_interval
        self._transmit_unsequenced(now, [_REQ_ALL], out)

    def _bulk_request_expired(self, now: float, out: list[Action]) -> None:
        if self.bulk_phase not in (BulkPhase.REQUESTED, BulkPhase.RECEIVING):
            self._req_deadline = None
            return
        if not self._link_up:
            self._req_deadline = now + self.config.bulk_retry_interval
            return
        if self._req_tries >= self.config.bulk_max_tries:
            self.bulk_phase = BulkPhase.DONE
            self._req_deadline = None
            out.append(BulkCompleted(now - self._req_first_at, self._req_count, gave_up=True))
            self._set_ready(out, "bulk_gave_up")
            return
        self.bulk_phase = BulkPhase.REQUESTED
        self._send_bulk_request(now, out)

    def _bulk_start_seen(self, now: float, creatorid: int) -> None:
        if self.bulk_phase in (BulkPhase.REQUESTED, BulkPhase.RECEIVING):
            self.bulk_phase = BulkPhase.RECEIVING
            self._req_count = 0
            self._req_deadline = now + self.config.bulk_timeout
        self._sweep_creator = creatorid
        self._sweep_keys = {
            r.key for r in self.table if r.creatorid == creatorid and r.key not in self._local
        }

    def _bulk_end_seen(self, now: float, creatorid: int, out: list[Action]) -> None:
        if self._sweep_creator == creatorid and self._sweep_keys:
            gone = [k for k in self._sweep_keys if self.table.delete(k)]
            if gone:
                self._emit_changes(now, [], gone, out)
        self._sweep_creator = None
        self._sweep_keys = set()
        if self.bulk_phase in (BulkPhase.REQUESTED, BulkPhase.RECEIVING):
            self.bulk_phase = BulkPhase.DONE
            self._req_deadline = None
            out.append(BulkCompleted(now - self._req_first_at, self._req_count))
            self._in_sync = True
            self._set_ready(out, "bulk_done")

    def _set_ready(self, out: list[Action], done_reason: str | None = None) -> None:
        if self._in_sync and self.bulk_phase is BulkPhase.DONE:
            ready, reason = True, done_reason or self.ready_reason
        elif not self._link_up:
            ready, reason = False, "link_down"
        elif self.bulk_phase is not BulkPhase.DONE:
            ready, reason = False, "bulk_pending"
        else:
            ready, reason = True, done_reason or self.ready_reason
        if ready != self.ready:
            self.ready, self.ready_reason = ready, reason
            out.append(ReadyChanged(ready, reason))
        else:
            self.ready_reason = reason

    # ------------------------------------------------------------------ bulk: server side

    def _serve_start(self, now: float, out: list[Action], *, pushed: bool) -> None:
        if not self._link_up:
            return  # the requester retries; a push is re-triggered by the next loss
        self._serve_keys = [r.key for r in self.table if not self._excluded_record(r.key)]
        self._serve_pos = 0
        self._serve_started = now
        self._serve_pushed = pushed
        self._serve_count = 0
        self._serve_at = now
        bus = codec.BUS.pack(self.config.creatorid, 0, BusStatus.START)
        self._transmit_bodies(now, [codec.section_bytes(Act.BUS, [bus])], out, XSEQ_BULK)
        self._serve_tick(now, out)

    def _serve_tick(self, now: float, out: list[Action]) -> None:
        keys = self._serve_keys
        assert keys is not None
        cfg = self.config
        self._serve_at = now + cfg.bulk_tick
        if cfg.reliable and len(self._sender) > cfg.resend_queue_frames * 3 // 4:
            return  # back-pressure: let ACKs drain the resend queue first
        per_frame = cfg.states_per_frame()
        get = self.table.get
        pack = codec.pack_state
        for _ in range(cfg.bulk_frames_per_tick):
            recs: list[bytes] = []
            while len(recs) < per_frame and self._serve_pos < len(keys):
                rec = get(keys[self._serve_pos])
                self._serve_pos += 1
                if rec is not None:
                    recs.append(pack(rec))
            if recs:
                self._serve_count += len(recs)
                self._transmit_bodies(now, [codec.section_bytes(_UPD, recs)], out, XSEQ_BULK)
            if self._serve_pos >= len(keys):
                endtime = int(now - self._serve_started)
                bus = codec.BUS.pack(cfg.creatorid, endtime, BusStatus.END)
                self._transmit_bodies(now, [codec.section_bytes(Act.BUS, [bus])], out, XSEQ_BULK)
                out.append(BulkServed(now - self._serve_started, self._serve_count,
                                      self._serve_pushed))  # fmt: skip
                self._serve_keys = None
                return

    # ------------------------------------------------------------------ incremental output

    def _has_pending(self) -> bool:
        return bool(self._pending_full or self._pending_dels or self._pending_reqs)

    def _arm_flush(self, now: float) -> None:
        if self._flush_at is None:
            self._flush_at = now + self.config.flush_interval

    def _maybe_flush_now(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self._link_up and len(self._pending_full) >= self.config.states_per_frame():
            self._flush(now, out)
        return out

    def _flush(self, now: float, out: list[Action]) -> None:
        self._flush_at = None
        if not self._link_up:
            return
        table = self.table
        dels = [codec.REF.pack(sid, cid) for cid, sid in self._pending_dels]
        reqs = [codec.REF.pack(sid, cid) for cid, sid in self._pending_reqs]
        ins: list[bytes] = []
        upd: list[bytes] = []
        for key, act in self._pending_full.items():
            rec = table.get(key)
            if rec is not None:
                (ins if act == _INS else upd).append(codec.pack_state(rec))
        self._pending_dels.clear()
        self._pending_reqs.clear()
        self._pending_full.clear()
        groups = [
            (Act.DEL_C, dels, REF_LEN),
            (_INS, ins, STATE_1400_LEN),
            (_UPD, upd, STATE_1400_LEN),
        ]
        if reqs:
            # Requests are cheap to repeat (the next UPD_C asks again): no sequencing needed.
            self._transmit_unsequenced(now, _pack_bodies([(Act.UPD_REQ, reqs, REF_LEN)],
                                                         self._budget), out)  # fmt: skip
        self._transmit_bodies(now, _pack_bodies([g for g in groups if g[1]], self._budget), out, 0)

    def _refresh(self, now: float, out: list[Action]) -> None:
        cfg = self.config
        keys = list(self._pending_updc)[: cfg.refresh_max_per_interval]
        for k in keys:
            del self._pending_updc[k]
        traffic = len(keys)  # the rest are the sweep's
        if cfg.sweep_per_interval and self._local:
            chosen = set(keys)
            for _ in range(min(cfg.sweep_per_interval, len(self._local))):
                if not self._sweep_cursor:
                    self._sweep_cursor = list(self._local)
                k = self._sweep_cursor.pop()
                if k in self._local and k not in chosen:
                    keys.append(k)
                    chosen.add(k)
        records: list[bytes] = []
        claimed: list[FlowKey] = []
        for n, k in enumerate(keys):
            rec = self.table.get(k)
            if rec is None:
                continue
            flags = 0
            if n < traffic:
                flags = UPDC_TRAFFIC
                claimed.append(k)
            left = max(0, rec.timeout - int(now - self._local.get(k, now)))
            records.append(codec.pack_upd_c(CompressedUpdate(
                rec.creatorid, rec.id, rec.tcp_state, left, rec.status, rec.mark,
                flags)))  # fmt: skip
        if records:
            self._count("refresh_sent", len(records))
            bodies = _pack_bodies([(Act.UPD_C, records, UPD_C_LEN)], self._budget)
            # the last refresh frame's seq (plain mode: no ACKs, a claim settles at once)
            last = self._sender.next_seq + len(bodies) - 1 if cfg.reliable else 0
            for k in claimed:
                self._claims[k] = last
            self._transmit_bodies(now, bodies, out, 0)

    # ------------------------------------------------------------------ transmission

    def _seq_header(self, seq: int, flags: int) -> bytes:
        r = self._receiver
        hdr = codec.XSEQ.pack(self.epoch, seq, self._sender.oldest, r.peer_epoch, r.ack, flags)
        r.acked()
        return codec.section_bytes(Act.XSEQ, [hdr])

    def _transmit_bodies(
        self, now: float, bodies: list[bytes], out: list[Action], flags: int
    ) -> None:
        cfg = self.config
        for body in bodies:
            self._count("frames_tx")
            if not cfg.reliable:
                out.append(Transmit(codec.assemble([body])))
                continue
            seq = self._sender.push(body, now, cfg.resend_timeout)
            out.append(Transmit(codec.assemble([self._seq_header(seq, flags | self._restart_flag),
                                                body])))  # fmt: skip
        if bodies:
            self._restart_flag = 0
        if (
            cfg.reliable
            and self._sender.take_abandoned()
            and self._receiver.peer_epoch
            and self._serve_keys is None
        ):
            # Unacknowledged data was dropped: only a full transfer can cover it now.
            self._serve_start(now, out, pushed=True)

    def _transmit_unsequenced(self, now: float, bodies: list[bytes], out: list[Action]) -> None:
        for body in bodies:
            self._count("frames_tx")
            if self.config.reliable:
                out.append(Transmit(codec.assemble([self._seq_header(0, 0), body])))
            else:
                out.append(Transmit(codec.assemble([body])))

    def _send_control(self, now: float, out: list[Action]) -> None:
        """A stand-alone ACK, with NACK ranges for any gap."""
        r = self._receiver
        gaps = r.gaps(self.config.max_nacks())
        body = [self._seq_header(0, 0)]
        if gaps:
            body.append(codec.section_bytes(
                Act.XNACK, [codec.XNACK.pack(g.first, g.last) for g in gaps]))  # fmt: skip
            r.nack_due = now + self.config.nack_interval
            self._count("nacks_tx")
        else:
            r.nack_due = None
        self._count("acks_tx")
        out.append(Transmit(codec.assemble(body)))

    def _reliability_timers(self, now: float, out: list[Action]) -> None:
        cfg = self.config
        r = self._receiver
        if (r.ack_due is not None and now >= r.ack_due) or (
            r.nack_due is not None and now >= r.nack_due
        ):
            self._send_control(now, out)
        for seq in self._sender.due(now, cfg.resend_timeout, cfg.resend_burst):
            self._resend(seq, out)

    def _resend(self, seq: int, out: list[Action]) -> None:
        body = self._sender.body(seq)
        if body is not None:
            self._count("resends")
            out.append(Transmit(codec.assemble([self._seq_header(seq, 0), body])))

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # ------------------------------------------------------------------ introspection

    @property
    def in_sync(self) -> bool:
        """A bulk update completed: link flaps no longer affect readiness."""
        return self._in_sync

    @property
    def link_is_up(self) -> bool:
        return self._link_up

    @property
    def serving_bulk(self) -> bool:
        return self._serve_keys is not None

    def pending_count(self) -> int:
        return len(self._pending_full) + len(self._pending_dels) + len(self._pending_updc)
