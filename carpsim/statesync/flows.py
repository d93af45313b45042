"""Per-flow intake: local events and received records, each classified into a `FlowInput` and
carried out by the rule `ownership.FLOW_RULES` gives for the key's current owner.

This is where the mirror changes, where expected kernel echoes are recorded and recognised, and
where identities are assigned to local flows and retired (DEL_C + tombstone).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from carpsim.statesync.bulk import BulkRequester
from carpsim.statesync.codec import Clear, CompressedUpdate, Section, StateRef
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import UPDC_TRAFFIC, Act, SyncDropReason
from carpsim.statesync.events import Action, CountDrop, InstallStates, RemoveStates
from carpsim.statesync.outbox import Outbox
from carpsim.statesync.ownership import (
    FLOW_RULES,
    Echo,
    Echoes,
    Effect,
    FlowInput,
    Owner,
    Ownership,
    Tombstones,
)
from carpsim.statesync.record import FlowKey, StateRecord, tcp_progress
from carpsim.statesync.table import InMemoryStateTable

_INS = Act.INS
_UPD = Act.UPD
_GONE = (None, None, None)
"""What the echo of one of our removals looks like (no TCP state, no NAT)."""
_DRIVEN = (Owner.LOCAL, Owner.CLAIMED)
_MAX_ZONE = 0xFFFF


@dataclass
class Changes:
    """Kernel changes a received frame causes, emitted in order (before a BUS, and at the end)."""

    installed: list[StateRecord] = field(default_factory=list)
    removed: list[FlowKey] = field(default_factory=list)

    def remove(self, key: FlowKey) -> None:
        """Removals go out before installs: one supersedes an install earlier in the frame."""
        if self.installed:
            self.installed = [r for r in self.installed if r.key != key]
        self.removed.append(key)


def _peer_input(
    cur: StateRecord, rec: StateRecord, me: int, issued: range, reseeded: range
) -> FlowInput:
    """Classify a full record for a key we drive (`issued`: the ids this incarnation gave,
    `reseeded`: those given before its first bulk completed)."""
    ident = (rec.creatorid, rec.id)
    progress = tcp_progress(rec.tcp_state) > tcp_progress(cur.tcp_state)
    if ident == (cur.creatorid, cur.id):
        return FlowInput.PEER_STATE if progress else FlowInput.PEER_COPY
    if cur.creatorid == me and cur.id in issued:
        elder = rec.creatorid == me and rec.id not in issued  # our previous incarnation's
        if elder or (cur.id in reseeded and ident > (cur.creatorid, cur.id)):
            return FlowInput.PEER_STATE if progress else FlowInput.PEER_KNOWN
    if ident < (cur.creatorid, cur.id):
        return FlowInput.PEER_LOSER
    return FlowInput.PEER_STATE


def _upd_c_input(cur: StateRecord, u: CompressedUpdate) -> FlowInput:
    if tcp_progress(u.tcp_state) > tcp_progress(cur.tcp_state):
        return FlowInput.PEER_PROGRESS
    return FlowInput.PEER_TRAFFIC if u.flags & UPDC_TRAFFIC else FlowInput.PEER_REFRESH


class Flows:
    """The mirror's per-key rules; the replicator feeds it and owns everything around it."""

    def __init__(
        self,
        config: ReplicatorConfig,
        *,
        table: InMemoryStateTable,
        own: Ownership,
        outbox: Outbox,
        bulk: BulkRequester,
        stats: dict[str, int],
        first_id: int,
    ) -> None:
        self.config = config
        self.table = table
        self.own = own
        self.outbox = outbox
        self._bulk = bulk
        self.stats = stats
        self.first_id = first_id
        self.next_id = first_id
        self.synced_id: int | None = None
        self.echoes = Echoes(config.echo_window, config.echoes_per_key)
        self.tombstones = Tombstones(config.tombstone_window, config.tombstone_max)
        self._excluded = config.excluded_raw()

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def excluded(self, key: FlowKey) -> bool:
        return key.proto in self.config.excluded_protos or (
            bool(self._excluded) and (key.src in self._excluded or key.dst in self._excluded)
        )

    def expire(self, now: float) -> None:
        """The refresh tick: settle acknowledged claims, forget stale echoes and tombstones."""
        self.own.settle()
        self.echoes.expire(now)
        self.tombstones.expire(now)
        self.stats["echo_overflow"] = self.echoes.overflow
        self.stats["tombstone_overflow"] = self.tombstones.overflow

    def forget_stale(self, now: float, stale: list[FlowKey], out: list[Action]) -> None:
        """BUS END: held states of that creator its bulk did not mention were deleted there."""
        gone = [k for k in stale if self.table.delete(k)]
        for k in gone:
            self.own.forget(k)
        if gone:
            self.emit(now, Changes(removed=gone), out)

    # ------------------------------------------------------------------ local

    def local_delete(self, now: float, key: FlowKey, out: list[Action]) -> bool:
        """True if a state we drove ended (its DEL_C is queued)."""
        if self.echoes.consume(now, key, _GONE):
            return False
        cur = self.table.get(key)
        owner = self.own.owner(key, cur is not None)
        rule = FLOW_RULES[owner, FlowInput.LOCAL_DELETE]
        if cur is None or rule.effect is Effect.IGNORE:
            return False
        # Taken over from the peer (a claim or an UPD) and not told yet: the peer still drives
        # it in its own view, so the take-over must reach it ahead of the DEL_C.
        claimed = owner is Owner.CLAIMED or self.own.announce.get(key) == _UPD
        self.table.delete(key)
        self._bulk.sweep_keys.discard(key)
        self.own.forget(key)
        # Even with its INS still pending the peer may know the state (a bulk reads the
        # table directly), so the DEL_C always goes out; deletes are idempotent. A state the
        # peer drives (FORGET) ended here typically by expiring: the owner decides its life;
        # if it is still alive there, its next refresh names an id we no longer know and we
        # fetch it again (UPD_REQ).
        if rule.effect is not Effect.RETIRE:
            return False
        self._retire(now, cur, claimed=claimed)
        return True

    def _retire(self, now: float, gone: StateRecord, *, claimed: bool = False) -> None:
        """A state we drove ended here: DEL_C its identity, refuse it if it comes back.

        `claimed`: we took the flow over (traffic) but the peer has not processed that claim,
        so in its view it still drives the flow and would refuse a bare DEL_C (NOTYOURS)."""
        ident = (gone.creatorid, gone.id)
        self.own.announce.pop(gone.key, None)
        self.own.traffic.pop(gone.key, None)
        self.tombstones.add(ident, now)
        if claimed:
            self.outbox.claim_then_delete(gone, now)
        else:
            self.outbox.delete(ident, now)

    def _input(self, cur: StateRecord | None, rec: StateRecord) -> FlowInput | None:
        if cur is None or (cur.creatorid, cur.id) != (rec.creatorid, rec.id):
            return FlowInput.LOCAL_NEW
        if (
            # (a local TCP state that went backwards got a new identity already: the tuple
            # was reused by a new connection, which peers accept as a replacement)
            cur.tcp_state != rec.tcp_state
            or cur.nat_src != rec.nat_src
            or cur.nat_dst != rec.nat_dst
        ):
            return FlowInput.LOCAL_CHANGE
        if sum(rec.packets) > sum(cur.packets):
            return FlowInput.LOCAL_TRAFFIC
        return None  # echo of our own install, or nothing the peer needs

    def local_change(self, now: float, rec: StateRecord, out: list[Action]) -> None:
        key = rec.key
        if self.excluded(key):
            return
        if self.echoes.consume(now, key, (rec.tcp_state, rec.nat_src, rec.nat_dst)):
            return
        cur = self.table.get(key)
        if rec.id == 0 and rec.creatorid == 0:
            if cur is not None and tcp_progress(rec.tcp_state) >= tcp_progress(cur.tcp_state):
                rec = replace(rec, creatorid=cur.creatorid, id=cur.id)
            else:
                rec = replace(rec, creatorid=self.config.creatorid, id=self.next_id)
                self.next_id += 1
        self._bulk.sweep_keys.discard(key)
        inp = self._input(cur, rec)
        if inp is None:
            return
        own = self.own
        effect = FLOW_RULES[own.owner(key, cur is not None), inp].effect
        self.table.put(rec)
        own.drive(key, now)
        if effect is Effect.CLAIM:
            own.traffic[key] = None
            return
        if effect is Effect.ANNOUNCE_NEW:
            if cur is not None:
                self._retire(now, cur)
            own.announce[key] = _INS
        else:
            own.announce.setdefault(key, _UPD)
        own.traffic.pop(key, None)
        self.outbox.arm(now)

    def on_states(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        """INS/UPD: full records; each goes through the ownership table."""
        table = self.table
        own = self.own
        excluded = self.config.excluded_protos
        for rec in section.items:
            assert isinstance(rec, StateRecord)
            key = rec.key
            if key.proto in excluded or self._refused(rec, out):
                continue
            cur = table.get(key)
            owner = own.owner(key, cur is not None)
            inp = None
            if cur is not None and owner in _DRIVEN:
                issued = range(self.first_id, self.next_id)
                reseeded = range(self.first_id, self.synced_id or self.next_id)
                inp = _peer_input(cur, rec, self.config.creatorid, issued, reseeded)
            rule = FLOW_RULES[owner, inp or FlowInput.PEER_STATE]
            if rule.effect is Effect.REFUSE:
                assert cur is not None
                self._refuse(cur, rec, inp, out)
                continue
            if rule.effect is Effect.ADOPT:
                assert cur is not None
                self._adopt(now, cur, rec)
                continue
            holder = table.by_id(rec.creatorid, rec.id)
            if table.apply(rec):
                ch.installed.append(rec)
                if holder is not None and holder.key != key:
                    # One identity names one flow: the table dropped the stale holder, so
                    # the kernel must too (it knows keys only, and would keep it).
                    own.forget(holder.key)
                    ch.remove(holder.key)
                if own.hand_over(key):
                    self._count("handovers_rx")
                    if cur is not None and (cur.creatorid, cur.id) != (rec.creatorid, rec.id):
                        # Our own state under this tuple lost (split-brain collision, or the
                        # peer reused the tuple): it ends here like a local delete. Unannounced,
                        # a copy the peer took while its own was gone (our INS crossed its
                        # DEL_C) would outlive it there.
                        self._retire(now, cur)
            elif table.get(key) != rec:
                out.append(CountDrop(SyncDropReason.STALE, "tcp state would go back"))
            self._bulk.sweep_keys.discard(key)

    def _refused(self, rec: StateRecord, out: list[Action]) -> bool:
        """A received full record that must not reach the mirror (counted)."""
        if not 0 <= rec.key.zone <= _MAX_ZONE:
            # The kernel writer cannot express it (conntrack zones are u16): dropped here,
            # before it reaches a write batch.
            out.append(CountDrop(SyncDropReason.BADFIELD, f"zone {rec.key.zone}"))
            return True
        if self.tombstones and (rec.creatorid, rec.id) in self.tombstones:
            out.append(CountDrop(SyncDropReason.STALE, "deleted here"))
            return True
        return False

    def _adopt(self, now: float, cur: StateRecord, rec: StateRecord) -> None:
        """Our kernel's state under the peer's identity for it; ours (a re-seed's) retires."""
        self.table.put(replace(cur, creatorid=rec.creatorid, id=rec.id))
        self._retire(now, cur)
        self.own.announce[cur.key] = _INS
        self.own.drive(cur.key, now)
        self._bulk.sweep_keys.discard(cur.key)
        self.outbox.arm(now)

    def synced(self) -> None:
        """Our first bulk completed: identities given from now on are not re-seeds."""
        if self.synced_id is None:
            self.synced_id = self.next_id

    @staticmethod
    def _refuse(
        cur: StateRecord, rec: StateRecord, inp: FlowInput | None, out: list[Action]
    ) -> None:
        if inp is FlowInput.PEER_LOSER:
            # Both nodes created this tuple (split brain): the larger identity wins on both
            # sides, so they converge; ours is already on its way.
            out.append(CountDrop(SyncDropReason.COLLISION, "local state kept"))
        elif (rec.tcp_state, rec.nat_src, rec.nat_dst) != (cur.tcp_state, cur.nat_src, cur.nat_dst):
            # A state we drive coming back: a bulk re-states every state the server holds, our
            # own included, possibly older than what we sent since. Only the peer seeing the
            # flow progress is news; anything else must neither overwrite our kernel's version
            # nor take the state from us (our later delete would pass for the expiry of a
            # peer-driven copy and never go out). Ours is on its way to the peer already.
            out.append(CountDrop(SyncDropReason.STALE, "copy of a local state"))

    def on_upd_c(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        table = self.table
        own = self.own
        for u in section.items:
            assert isinstance(u, CompressedUpdate)
            cur = table.by_id(u.creatorid, u.id)
            if cur is None:
                if (u.creatorid, u.id) not in self.tombstones:
                    self.outbox.request((u.creatorid, u.id), now)
                continue
            if tcp_progress(u.tcp_state) < tcp_progress(cur.tcp_state):
                out.append(CountDrop(SyncDropReason.STALE, "compressed update"))
                continue
            new = replace(cur, tcp_state=u.tcp_state, timeout=u.timeout, status=u.status,
                          mark=u.mark)  # fmt: skip
            applied = table.apply(new)
            if applied:
                ch.installed.append(new)
            key = cur.key
            rule = FLOW_RULES[own.owner(key, True), _upd_c_input(cur, u)]
            if rule.effect is Effect.HAND_OVER:
                # The peer saw the flow progress, or forwards it while we stopped (failover).
                if own.hand_over(key):
                    self._count("handovers_rx")
            elif rule.effect is Effect.KEEP_DRIVING:
                # Both drive it (an idle peer's sweep, or both forward it): we keep driving,
                # with the peer's timeout as the latest reading; the peer's delete counts now.
                own.shared[key] = None
                if applied:
                    own.drive(key, now)

    def on_del_c(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        for ref in section.items:
            assert isinstance(ref, StateRef)
            cur = self.table.by_id(ref.creatorid, ref.id)
            if cur is None:
                continue
            key = cur.key
            inp = FlowInput.PEER_DELETE
            if key in self.own.local and key not in self.own.shared:
                inp = FlowInput.PEER_DELETE_UNSHARED
                out.append(CountDrop(SyncDropReason.NOTYOURS, "DEL_C of a state we drive"))
            self._peer_forget(key, inp, ch)

    def on_clr(self, now: float, section: Section, ch: Changes, out: list[Action]) -> None:
        for clr in section.items:
            assert isinstance(clr, Clear)
            if clr.creatorid != self.config.creatorid:  # nobody clears our states but us
                for key in [r.key for r in self.table if r.creatorid == clr.creatorid]:
                    self._peer_forget(key, FlowInput.PEER_CLEAR, ch)

    def _peer_forget(self, key: FlowKey, inp: FlowInput, ch: Changes) -> None:
        if FLOW_RULES[self.own.owner(key, True), inp].effect is Effect.FORGET:
            self.table.delete(key)
            self.own.forget(key)
            ch.remove(key)

    def emit(self, now: float, ch: Changes, out: list[Action]) -> None:
        echoes = self.echoes
        if ch.removed:
            out.append(RemoveStates(tuple(ch.removed)))
            for k in ch.removed:
                echoes.expect(k, Echo(now, None, None, None))
            ch.removed = []
        if ch.installed:
            out.append(InstallStates(tuple(ch.installed)))
            for r in ch.installed:
                echoes.expect(r.key, Echo(now, r.tcp_state, r.nat_src, r.nat_dst))
            ch.installed = []
