"""Replicator machine driven by hand on exact virtual time (single node + scripted peer)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from carpsim.errors import ConfigError
from carpsim.statesync import codec
from carpsim.statesync.codec import (
    BulkStatus,
    CompressedUpdate,
    Frame,
    Section,
    SeqHeader,
    StateRef,
    decode_frame,
    encode_frame,
)
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import Act, BusStatus, SyncDropReason
from carpsim.statesync.events import (
    Action,
    BulkCompleted,
    BulkServed,
    CountDrop,
    CtChange,
    InstallStates,
    LocalEvent,
    ReadyChanged,
    RemoveStates,
    ResyncNeeded,
    Transmit,
)
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.statesync.replicator import BulkPhase, Replicator

PEER_EPOCH = 0x51515151


def key(i: int, proto: int = 6) -> FlowKey:
    return FlowKey(proto, bytes([192, 168, 110, i]), 40000 + i, bytes([203, 0, 113, 10]), 443)


def local(i: int, st: TcpState = TcpState.SYN_SENT, **kw: object) -> StateRecord:
    return StateRecord(key(i), tcp_state=st, timeout=120, **kw)  # type: ignore[arg-type]


def make(**kw: object) -> Replicator:
    cfg = ReplicatorConfig(creatorid=0xA1, **kw)  # type: ignore[arg-type]
    return Replicator(cfg, random.Random(1))


def frames(actions: list[Action]) -> list[Frame]:
    return [decode_frame(a.data) for a in actions if isinstance(a, Transmit)]


def sections(actions: list[Action], action: int) -> list[Section]:
    return [s for f in frames(actions) for s in f.sections if s.action == action]


def peer_frame(seq: int, *secs: Section, ack: int = 0, ack_epoch: int = 0) -> bytes:
    hdr = Section(Act.XSEQ, (SeqHeader(PEER_EPOCH, seq, 1, ack_epoch, ack),))
    return encode_frame(Frame((hdr, *secs)))


def ready_node() -> Replicator:
    """Started, bulk answered by an empty peer: ready at t=0.01."""
    r = make()
    r.started(0.0)
    bus = [BulkStatus(2, 0, BusStatus.START), BulkStatus(2, 0, BusStatus.END)]
    out = r.frame_received(0.01, peer_frame(1, Section(Act.BUS, tuple(bus))))
    assert ReadyChanged(True, "bulk_done") in out
    assert r.next_deadline() == pytest.approx(0.06)  # delayed ACK
    (ack,) = frames(r.on_timer(r.next_deadline() or 0.0))
    assert ack.seq == SeqHeader(r.epoch, 0, 1, PEER_EPOCH, 1)
    assert r.next_deadline() == 1.0
    assert r.on_timer(1.0) == []  # liveness refresh: nothing local yet
    assert r.next_deadline() == 2.0
    return r


def test_start_requests_bulk_and_is_not_ready() -> None:
    r = make()
    out = r.started(0.0)
    assert out[0] == ReadyChanged(False, "bulk_pending")
    (req,) = sections(out, Act.UPD_REQ)
    assert req.items == (StateRef(0, 0),)
    hdr = frames(out)[0].seq
    assert hdr is not None
    assert hdr.seq == 0  # requests are unsequenced: the retry timer re-sends them
    assert r.next_deadline() == 1.0  # refresh tick before the 2 s retry
    assert r.on_timer(1.0) == []
    assert r.next_deadline() == 2.0


def test_bulk_request_retries_then_gives_up_ready_anyway() -> None:
    r = make(bulk_max_tries=3, refresh_interval=100.0)
    r.started(0.0)
    assert len(sections(r.on_timer(2.0), Act.UPD_REQ)) == 1
    assert len(sections(r.on_timer(4.0), Act.UPD_REQ)) == 1
    out = r.on_timer(6.0)
    assert BulkCompleted(6.0, 0, gave_up=True) in out
    assert ReadyChanged(True, "bulk_gave_up") in out
    assert r.bulk_phase is BulkPhase.DONE


def test_bulk_receive_completes_and_reports_duration_and_count() -> None:
    r = make()
    r.started(0.0)
    r.frame_received(0.5, peer_frame(1, Section(Act.BUS, (BulkStatus(2, 0, BusStatus.START),))))
    assert r.bulk_phase is BulkPhase.RECEIVING
    assert r.next_deadline() == pytest.approx(0.55)  # delayed ACK for the BUS START frame
    recs = tuple(StateRecord(key(i), creatorid=2, id=i + 1) for i in range(3))
    out = r.frame_received(0.6, peer_frame(2, Section(Act.UPD, recs)))
    assert out[0] == InstallStates(recs)
    out = r.frame_received(0.7, peer_frame(3, Section(Act.BUS, (BulkStatus(2, 0, BusStatus.END),))))
    assert BulkCompleted(pytest.approx(0.7), 3) in out  # type: ignore[arg-type]
    assert ReadyChanged(True, "bulk_done") in out


def test_link_flap_after_a_completed_bulk_keeps_ready_and_requests_nothing() -> None:
    """A surviving master whose sync link flaps keeps its table: no demotion, no new bulk."""
    r = ready_node()
    assert r.in_sync
    assert r.link_down(2.5) == []
    assert r.ready is True
    out = r.link_up(3.0)
    assert sections(out, Act.UPD_REQ) == []
    assert not any(isinstance(a, ReadyChanged) for a in out)
    assert r.ready is True
    assert r.bulk_phase is BulkPhase.DONE
    # The peer's frame 2 was lost during the flap; frame 3 shows the gap: NACK, not a bulk.
    rec = StateRecord(key(3), creatorid=2, id=3)
    out = r.frame_received(3.1, peer_frame(3, Section(Act.INS, (rec,))))
    (nack,) = sections(out, Act.XNACK)
    assert [(n.first, n.last) for n in nack.items] == [(2, 2)]  # type: ignore[union-attr]
    assert sections(out, Act.UPD_REQ) == []
    # No timer brings the bulk request back either.
    assert all(sections(r.on_timer(t), Act.UPD_REQ) == [] for t in (4.0, 5.0, 6.0, 7.0))


def test_link_down_before_the_bulk_completed_is_not_ready_and_link_up_requests_again() -> None:
    r = make()
    r.started(0.0)
    assert r.link_down(0.5) == []  # already not ready (bulk_pending)
    assert r.ready_reason == "link_down"
    out = r.link_up(1.0)
    assert len(sections(out, Act.UPD_REQ)) == 1
    assert r.ready is False
    assert not r.in_sync


def test_a_given_up_bulk_is_not_in_sync_link_flap_demotes_and_requests_again() -> None:
    r = make(bulk_max_tries=1, refresh_interval=100.0)
    r.started(0.0)
    assert ReadyChanged(True, "bulk_gave_up") in r.on_timer(2.0)
    assert not r.in_sync
    assert r.link_down(3.0) == [ReadyChanged(False, "link_down")]
    out = r.link_up(4.0)
    assert len(sections(out, Act.UPD_REQ)) == 1
    assert r.ready is False


def test_local_insert_is_coalesced_and_gets_an_identity() -> None:
    r = ready_node()
    assert r.local_inserted(1.0, local(1)) == []
    assert r.next_deadline() == pytest.approx(1.1)
    r.local_updated(1.05, local(1, TcpState.ESTABLISHED))
    out = r.on_timer(1.1)
    (ins,) = sections(out, Act.INS)
    (rec,) = ins.items
    assert isinstance(rec, StateRecord)
    assert rec.creatorid == 0xA1
    assert rec.id != 0
    assert rec.tcp_state is TcpState.ESTABLISHED  # latest state, one record
    assert sections(out, Act.UPD) == []


def test_insert_then_delete_within_the_window_sends_only_the_delete() -> None:
    r = ready_node()
    r.local_inserted(1.0, local(1))
    r.local_deleted(1.01, key(1))
    out = r.on_timer(1.1)
    assert sections(out, Act.INS) == []
    assert len(sections(out, Act.DEL_C)) == 1  # a bulk may have carried the state already


def test_expiry_of_a_peer_driven_copy_is_not_replicated() -> None:
    r = ready_node()
    peer = StateRecord(key(4), creatorid=2, id=3, tcp_state=TcpState.ESTABLISHED)
    r.frame_received(1.1, peer_frame(2, Section(Act.INS, (peer,))))
    assert r.local_deleted(1.2, key(4)) == []
    assert r.pending_count() == 0
    assert r.table.get(key(4)) is None


def test_delete_after_send_goes_out_as_del_c_and_is_idempotent() -> None:
    r = ready_node()
    r.local_inserted(1.0, local(1))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    rec = ins.items[0]
    assert isinstance(rec, StateRecord)
    assert r.local_deleted(2.0, key(1)) == []
    assert r.local_deleted(2.0, key(1)) == []  # unknown now: ignored
    (dels,) = sections(r.on_timer(2.1), Act.DEL_C)
    assert dels.items == (StateRef(0xA1, rec.id),)


def test_echo_of_installed_state_is_not_resent() -> None:
    r = ready_node()
    peer_rec = StateRecord(key(5), creatorid=2, id=9, tcp_state=TcpState.ESTABLISHED,
                           nat_src=(bytes([192, 168, 100, 254]), 5000), timeout=300)  # fmt: skip
    out = r.frame_received(1.0, peer_frame(2, Section(Act.INS, (peer_rec,))))
    assert InstallStates((peer_rec,)) in out
    echo = replace(peer_rec, creatorid=0, id=0, status=0x1CE)  # kernel adds CONFIRMED etc.
    assert r.local_inserted(1.01, echo) == []
    assert r.pending_count() == 0
    # traffic through us later moves the counters: refreshed as UPD_C with the peer's identity
    r.local_updated(1.5, replace(echo, packets=(3, 2)))
    out = r.on_timer(2.0)
    (upd_c,) = sections(out, Act.UPD_C)
    item = upd_c.items[0]
    assert isinstance(item, CompressedUpdate)
    assert (item.creatorid, item.id, item.timeout) == (2, 9, 300)


def test_sync_traffic_and_sync_addresses_are_never_replicated() -> None:
    r = ready_node()
    r2 = make(excluded_addresses=frozenset({"192.168.110.7"}))
    r.local_inserted(1.0, StateRecord(key(1, proto=240)))
    assert r.pending_count() == 0
    r2.local_inserted(1.0, local(7))
    assert r2.pending_count() == 0
    r2.local_inserted(1.0, local(8))
    assert r2.pending_count() == 1


def test_bad_frames_are_counted_not_raised() -> None:
    r = ready_node()
    assert r.frame_received(1.0, b"\x06" + bytes(30)) == [
        CountDrop(SyncDropReason.BADVER, "version 6")
    ]
    assert r.frame_received(1.0, b"") == [CountDrop(SyncDropReason.BADLEN, "0 bytes < header")]


def test_own_frames_are_dropped_as_loop() -> None:
    r = make()
    out = r.started(0.0)
    (own,) = [a for a in out if isinstance(a, Transmit)]
    assert r.frame_received(0.1, own.data) == [CountDrop(SyncDropReason.LOOP, "own epoch")]


def test_unknown_compressed_update_requests_the_full_state() -> None:
    r = ready_node()
    upd = CompressedUpdate(2, 77, TcpState.ESTABLISHED, 60)
    assert r.frame_received(1.0, peer_frame(2, Section(Act.UPD_C, (upd,)))) == []
    (req,) = sections(r.on_timer(1.1), Act.UPD_REQ)
    assert req.items == (StateRef(2, 77),)


def test_compressed_update_applies_forward_and_refuses_backwards() -> None:
    r = ready_node()
    rec = StateRecord(key(3), creatorid=2, id=4, tcp_state=TcpState.FIN_WAIT, timeout=10)
    r.frame_received(1.0, peer_frame(2, Section(Act.INS, (rec,))))
    upd = CompressedUpdate(2, 4, TcpState.TIME_WAIT, 120)
    out = r.frame_received(1.1, peer_frame(3, Section(Act.UPD_C, (upd,))))
    assert out == [InstallStates((replace(rec, tcp_state=TcpState.TIME_WAIT, timeout=120),))]
    back = CompressedUpdate(2, 4, TcpState.ESTABLISHED, 999)
    out = r.frame_received(1.2, peer_frame(4, Section(Act.UPD_C, (back,))))
    assert out == [CountDrop(SyncDropReason.STALE, "compressed update")]


def test_full_update_request_and_del_c_and_clr_from_peer() -> None:
    r = ready_node()
    r.local_inserted(1.0, local(1))
    rec = sections(r.on_timer(1.1), Act.INS)[0].items[0]
    assert isinstance(rec, StateRecord)
    r.frame_received(1.2, peer_frame(2, Section(Act.UPD_REQ, (StateRef(0xA1, rec.id),))))
    (upd,) = sections(r.on_timer(1.3), Act.UPD)
    assert upd.items == (rec,)
    peer = StateRecord(key(9), creatorid=2, id=1)
    r.frame_received(1.4, peer_frame(3, Section(Act.INS, (peer,))))
    out = r.frame_received(1.5, peer_frame(4, Section(Act.DEL_C, (StateRef(2, 1), StateRef(2, 1)))))
    assert out == [RemoveStates((key(9),))]
    r.frame_received(1.6, peer_frame(5, Section(Act.INS, (peer,))))
    out = r.frame_received(1.7, peer_frame(6, Section(Act.CLR, (codec.Clear(2),))))
    assert out == [RemoveStates((key(9),))]


def test_serves_a_paced_bulk_on_request() -> None:
    r = ready_node()
    for i in range(40):
        r.local_inserted(1.0, local(i))
    r.on_timer(1.1)
    cfg = r.config
    req = peer_frame(0, Section(Act.UPD_REQ, (StateRef(0, 0),)))
    out = r.frame_received(2.0, req)
    bus = sections(out, Act.BUS)
    assert bus[0].items[0] == BulkStatus(0xA1, 0, BusStatus.START)
    states = [i for s in sections(out, Act.UPD) for i in s.items]
    assert len(states) == 40
    assert max(len(s.items) for s in sections(out, Act.UPD)) == cfg.states_per_frame() == 5
    assert bus[-1].items[0] == BulkStatus(0xA1, 0, BusStatus.END)
    assert BulkServed(0.0, 40, False) in out
    assert all(len(a.data) <= cfg.mtu - 20 for a in out if isinstance(a, Transmit))


def test_bulk_pacing_spreads_frames_over_ticks() -> None:
    r = make(bulk_frames_per_tick=2, flush_interval=0.01)
    r.started(0.0)
    for i in range(30):
        r.local_inserted(0.0, local(i))
    out = r.frame_received(0.5, peer_frame(0, Section(Act.UPD_REQ, (StateRef(0, 0),))))
    assert len(sections(out, Act.UPD)) == 2
    assert r.serving_bulk
    assert r.next_deadline() == pytest.approx(0.52)
    out = r.on_timer(0.52)
    assert len(sections(out, Act.UPD)) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("creatorid", 0),
        ("mtu", 200),
        ("flush_interval", 0.0),
        ("bulk_max_tries", 0),
        ("excluded_addresses", frozenset({"nope"})),
    ],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    kw: dict[str, object] = {"creatorid": 1, field: value}
    with pytest.raises(ConfigError) as exc:
        ReplicatorConfig(**kw)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_plain_mode_sends_no_extension() -> None:
    r = make(reliable=False)
    out = r.started(0.0)
    assert frames(out)[0].seq is None
    assert r.config.states_per_frame() == 5


def _peer_bulk(r: Replicator, now: float, seq: int, *states: StateRecord) -> list[Action]:
    """The peer answers a bulk request: BUS START, one UPD frame, BUS END (seq, seq+1, seq+2)."""
    start, end = (Section(Act.BUS, (BulkStatus(2, 0, st),)) for st in BusStatus)
    out = r.frame_received(now, peer_frame(seq, start))
    out += r.frame_received(now, peer_frame(seq + 1, Section(Act.UPD, states)))
    out += r.frame_received(now, peer_frame(seq + 2, end))
    return out


def test_own_state_in_the_peers_bulk_stays_ours_and_its_delete_goes_out() -> None:
    """Property falsifying example (seed 0): our retried bulk request is answered with the
    peer's copy of our own state (a second older): it must not take the state from us."""
    r = ready_node()
    r.local_inserted(1.0, local(1, TcpState.NONE))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    (rec,) = ins.items
    assert isinstance(rec, StateRecord)
    out = _peer_bulk(r, 2.0, 2, replace(rec, timeout=119))
    assert [a for a in out if isinstance(a, (InstallStates, RemoveStates, CountDrop))] == []
    assert r.table.get(key(1)) == rec  # our kernel's version stands
    assert r.local_deleted(2.01, key(1)) == []
    (dels,) = sections(r.on_timer(2.11), Act.DEL_C)
    assert dels.items == (StateRef(0xA1, rec.id),)


