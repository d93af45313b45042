"""Sequencing, cumulative ACK, NACK ranges and a bounded resend queue (statesync-spec §2.2, §4.3).

Modelled on conntrackd FT-FW, carried in pfsync frames by the XSEQ/XNACK extension subheaders
(docs/statesync-protocol.md). Pure bookkeeping: the Replicator decides when to transmit.

Differences from FT-FW, and why:
* The receiver holds out-of-order frames back and delivers strictly in order, so a delete can
  never overtake the insert it cancels (pfsync's apply rules alone would resurrect it).
* Every XSEQ carries `oldest`, the lowest seq the sender can still resend. A receiver expecting
  less skips the gap at once instead of NACKing forever; the sender, which knows it abandoned
  unacknowledged data, covers the loss with a bulk push.
* A new sender epoch (peer restart or first contact) re-bases the receiver on `oldest`.
"""

from __future__ import annotations

from carpsim.statesync.codec import Frame, NackRange, SeqHeader
from carpsim.statesync.constants import SyncDropReason


class ReliableSender:
    """Numbers outgoing data frames and keeps them until acknowledged (bounded)."""

    __slots__ = ("_backoff", "_queue", "abandoned", "capacity", "epoch", "next_seq", "rto_deadline")

    def __init__(self, epoch: int, capacity: int) -> None:
        self.epoch = epoch
        self.capacity = capacity
        self.next_seq = 1
        # seq -> [body, last_sent, resent]; insertion order = seq order
        self._queue: dict[int, list[object]] = {}
        self.abandoned = False
        """Unacknowledged frames were dropped since the last `take_abandoned()`."""
        self.rto_deadline: float | None = None
        self._backoff = 1

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def oldest(self) -> int:
        return next(iter(self._queue)) if self._queue else self.next_seq

    def push(self, body: bytes, now: float, rto: float) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1 if seq < 0xFFFFFFFF else 1
        self._queue[seq] = [body, now, False]
        if len(self._queue) > self.capacity:
            del self._queue[next(iter(self._queue))]
            self.abandoned = True
        if self.rto_deadline is None:
            self.rto_deadline = now + rto
        return seq

    def body(self, seq: int) -> bytes | None:
        entry = self._queue.get(seq)
        return None if entry is None else entry[0]  # type: ignore[return-value]

    def on_ack(self, ack_epoch: int, ack: int, now: float, rto: float) -> int:
        """Drop frames up to `ack` (cumulative); returns how many were released."""
        if ack_epoch != self.epoch or ack == 0:
            return 0
        released = 0
        while self._queue:
            first = next(iter(self._queue))
            if first > ack:
                break
            del self._queue[first]
            released += 1
        if not self._queue:
            self.rto_deadline = None
        elif released:
            self._backoff = 1
            self.rto_deadline = now + rto
        return released

    def on_nack(self, ranges: list[NackRange], now: float, limit: int, holdoff: float) -> list[int]:
        """Seqs to re-send now for these NACK ranges (those still queued, at most `limit`).

        Every ACK repeats all open gaps, so a frame re-sent less than `holdoff` ago is not
        re-sent again (its copy is probably still in flight); first-time NACKs act at once.

        A receiver only knows seq L is missing once it holds L+1, and it lists every gap below
        its highest held frame, so queued frames up to the last range's end + 1 that no range
        names have arrived: they are released like acknowledged ones (a selective ACK).
        """
        if not ranges:
            return []
        top = max(r.last for r in ranges) + 1
        missing: set[int] = set()
        for r in ranges:
            if r.last - r.first < len(self._queue):
                missing.update(range(r.first, r.last + 1))
            else:
                missing.update(s for s in self._queue if r.first <= s <= r.last)
        for seq in [s for s in self._queue if s <= top and s not in missing]:
            del self._queue[seq]
        out: list[int] = []
        for seq in sorted(missing):
            entry = self._queue.get(seq)
            if entry is None:
                continue
            if entry[2] and now - entry[1] < holdoff:  # type: ignore[operator]
                continue
            entry[1] = now
            entry[2] = True
            out.append(seq)
            if len(out) >= limit:
                break
        return out

    def due(self, now: float, rto: float, limit: int) -> list[int]:
        """The oldest overdue frames (at most `limit`) to re-send on an RTO.

        Only the head of the queue is probed: once those arrive the receiver NACKs any further
        hole. Consecutive RTOs without ACK progress back off exponentially (x2, up to x64), so
        a silent or absent peer costs a few frames per second, not a storm.
        """
        if self.rto_deadline is None or now < self.rto_deadline:
            return []
        out: list[int] = []
        for n, (seq, entry) in enumerate(self._queue.items()):
            if n >= 4 * limit or len(out) >= limit:
                break
            if entry[1] + rto <= now:  # type: ignore[operator]
                entry[1] = now
                entry[2] = True
                out.append(seq)
        if not self._queue:
            self.rto_deadline = None
            return out
        if out:
            self._backoff = min(self._backoff * 2, 64)
        self.rto_deadline = now + rto * self._backoff
        return out

    def abandon_all(self) -> None:
        """Forget everything queued (the peer restarted and will ask for a bulk itself)."""
        self._queue.clear()
        self.rto_deadline = None

    def take_abandoned(self) -> bool:
        was = self.abandoned
        self.abandoned = False
        return was


