"""Bulk update (pfsync BUS, if_pfsync.c): the requester and the server, each its own small machine.

Requester: `start` sends UPD_REQ 0/0 every `bulk_retry_interval` until BUS START, then waits for
BUS END with a silence timeout of `bulk_timeout`; after `bulk_max_tries` requests it gives up
(the node becomes ready anyway). On BUS END it reports the states of that creator the bulk did
not mention: deletes lost in an abandoned gap, which the replicator then drops.

Server: a snapshot of the mirror's keys, sent as paced UPD frames between BUS START and BUS END,
`bulk_frames_per_tick` frames every `bulk_tick`, holding back while the resend queue is 3/4 full.

Neither transmits: they hand frame bodies to the replicator, which owns the transport.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from carpsim.statesync import codec
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import Act, BusStatus
from carpsim.statesync.events import BulkServed
from carpsim.statesync.record import FlowKey, StateRecord

_REQ_ALL = codec.pack_frames([(Act.UPD_REQ, codec.encode_refs([(0, 0)]))], 1 << 16)[0]


class BulkPhase(enum.Enum):
    IDLE = "idle"
    REQUESTED = "requested"
    RECEIVING = "receiving"
    DONE = "done"


class RequestOutcome(enum.Enum):
    WAIT = "wait"
    RETRY = "retry"
    GAVE_UP = "gave_up"


_ACTIVE = (BulkPhase.REQUESTED, BulkPhase.RECEIVING)


class BulkRequester:
    """Our side as the receiver of a bulk."""

    __slots__ = (
        "_cfg",
        "count",
        "deadline",
        "first_at",
        "phase",
        "sweep_creator",
        "sweep_keys",
        "tries",
    )

    def __init__(self, config: ReplicatorConfig) -> None:
        self._cfg = config
        self.phase = BulkPhase.IDLE
        self.tries = 0
        self.deadline: float | None = None
        self.first_at = 0.0
        self.count = 0
        """States received in the current transfer."""
        self.sweep_creator: int | None = None
        self.sweep_keys: set[FlowKey] = set()
        """Held states of `sweep_creator` the current transfer has not mentioned yet."""

    def next_deadline(self) -> float | None:
        return self.deadline

    @property
    def receiving(self) -> bool:
        return self.phase is BulkPhase.RECEIVING

    def start(self, now: float) -> bytes:
        """Begin (again): the UPD_REQ 0/0 body to send unsequenced."""
        self.phase = BulkPhase.REQUESTED
        self.tries = 0
        self.first_at = now
        return self.request(now)

    def request(self, now: float) -> bytes:
        self.tries += 1
        self.deadline = now + self._cfg.bulk_retry_interval
        return _REQ_ALL

    def expired(self, now: float, link_up: bool) -> RequestOutcome:
        """The retry or silence timer fired."""
        if self.phase not in _ACTIVE:
            self.deadline = None
            return RequestOutcome.WAIT
        if not link_up:
            self.deadline = now + self._cfg.bulk_retry_interval
            return RequestOutcome.WAIT
        if self.tries >= self._cfg.bulk_max_tries:
            self.phase = BulkPhase.DONE
            self.deadline = None
            return RequestOutcome.GAVE_UP
        self.phase = BulkPhase.REQUESTED
        return RequestOutcome.RETRY

    def progress(self, now: float, n: int) -> None:
        """Bulk-shaped data (UPD) arrived: only that keeps a transfer alive, not ACKs."""
        if self.phase is BulkPhase.RECEIVING:
            self.count += n
            self.deadline = now + self._cfg.bulk_timeout

    def start_seen(self, now: float, creatorid: int, candidates: set[FlowKey]) -> None:
        """BUS START from `creatorid`; `candidates`: the held states it should mention."""
        if self.phase in _ACTIVE:
            self.phase = BulkPhase.RECEIVING
            self.count = 0
            self.deadline = now + self._cfg.bulk_timeout
        self.sweep_creator = creatorid
        self.sweep_keys = candidates

    def end_seen(self, creatorid: int) -> tuple[list[FlowKey], bool] | None:
        """BUS END: (held states the transfer did not mention, whether our request completed);
        None if no BUS START of `creatorid` opened a transfer (refused: one such frame used to
        mark a waiting node ready with an empty table and lift its CARP demotion)."""
        if self.sweep_creator != creatorid:
            return None
        stale = list(self.sweep_keys)
        self.sweep_creator = None
        self.sweep_keys = set()
        if self.phase is not BulkPhase.RECEIVING:
            return stale, False
        self.phase = BulkPhase.DONE
        self.deadline = None
        return stale, True


class BulkServer:
    """Our side as the sender of a bulk (requested by the peer, or pushed after loss)."""

    __slots__ = ("_cfg", "_keys", "_pos", "at", "count", "deferred", "pushed", "started")

    def __init__(self, config: ReplicatorConfig) -> None:
        self._cfg = config
        self.deferred = False
        """A request arrived within `bulk_min_interval` of the last start: served then."""
        self._keys: list[FlowKey] | None = None
        self._pos = 0
        self.at = 0.0
        self.started = -1e18
        self.pushed = False
        self.count = 0

    @property
    def active(self) -> bool:
        return self._keys is not None

    def next_deadline(self) -> float | None:
        if self._keys is not None:
            return self.at
        return self.started + self._cfg.bulk_min_interval if self.deferred else None

    def admit(self, now: float) -> bool:
        """A bulk request: True to start now. One in flight answers every request (the
        requester only needs one BUS START..END); within `bulk_min_interval` of the last
        start it is deferred to then, so a flood of requests costs one bulk per interval."""
        if self._keys is not None:
            return False
        if now < self.started + self._cfg.bulk_min_interval:
            self.deferred = True
            return False
        return True

    def start(self, now: float, keys: list[FlowKey], *, pushed: bool) -> bytes:
        """Snapshot `keys`; returns the BUS START section (the first tick follows at once)."""
        self._keys = keys
        self._pos = 0
        self.deferred = False
        self.started = now
        self.pushed = pushed
        self.count = 0
        self.at = now
        return codec.encode_bus(self._cfg.creatorid, 0, BusStatus.START)

    def tick(
        self, now: float, get: Callable[[FlowKey], StateRecord | None], held_back: bool
    ) -> tuple[list[bytes], BulkServed | None]:
        """The next paced frames; the last ones end with BUS END and the BulkServed report.

        The server stays `active` until `finish()`, so what the transport does with these
        bodies cannot start another transfer before they are out.
        """
        keys = self._keys
        assert keys is not None
        cfg = self._cfg
        self.at = now + cfg.bulk_tick
        if held_back:
            return [], None  # back-pressure: let ACKs drain the resend queue first
        per_frame = cfg.states_per_frame()
        pack = codec.pack_state
        bodies: list[bytes] = []
        for _ in range(cfg.bulk_frames_per_tick):
            recs: list[bytes] = []
            while len(recs) < per_frame and self._pos < len(keys):
                rec = get(keys[self._pos])
                self._pos += 1
                if rec is not None:
                    recs.append(pack(rec))
            if recs:
                self.count += len(recs)
                bodies.append(codec.section_bytes(Act.UPD, recs))
            if self._pos >= len(keys):
                bodies.append(
                    codec.encode_bus(cfg.creatorid, int(now - self.started), BusStatus.END)
                )
                return bodies, BulkServed(now - self.started, self.count, self.pushed)
        return bodies, None

    def finish(self) -> None:
        self._keys = None