def test_stale_copy_of_a_local_state_in_a_bulk_is_refused_and_ours_goes_out() -> None:
    r = ready_node()
    r.local_inserted(1.0, local(1, TcpState.FIN_WAIT))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    (rec,) = ins.items
    assert isinstance(rec, StateRecord)
    r.local_updated(1.2, local(1, TcpState.CLOSE_WAIT))  # crosses the peer's bulk below
    out = _peer_bulk(r, 1.21, 2, rec)
    assert CountDrop(SyncDropReason.STALE, "copy of a local state") in out
    assert not any(isinstance(a, InstallStates) for a in out)
    (upd,) = sections(r.on_timer(1.3), Act.UPD)
    assert upd.items == (replace(rec, tcp_state=TcpState.CLOSE_WAIT),)
    r.local_deleted(1.4, key(1))
    (dels,) = sections(r.on_timer(1.5), Act.DEL_C)
    assert dels.items == (StateRef(0xA1, rec.id),)


def test_a_local_state_the_peer_saw_progress_becomes_the_peers() -> None:
    """After a failover the peer drives our state: its progress applies and the peer decides."""
    r = ready_node()
    r.local_inserted(1.0, local(1, TcpState.ESTABLISHED))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    (rec,) = ins.items
    assert isinstance(rec, StateRecord)
    ahead = replace(rec, tcp_state=TcpState.TIME_WAIT, timeout=30)
    out = _peer_bulk(r, 2.0, 2, ahead)
    assert InstallStates((ahead,)) in out
    assert r.local_deleted(2.5, key(1)) == []  # expiry of what is now the peer's: not ours to say
    assert r.pending_count() == 0