class ReliableReceiver:
    """Tracks the peer's stream: in-order delivery, ACK/NACK bookkeeping."""

    __slots__ = ("ack_due", "expected", "held", "nack_due", "peer_epoch", "unacked", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.peer_epoch = 0
        self.expected = 1
        self.held: dict[int, Frame] = {}
        self.unacked = 0
        self.ack_due: float | None = None
        self.nack_due: float | None = None

    @property
    def ack(self) -> int:
        return self.expected - 1

    def accept(
        self, hdr: SeqHeader, frame: Frame, now: float, ack_delay: float
    ) -> tuple[list[Frame], int | None, SyncDropReason | None]:
        """Returns (frames to process in order, previous epoch if re-based, drop reason)."""
        rebased: int | None = None
        if hdr.epoch != self.peer_epoch:
            rebased = self.peer_epoch
            self.peer_epoch = hdr.epoch
            self.expected = max(hdr.oldest, 1)
            self.held.clear()
        out: list[Frame] = []
        if hdr.oldest > self.expected:
            # The sender gave these up; it pushes a bulk to cover them.
            self.expected = hdr.oldest
            self.held = {s: f for s, f in self.held.items() if s >= self.expected}
            self._drain(out)
        if hdr.seq == 0:
            out.append(frame)
            return out, rebased, None
        self.unacked += 1
        if self.ack_due is None:
            self.ack_due = now + ack_delay
        if hdr.seq < self.expected or hdr.seq in self.held:
            return out, rebased, SyncDropReason.DUPLICATE
        drop: SyncDropReason | None = None
        if hdr.seq == self.expected:
            out.append(frame)
            self.expected += 1
            self._drain(out)
        else:
            self.held[hdr.seq] = frame
            if self.nack_due is None:
                self.nack_due = now
            if len(self.held) > self.window:
                # Too far behind: skip the gap rather than hold unbounded memory.
                self.expected = min(self.held)
                self._drain(out)
                drop = SyncDropReason.WINDOW
        if not self.held:
            self.nack_due = None
        return out, rebased, drop

    def _drain(self, out: list[Frame]) -> None:
        while self.expected in self.held:
            out.append(self.held.pop(self.expected))
            self.expected += 1

    def gaps(self, limit: int) -> list[NackRange]:
        if not self.held:
            return []
        out: list[NackRange] = []
        start = self.expected
        for seq in sorted(self.held):
            if seq > start:
                out.append(NackRange(start, seq - 1))
                if len(out) >= limit:
                    break
            start = seq + 1
        return out

    def acked(self) -> None:
        """An ACK for everything delivered so far just went out."""
        self.unacked = 0
        self.ack_due = None
