"""In-memory StateTable: pfsync apply rules, identity index, idempotent deletes."""

from __future__ import annotations

from dataclasses import replace

from carpsim.statesync.record import FlowKey, StateRecord, TcpState, tcp_progress
from carpsim.statesync.table import InMemoryStateTable, StateTable, should_apply

KEY = FlowKey(6, bytes([10, 0, 0, 1]), 1000, bytes([10, 0, 0, 2]), 80)
REC = StateRecord(KEY, creatorid=1, id=10, tcp_state=TcpState.ESTABLISHED, timeout=100)


def test_implements_the_shared_interface() -> None:
    table: StateTable = InMemoryStateTable()
    assert table.apply(REC)
    assert table.snapshot() == [REC]
    assert table.get(KEY) == REC
    assert len(table) == 1
    assert table.delete(KEY)
    assert not table.delete(KEY)  # idempotent
    assert len(table) == 0


def test_tcp_state_never_moves_backwards_for_the_same_identity() -> None:
    t = InMemoryStateTable()
    t.apply(replace(REC, tcp_state=TcpState.FIN_WAIT))
    assert not t.apply(REC)
    assert t.get(KEY).tcp_state is TcpState.FIN_WAIT  # type: ignore[union-attr]
    assert t.apply(replace(REC, tcp_state=TcpState.CLOSE_WAIT, timeout=5))  # forward, newer data
    assert t.get(KEY).timeout == 5  # type: ignore[union-attr]


def test_tcp_progress_is_a_strict_order_so_crossing_updates_converge() -> None:
    """Equal ranks would let two different states each replace the other (a swap)."""
    assert len({tcp_progress(s) for s in TcpState}) == len(TcpState)
    for older, newer in ((TcpState.SYN_SENT, TcpState.SYN_SENT2),
                         (TcpState.SYN_SENT2, TcpState.SYN_RECV),
                         (TcpState.FIN_WAIT, TcpState.CLOSE_WAIT)):  # fmt: skip
        assert should_apply(replace(REC, tcp_state=older), replace(REC, tcp_state=newer))
        assert not should_apply(replace(REC, tcp_state=newer), replace(REC, tcp_state=older))


def test_identical_record_is_not_a_change() -> None:
    t = InMemoryStateTable()
    assert t.apply(REC)
    assert not t.apply(REC)
    assert not should_apply(REC, REC)


def test_new_identity_under_the_same_key_replaces_even_if_earlier() -> None:
    t = InMemoryStateTable()
    t.apply(replace(REC, tcp_state=TcpState.TIME_WAIT))
    fresh = replace(REC, id=11, tcp_state=TcpState.SYN_SENT)
    assert t.apply(fresh)
    assert t.get(KEY) == fresh
    assert t.by_id(1, 10) is None
    assert t.by_id(1, 11) == fresh


def test_identity_index_and_clear_creator() -> None:
    t = InMemoryStateTable()
    other = FlowKey(17, bytes([10, 0, 0, 3]), 53, bytes([10, 0, 0, 4]), 53)
    t.apply(REC)
    t.apply(StateRecord(other, creatorid=2, id=10))
    assert t.delete_by_id(1, 10) == KEY
    assert t.delete_by_id(1, 10) is None
    t.apply(REC)
    assert t.clear_creator(2) == [other]
    assert t.keys() == [KEY]


def test_a_reused_identity_evicts_the_stale_holder() -> None:
    t = InMemoryStateTable()
    other = FlowKey(6, bytes([10, 0, 0, 9]), 1, bytes([10, 0, 0, 2]), 80)
    t.put(REC)
    t.put(StateRecord(other, creatorid=1, id=10))
    assert KEY not in t
    assert t.by_id(1, 10).key == other  # type: ignore[union-attr]
    assert len(t) == 1


def test_per_creator_counts_follow_puts_replacements_evictions_and_deletes() -> None:
    t = InMemoryStateTable()
    k = [FlowKey(6, bytes([10, 0, 0, i]), 1000, bytes([10, 0, 0, 99]), 80) for i in range(4)]
    t.put(StateRecord(k[0], creatorid=1, id=1))
    t.put(StateRecord(k[1], creatorid=1, id=2))
    t.put(StateRecord(k[2], creatorid=2, id=1))
    assert (t.count_creator(1), t.count_creator(2)) == (2, 1)
    t.put(StateRecord(k[1], creatorid=2, id=7))  # the tuple reused by the other node
    assert (t.count_creator(1), t.count_creator(2)) == (1, 2)
    t.put(StateRecord(k[3], creatorid=2, id=7))  # one identity, one flow: k[1] is evicted
    assert (t.count_creator(1), t.count_creator(2)) == (1, 2)
    assert k[1] not in t
    t.clear_creator(2)
    t.delete(k[0])
    assert (t.count_creator(1), t.count_creator(2), len(t)) == (0, 0, 0)
    for c in (1, 2):
        assert t.count_creator(c) == sum(1 for r in t if r.creatorid == c)
