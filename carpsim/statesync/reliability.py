"""Sequencing, cumulative ACK, NACK ranges and a bounded resend queue (conntrackd sync-ftfw.c).

Modelled on conntrackd FT-FW, carried in pfsync frames by the XSEQ/XNACK extension subheaders
(docs/statesync-protocol.md). Pure bookkeeping: the Replicator decides when to transmit.

Differences from FT-FW, and why:
* The receiver holds out-of-order frames back and delivers strictly in order, so a delete can
  never overtake the insert it cancels (pfsync's apply rules alone would resurrect it).
* Every XSEQ carries `oldest`, the lowest seq the sender can still resend. A receiver expecting
  less skips the gap at once instead of NACKing forever; the sender, which knows it abandoned
  unacknowledged data, covers the loss with a bulk push.
* A new sender epoch (peer restart or first contact) re-bases the receiver on `oldest`.

Every comparison is serial (`serial.py`, RFC 1982), and every number a peer sends is checked
against what it can truthfully say (docs/statesync-protocol.md §3, "Windows"): an ACK or a NACK
naming seqs we never sent is dropped and counted, not obeyed, and a frame further ahead than
the reorder window is not held. Without a shared key those checks bound what one forged frame
can cost; they cannot authenticate the peer (keyed mode does).
"""

from __future__ import annotations

from carpsim.statesync.codec import Frame, NackRange, SeqHeader
from carpsim.statesync.constants import SyncDropReason
from carpsim.statesync.serial import seq_diff, seq_le, seq_lt, seq_next


