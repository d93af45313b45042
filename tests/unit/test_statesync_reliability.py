"""Sender/receiver bookkeeping of the XSEQ/XNACK extension."""

from __future__ import annotations

from carpsim.statesync.codec import Frame, NackRange, SeqHeader
from carpsim.statesync.reliability import ReliableReceiver, ReliableSender

F = Frame(())


def hdr(seq: int, epoch: int = 7, oldest: int = 1) -> SeqHeader:
    return SeqHeader(epoch, seq, oldest, 0, 0)


def test_sender_numbers_acks_and_bounds() -> None:
    s = ReliableSender(epoch=5, capacity=3)
    assert [s.push(b"x%d" % i, 0.0, 0.25) for i in range(3)] == [1, 2, 3]
    assert s.oldest == 1
    assert s.on_ack(6, 3, 0.0, 0.25) == 0  # other epoch: ignored
    assert s.on_ack(5, 2, 0.0, 0.25) == 2
    assert s.oldest == 3
    s.push(b"4", 0.0, 0.25)
    s.push(b"5", 0.0, 0.25)
    assert not s.take_abandoned()
    s.push(b"6", 0.0, 0.25)  # 4 queued > capacity 3: seq 3 abandoned, never acked
    assert s.take_abandoned()
    assert s.oldest == 4
    assert s.body(3) is None
    assert s.body(6) == b"6"


def test_sender_rto_resends_oldest_first_and_rearms() -> None:
    s = ReliableSender(epoch=5, capacity=10)
    for _ in range(3):
        s.push(b"d", 1.0, 0.25)
    assert s.rto_deadline == 1.25
    assert s.due(1.2, 0.25, 10) == []
    assert s.due(1.25, 0.25, 2) == [1, 2]  # only the head is probed
    assert s.rto_deadline == 1.75  # backed off x2
    assert s.due(1.75, 0.25, 2) == [1, 2]
    assert s.rto_deadline == 2.75  # x4
    assert s.on_ack(5, 1, 2.0, 0.25) == 1  # progress resets the back-off
    assert s.rto_deadline == 2.25
    assert s.due(2.25, 0.25, 5) == [2, 3]


def test_nack_resends_holes_and_releases_what_was_selectively_received() -> None:
    s = ReliableSender(epoch=5, capacity=10)
    for _ in range(6):
        s.push(b"d", 0.0, 0.25)
    # receiver holds 3 and 5..6 (knows of 6 since it got it): 1, 2, 4 missing
    assert s.on_nack([NackRange(1, 2), NackRange(4, 4)], 0.01, 10, 0.1) == [1, 2, 4]
    assert s.body(3) is None
    assert s.body(5) is None  # last range end + 1 arrived
    assert s.body(6) == b"d"  # nothing said about 6
    # repeated NACK right after a re-send: hold off; later it goes again
    assert s.on_nack([NackRange(1, 2)], 0.02, 10, 0.1) == []
    assert s.on_nack([NackRange(1, 2)], 0.2, 10, 0.1) == [1, 2]


def test_receiver_delivers_in_order_and_nacks_gaps() -> None:
    r = ReliableReceiver(window=100)
    f1, f2, f3 = Frame(()), Frame(()), Frame(())
    out, rebased, drop = r.accept(hdr(1), f1, 0.0, 0.05)
    assert (out, rebased, drop) == ([f1], 0, None)  # first contact re-bases from epoch 0
    assert r.accept(hdr(3), f3, 0.0, 0.05)[0] == []
    assert r.gaps(10) == [NackRange(2, 2)]
    assert r.nack_due == 0.0
    assert r.accept(hdr(2), f2, 0.0, 0.05)[0] == [f2, f3]
    assert r.ack == 3
    assert r.accept(hdr(2), f2, 0.0, 0.05)[2] == "duplicate"
    assert r.unacked == 4
    assert r.ack_due == 0.05
    r.acked()
    assert r.unacked == 0
    assert r.ack_due is None


def test_receiver_skips_what_the_sender_abandoned_and_rebases_on_new_epoch() -> None:
    r = ReliableReceiver(window=100)
    r.accept(hdr(1), F, 0.0, 0.05)
    r.accept(hdr(5), F, 0.0, 0.05)  # 2..4 missing
    out, _, _ = r.accept(hdr(6, oldest=5), F, 0.0, 0.05)  # sender gave up on 2..4
    assert len(out) == 2
    assert r.ack == 6
    out, rebased, _ = r.accept(hdr(3, epoch=8, oldest=3), F, 1.0, 0.05)
    assert rebased == 7
    assert len(out) == 1
    assert r.ack == 3


def test_receiver_does_not_hold_beyond_its_window() -> None:
    """A frame further ahead than the window is dropped (the sender re-sends it), the gap is
    not skipped: only the sender's `oldest` gives frames up."""
    r = ReliableReceiver(window=2)
    r.accept(hdr(1), F, 0.0, 0.05)
    r.accept(hdr(3), F, 0.0, 0.05)
    out, _, drop = r.accept(hdr(5), F, 0.0, 0.05)
    assert drop == "window"
    assert out == []
    assert set(r.held) == {3}
    assert len(r.accept(hdr(2), F, 0.0, 0.05)[0]) == 2
    assert r.ack == 3
