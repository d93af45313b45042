"""What goes out besides bulks: coalesced changes (flush) and the liveness refresh.

Both are described in docs/statesync-protocol.md §4.

* Full states of keys in `Ownership.announce` (INS for a new identity, UPD for a material
  change), DEL_C of retired identities and UPD_REQ of unknown ones are coalesced for
  `flush_interval` (or go out at once when a frame's worth of states is pending).
* Every `refresh_interval`: UPD_C with the remaining timeout for keys whose counters moved
  (flagged UPDC_TRAFFIC: a claim, see ownership.py), at most `refresh_max_per_interval`, plus a
  round-robin sweep of `sweep_per_interval` driven states so idle-but-alive flows stay alive.

The outbox builds frame bodies; the replicator hands them to the transport.
"""

from __future__ import annotations

from carpsim.statesync import codec
from carpsim.statesync.codec import CompressedUpdate
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import UPDC_TRAFFIC, Act
from carpsim.statesync.ownership import Ident, Ownership
from carpsim.statesync.record import FlowKey, StateRecord
from carpsim.statesync.serial import seq_next
from carpsim.statesync.table import InMemoryStateTable


class Outbox:
    __slots__ = (
        "_budget",
        "_cfg",
        "_cursor",
        "_own",
        "_table",
        "dels",
        "flush_at",
        "last_claims",
        "refresh_at",
        "reqs",
        "stats",
    )

    def __init__(
        self,
        config: ReplicatorConfig,
        own: Ownership,
        table: InMemoryStateTable,
        stats: dict[str, int],
    ) -> None:
        self._cfg = config
        self._own = own
        self._table = table
        self._budget = config.frame_budget()
        self.dels: dict[Ident, None] = {}
        self.reqs: dict[Ident, None] = {}
        self.last_claims: dict[Ident, bytes] = {}
        """UPD_C traffic claims of flows we took over and closed before the refresh tick sent
        the claim: they go out just ahead of the DEL_C, so the peer (which still drives the
        flow in its view) hands it over first and then honours the delete."""
        self.flush_at: float | None = None
        self.refresh_at: float | None = None
        self._cursor: list[FlowKey] = []
        self.stats = stats

    def next_deadline(self, link_up: bool) -> float | None:
        """The refresh tick always runs (it also expires bookkeeping); the flush needs the link."""
        flush = self.flush_at if link_up else None
        if flush is None:
            return self.refresh_at
        return flush if self.refresh_at is None else min(flush, self.refresh_at)

    def has_pending(self) -> bool:
        return bool(self._own.announce or self.dels or self.reqs)

    def pending_count(self) -> int:
        return len(self._own.announce) + len(self.dels) + len(self._own.traffic)

    def arm(self, now: float) -> None:
        if self.flush_at is None:
            self.flush_at = now + self._cfg.flush_interval

    def full(self) -> bool:
        """A frame's worth of states is waiting: flush without waiting for the timer."""
        return len(self._own.announce) >= self._cfg.states_per_frame()

    def delete(self, ident: Ident, now: float) -> None:
        self.dels[ident] = None
        self.arm(now)

    def claim_then_delete(self, gone: StateRecord, now: float) -> None:
        """`gone` ended here while our claim on it was not yet processed by the peer."""
        ident = (gone.creatorid, gone.id)
        self.last_claims[ident] = codec.pack_upd_c(CompressedUpdate(
            gone.creatorid, gone.id, gone.tcp_state, 0, gone.status, gone.mark,
            UPDC_TRAFFIC))  # fmt: skip
        self.delete(ident, now)

    def request(self, ident: Ident, now: float) -> None:
        self.reqs[ident] = None
        self.arm(now)

    def flush(self) -> tuple[list[bytes], list[bytes]]:
        """(unsequenced request bodies, sequenced data bodies); the queues are emptied."""
        self.flush_at = None
        get = self._table.get
        pack = codec.pack_state
        ins: list[bytes] = []
        upd: list[bytes] = []
        announce = self._own.announce
        for key, act in announce.items():
            rec = get(key)
            if rec is not None:
                (ins if act == Act.INS else upd).append(pack(rec))
        dels = codec.encode_refs(self.dels)
        reqs = codec.encode_refs(self.reqs)
        claims = list(self.last_claims.values())
        self.dels.clear()
        self.reqs.clear()
        self.last_claims.clear()
        announce.clear()
        # The claims lead: a frame is processed in order, so the peer hands over, then deletes.
        order = ((Act.UPD_C, claims), (Act.DEL_C, dels), (Act.INS, ins), (Act.UPD, upd))
        groups = [(a, r) for a, r in order if r]
        req_bodies = codec.pack_frames([(Act.UPD_REQ, reqs)], self._budget) if reqs else []
        return req_bodies, codec.pack_frames(groups, self._budget)

    def refresh(self, now: float, next_seq: int | None) -> list[bytes]:
        """The refresh tick's UPD_C bodies; `next_seq`: the seq the first will get (None in
        plain mode), so claims know which frame carried them."""
        cfg = self._cfg
        own = self._own
        keys = list(own.traffic)[: cfg.refresh_max_per_interval]
        for k in keys:
            del own.traffic[k]
        traffic = len(keys)  # the rest are the sweep's
        self._sweep(keys)
        records: list[bytes] = []
        claimed: list[FlowKey] = []
        get = self._table.get
        for n, k in enumerate(keys):
            rec = get(k)
            if rec is None:
                continue
            flags = 0
            if n < traffic:
                flags = UPDC_TRAFFIC
                claimed.append(k)
            left = max(0, rec.timeout - int(now - own.local.get(k, now)))
            records.append(codec.pack_upd_c(CompressedUpdate(
                rec.creatorid, rec.id, rec.tcp_state, left, rec.status, rec.mark,
                flags)))  # fmt: skip
        if not records:
            return []
        self.stats["refresh_sent"] = self.stats.get("refresh_sent", 0) + len(records)
        bodies = codec.pack_frames([(Act.UPD_C, records)], self._budget)
        # the last refresh frame's seq (plain mode: no ACKs, a claim settles at once)
        last = seq_next(next_seq, len(bodies) - 1) if next_seq is not None else 0
        for k in claimed:
            own.claims[k] = last
        return bodies

    def _sweep(self, keys: list[FlowKey]) -> None:
        local = self._own.local
        n = self._cfg.sweep_per_interval
        if not n or not local:
            return
        chosen = set(keys)
        for _ in range(min(n, len(local))):
            if not self._cursor:
                self._cursor = list(local)
            k = self._cursor.pop()
            if k in local and k not in chosen:
                keys.append(k)
                chosen.add(k)