class ReliableSender:
    """Numbers outgoing data frames and keeps them until acknowledged (bounded)."""

    __slots__ = ("_backoff", "_queue", "abandoned", "capacity", "epoch", "next_seq", "rto_deadline")

    def __init__(self, epoch: int, capacity: int, first_seq: int = 1) -> None:
        self.epoch = epoch
        self.capacity = capacity
        self.next_seq = first_seq
        # seq -> [body, last_sent, resent]; insertion order = seq order (also across the wrap)
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

    @property
    def top(self) -> int:
        """The last seq sent (what a truthful ACK or NACK can name at most)."""
        return seq_next(self.next_seq, -1)

    def push(self, body: bytes, now: float, rto: float) -> int:
        seq = self.next_seq
        self.next_seq = seq_next(seq)
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

    def ack_valid(self, ack: int) -> bool:
        """An ACK may not cover a seq we have not sent (a forged `ack = 0xFFFFFFFF` would
        release the whole resend queue without the peer having anything)."""
        return ack == 0 or seq_le(ack, self.top)

    def on_ack(self, ack_epoch: int, ack: int, now: float, rto: float) -> int:
        """Drop frames up to `ack` (cumulative); returns how many were released, -1 if the
        ACK names a seq we never sent (dropped, the caller counts it)."""
        if ack_epoch != self.epoch or ack == 0:
            return 0
        if not self.ack_valid(ack):
            return -1
        released = 0
        while self._queue:
            first = next(iter(self._queue))
            if seq_lt(ack, first):
                break
            del self._queue[first]
            released += 1
        if not self._queue:
            self.rto_deadline = None
        elif released:
            self._backoff = 1
            self.rto_deadline = now + rto
        return released

    def nack_valid(self, ranges: list[NackRange]) -> bool:
        """Every range ends at or below the last seq sent (a receiver learns of a hole only
        from a later frame, so it cannot name seqs we never sent)."""
        top = self.top
        return all(seq_le(r.last, top) for r in ranges)

    def on_nack(self, ranges: list[NackRange], now: float, limit: int, holdoff: float) -> list[int]:
        """Seqs to re-send now for these NACK ranges (those still queued, at most `limit`).

        Every ACK repeats all open gaps, so a frame re-sent less than `holdoff` ago is not
        re-sent again (its copy is probably still in flight); first-time NACKs act at once.

        A receiver only knows seq L is missing once it holds L+1, and it lists every gap below
        its highest held frame, so queued frames up to the last range's end + 1 that no range
        names have arrived: they are released like acknowledged ones (a selective ACK).
        The caller checks `nack_valid` first: a NACK above the top would release everything.
        """
        if not ranges or not self._queue:
            return []
        base = self.oldest
        top = seq_next(max((r.last for r in ranges), key=lambda s: seq_diff(s, base)))
        missing: set[int] = set()
        for r in ranges:
            if r.last - r.first < len(self._queue):
                missing.update(range(r.first, r.last + 1))
            else:
                missing.update(s for s in self._queue if r.first <= s <= r.last)
        for seq in [s for s in self._queue if seq_le(s, top) and s not in missing]:
            del self._queue[seq]
        out: list[int] = []
        for seq in sorted(missing, key=lambda s: seq_diff(s, base)):
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
        if not self._queue:
            self.rto_deadline = None
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
    """Tracks the peer's stream: in-order delivery, ACK/NACK bookkeeping.

    Bounds: at most `window` frames and `window_bytes` bytes are held out of order; a frame
    further ahead than `window` seqs, or one that would exceed the byte bound, is dropped
    (counted `window`) and comes again by NACK or RTO: the sender still has it, or it gave it
    up and says so in `oldest`.
    """

    __slots__ = (
        "ack_due",
        "expected",
        "held",
        "held_bytes",
        "nack_due",
        "peer_epoch",
        "resyncs",
        "slack",
        "unacked",
        "window",
        "window_bytes",
    )

    def __init__(self, window: int, window_bytes: int = 1 << 62, slack: int | None = None) -> None:
        self.window = window
        self.window_bytes = window_bytes
        self.slack = slack if slack is not None else 2 * window
        """How far `oldest` may lag behind what we delivered before the streams disagree."""
        self.peer_epoch = 0
        self.resyncs = 0
        """Times the sender's `oldest` contradicted our position and we re-based on it."""
        self.expected = 1
        self.held: dict[int, tuple[Frame, int]] = {}
        self.held_bytes = 0
        self.unacked = 0
        self.ack_due: float | None = None
        self.nack_due: float | None = None

    @property
    def ack(self) -> int:
        return seq_next(self.expected, -1)

    def _rebase(self, oldest: int) -> None:
        self.expected = oldest or 1
        self.held.clear()
        self.held_bytes = 0

    def accept(
        self, hdr: SeqHeader, frame: Frame, now: float, ack_delay: float, size: int = 0
    ) -> tuple[list[Frame], int | None, SyncDropReason | None]:
        """Returns (frames to process in order, previous epoch if re-based, drop reason)."""
        rebased: int | None = None
        if hdr.epoch != self.peer_epoch:
            rebased = self.peer_epoch
            self.peer_epoch = hdr.epoch
            self._rebase(hdr.oldest)
        out: list[Frame] = []
        lag = seq_diff(self.expected, hdr.oldest)
        if lag < 0:
            # The sender gave these up; it pushes a bulk to cover them.
            self.expected = hdr.oldest
            self.held = {s: f for s, f in self.held.items() if seq_le(self.expected, s)}
            self.held_bytes = sum(n for _f, n in self.held.values())
            self._drain(out)
        elif lag > self.slack:
            # The sender can still re-send frames far below what we think we delivered: our
            # position came from something that was not its stream (a forged `oldest`). Its
            # own numbers win; a replayed frame is harmless (the apply rules are idempotent).
            self._rebase(hdr.oldest)
            self.resyncs += 1
        if hdr.seq == 0:
            out.append(frame)
            return out, rebased, None
        self.unacked += 1
        if self.ack_due is None:
            self.ack_due = now + ack_delay
        ahead = seq_diff(hdr.seq, self.expected)
        if ahead < 0 or hdr.seq in self.held:
            return out, rebased, SyncDropReason.DUPLICATE
        if ahead == 0:
            out.append(frame)
            self.expected = seq_next(self.expected)
            self._drain(out)
        elif ahead > self.window or self.held_bytes + size > self.window_bytes:
            return out, rebased, SyncDropReason.WINDOW
        else:
            self.held[hdr.seq] = (frame, size)
            self.held_bytes += size
            if self.nack_due is None:
                self.nack_due = now
        if not self.held:
            self.nack_due = None
        return out, rebased, None

    def _drain(self, out: list[Frame]) -> None:
        while self.expected in self.held:
            frame, size = self.held.pop(self.expected)
            self.held_bytes -= size
            out.append(frame)
            self.expected = seq_next(self.expected)

    def gaps(self, limit: int) -> list[NackRange]:
        if not self.held:
            return []
        out: list[NackRange] = []
        start = self.expected
        for seq in sorted(self.held, key=lambda s: seq_diff(s, self.expected)):
            if seq != start:
                last = seq_next(seq, -1)
                if last < start:  # the gap crosses the wrap: two ranges (first <= last each)
                    out.append(NackRange(start, 0xFFFFFFFF))
                    start = 1
                if start <= last:
                    out.append(NackRange(start, last))
                if len(out) >= limit:
                    break
            start = seq_next(seq)
        return out[:limit]

    def acked(self) -> None:
        """An ACK for everything delivered so far just went out."""
        self.unacked = 0
        self.ack_due = None