def test_own_state_that_loses_a_collision_is_deleted_on_the_peer_too() -> None:
    """Split brain: the peer's larger identity replaces ours; ours ended here, so its DEL_C goes
    out (a copy the peer took while its own was gone must not outlive it) and it is refused if
    it comes back."""
    r = ready_node()
    r.local_inserted(1.0, local(1, TcpState.LAST_ACK))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    (ours,) = ins.items
    assert isinstance(ours, StateRecord)
    theirs = StateRecord(key(1), creatorid=0xFFFF, id=5, tcp_state=TcpState.CLOSE_WAIT)
    assert (theirs.creatorid, theirs.id) > (ours.creatorid, ours.id)
    out = r.frame_received(1.2, peer_frame(2, Section(Act.INS, (theirs,))))
    assert out == [InstallStates((theirs,))]
    out = r.on_timer(1.3)
    (dels,) = sections(out, Act.DEL_C)
    assert dels.items == (StateRef(0xA1, ours.id),)
    assert sections(out, Act.INS) == sections(out, Act.UPD) == []  # theirs is not echoed back
    out = r.frame_received(1.4, peer_frame(3, Section(Act.INS, (ours,))))
    assert out == [CountDrop(SyncDropReason.STALE, "deleted here")]
    assert r.local_deleted(1.5, key(1)) == []  # theirs now: the peer decides


