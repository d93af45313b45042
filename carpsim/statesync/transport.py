"""The XSEQ transport around ReliableSender/ReliableReceiver (docs/statesync-protocol.md §3).

Every data frame gets an XSEQ section (our epoch, its seq, the oldest seq we can still resend,
and a piggybacked cumulative ACK of the peer's stream); control frames (ACK, NACK, bulk
requests) are unsequenced (seq 0). In plain mode (`reliable = false`) frames go out bare.
The transport owns its timers (delayed ACK, NACK repeat, RTO) through `next_deadline`.
"""

from __future__ import annotations

from collections.abc import Sequence

from carpsim.errors import DecodeError
from carpsim.statesync import auth, codec
from carpsim.statesync.codec import Frame, NackRange, SeqHeader
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import XSEQ_RESTART, Act, SyncDropReason
from carpsim.statesync.events import Action, CountDrop, PeerRestarted, Transmit
from carpsim.statesync.reliability import ReliableReceiver, ReliableSender


class Transport:
    __slots__ = (
        "_auth_counter",
        "_cfg",
        "_restart_flag",
        "epoch",
        "receiver",
        "replay",
        "sender",
        "stats",
    )

    def __init__(self, config: ReplicatorConfig, epoch: int, stats: dict[str, int]) -> None:
        self._cfg = config
        self.epoch = epoch
        self.sender = ReliableSender(epoch, config.resend_queue_frames)
        self.receiver = ReliableReceiver(
            config.reorder_window,
            config.reorder_window_bytes,
            slack=config.resend_queue_frames + config.reorder_window,
        )
        self._restart_flag = XSEQ_RESTART
        self.stats = stats
        self._auth_counter = 0
        self.replay = auth.ReplayWindow()

    def _tx(self, frame: bytes) -> Transmit:
        """The frame as sent: sealed with the shared key (XAUTH) if there is one."""
        key = self._cfg.key
        if key is None:
            return Transmit(frame)
        self._auth_counter += 1
        return Transmit(auth.seal(frame, key, self.epoch, self._auth_counter))

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def next_deadline(self) -> float | None:
        if not self._cfg.reliable:
            return None
        r = self.receiver
        cands = [t for t in (r.ack_due, r.nack_due, self.sender.rto_deadline) if t is not None]
        return min(cands) if cands else None

    @property
    def backlog(self) -> bool:
        """The resend queue is 3/4 full: a bulk we serve holds back until ACKs drain it."""
        cfg = self._cfg
        return cfg.reliable and len(self.sender) > cfg.resend_queue_frames * 3 // 4

    @property
    def next_seq(self) -> int:
        return self.sender.next_seq

    # ------------------------------------------------------------------ out

    def _seq_section(self, seq: int, flags: int) -> bytes:
        r = self.receiver
        hdr = SeqHeader(self.epoch, seq, self.sender.oldest, r.peer_epoch, r.ack, flags)
        r.acked()
        return codec.encode_seq(hdr)

    def send(self, now: float, bodies: Sequence[bytes], out: list[Action], flags: int) -> None:
        """Sequenced data frames (kept for resend until acknowledged)."""
        cfg = self._cfg
        for body in bodies:
            self._count("frames_tx")
            if not cfg.reliable:
                out.append(self._tx(codec.assemble([body])))
                continue
            seq = self.sender.push(body, now, cfg.resend_timeout)
            head = self._seq_section(seq, flags | self._restart_flag)
            out.append(self._tx(codec.assemble([head, body])))
        if bodies:
            self._restart_flag = 0

    def send_unsequenced(self, bodies: Sequence[bytes], out: list[Action]) -> None:
        """Requests: cheap to repeat (the next retry or UPD_C asks again), never resent."""
        for body in bodies:
            self._count("frames_tx")
            if self._cfg.reliable:
                out.append(self._tx(codec.assemble([self._seq_section(0, 0), body])))
            else:
                out.append(self._tx(codec.assemble([body])))

    def take_abandoned(self) -> bool:
        """Unacknowledged frames were dropped since the last call (only a bulk covers them)."""
        return self.sender.take_abandoned()

    def send_control(self, now: float, out: list[Action]) -> None:
        """A stand-alone ACK, with NACK ranges for any gap."""
        r = self.receiver
        gaps = r.gaps(self._cfg.max_nacks())
        body = [self._seq_section(0, 0)]
        if gaps:
            body.append(codec.encode_nacks(gaps))
            r.nack_due = now + self._cfg.nack_interval
            self._count("nacks_tx")
        else:
            r.nack_due = None
        self._count("acks_tx")
        out.append(self._tx(codec.assemble(body)))

    def on_timer(self, now: float, out: list[Action]) -> None:
        cfg = self._cfg
        if not cfg.reliable:
            return
        r = self.receiver
        if (r.ack_due is not None and now >= r.ack_due) or (
            r.nack_due is not None and now >= r.nack_due
        ):
            self.send_control(now, out)
        for seq in self.sender.due(now, cfg.resend_timeout, cfg.resend_burst):
            self._resend(seq, out)

    def _resend(self, seq: int, out: list[Action]) -> None:
        body = self.sender.body(seq)
        if body is not None:
            self._count("resends")
            out.append(self._tx(codec.assemble([self._seq_section(seq, 0), body])))

    # ------------------------------------------------------------------ in

    def receive(
        self,
        now: float,
        hdr: SeqHeader,
        frame: Frame,
        link_up: bool,
        out: list[Action],
        *,
        size: int = 0,
    ) -> list[Frame]:
        """A sequenced frame from the peer: ACK/NACK bookkeeping; the frames now deliverable
        in order (none for a duplicate, several when it fills a gap). An ACK or NACK naming
        seqs we never sent is dropped (`badack`/`badnack`), the rest of the frame still counts."""
        cfg = self._cfg
        mine = hdr.ack_epoch == self.epoch
        if self.sender.on_ack(hdr.ack_epoch, hdr.ack, now, cfg.resend_timeout) < 0:
            out.append(CountDrop(SyncDropReason.BADACK, f"ack {hdr.ack} > {self.sender.top}"))
        if mine and link_up:
            for section in frame.sections:
                if section.action == Act.XNACK:
                    ranges = [i for i in section.items if isinstance(i, NackRange)]
                    if not self.sender.nack_valid(ranges):
                        out.append(CountDrop(SyncDropReason.BADNACK, "above the top seq"))
                        continue
                    limit = cfg.resend_burst * 4
                    for seq in self.sender.on_nack(ranges, now, limit, cfg.resend_timeout / 2):
                        self._resend(seq, out)
        resyncs = self.receiver.resyncs
        frames, rebased, drop = self.receiver.accept(hdr, frame, now, cfg.ack_delay, size)
        if self.receiver.resyncs != resyncs:
            out.append(CountDrop(SyncDropReason.RESYNC, f"oldest {hdr.oldest}"))
        if rebased is not None:
            out.append(PeerRestarted(rebased, hdr.epoch))
            if not mine:
                # A new incarnation that has not heard our stream yet: it requests a bulk,
                # which supersedes everything queued for its predecessor.
                self.sender.abandon_all()
                self.sender.take_abandoned()
                self._restart_flag = XSEQ_RESTART
        if drop is not None:
            out.append(CountDrop(drop, f"seq {hdr.seq}"))
        return frames

    def ack_due_now(self, now: float) -> bool:
        r = self.receiver
        return r.unacked >= self._cfg.ack_every or r.nack_due == now

    def authenticate(self, data: bytes) -> CountDrop | None:
        """Keyed mode: why `data` is refused (badauth / replay / loop), or None."""
        key = self._cfg.key
        if key is None:
            return None
        try:
            epoch, counter = auth.unseal(data, key)
        except DecodeError as exc:
            return CountDrop(SyncDropReason.BADAUTH, exc.detail)
        if epoch == self.epoch:
            return self.loop_drop()
        if not self.replay.check(epoch, counter):
            return CountDrop(SyncDropReason.REPLAY, f"epoch {epoch:08x} counter {counter}")
        return None

    @staticmethod
    def loop_drop() -> CountDrop:
        return CountDrop(SyncDropReason.LOOP, "own epoch")