def test_local_events_dispatch_by_kind_and_an_overrun_asks_for_a_resync() -> None:
    r = ready_node()
    events: list[LocalEvent] = [
        (CtChange.NEW, local(1)),
        (CtChange.UPDATE, local(1, TcpState.ESTABLISHED)),
        (CtChange.NEW, local(2)),
        (CtChange.DESTROY, key(2)),
        (CtChange.OVERRUN, None),
    ]
    assert r.local_events(1.0, events) == [ResyncNeeded()]
    out = r.on_timer(1.1)
    (ins,) = sections(out, Act.INS)
    assert [(i.key, i.tcp_state) for i in ins.items] == [(key(1), TcpState.ESTABLISHED)]  # type: ignore[union-attr]
    assert len(sections(out, Act.DEL_C)) == 1  # key 2 may have reached the peer in a bulk


def test_local_resync_deletes_our_states_the_dump_did_not_see() -> None:
    r = ready_node()
    for i in (1, 2, 3):
        r.local_inserted(1.0, local(i))
    peer = StateRecord(key(9), creatorid=2, id=5, tcp_state=TcpState.ESTABLISHED)
    r.frame_received(1.05, peer_frame(2, Section(Act.INS, (peer,))))
    (ins,) = sections(r.on_timer(1.1), Act.INS)
    ids = {i.key: i.id for i in ins.items}  # type: ignore[union-attr]
    assert r.own_states() == 3
    # the dump saw key 1; an event touched key 2 while it ran; key 3 and the peer's are gone
    assert r.local_resync(2.0, frozenset({key(1)}), frozenset({key(2)})) == []
    (dels,) = sections(r.on_timer(2.1), Act.DEL_C)
    assert dels.items == (StateRef(0xA1, ids[key(3)]),)
    assert r.table.get(key(9)) == peer  # the peer's state is the peer's to end
    assert r.own_states() == 2
