"""Sweep of the per-flow ownership table: every (Owner, FlowInput) pair the replicator can meet.

For each reachable pair a replicator is put into the owner state through its public inputs (a
peer frame, conntrack events, timers), given the input's stimulus, and checked: the key's new
owner is one of the rule's targets and the rule's effect is visible (DEL_C queued, state
applied or refused, refresh claimed, full state requested ...). Hypothesis varies the TCP state,
who created the flow and the transport mode.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.statesync.codec import (
    BulkStatus,
    Clear,
    CompressedUpdate,
    Frame,
    Section,
    SeqHeader,
    StateRef,
    encode_frame,
)
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import UPDC_TRAFFIC, Act, BusStatus
from carpsim.statesync.events import Action, InstallStates, RemoveStates
from carpsim.statesync.ownership import FLOW_RULES, Effect, FlowInput, Owner
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.statesync.replicator import Replicator

ME = 0xA1
PEER_CID = 2
PEER_EPOCH = 0x51515151
K = FlowKey(6, bytes([10, 0, 0, 1]), 1000, bytes([10, 9, 0, 1]), 80)
UNKNOWN = (PEER_CID, 999)
FI = FlowInput


class Harness:
    def __init__(self, reliable: bool, *, bulk_first: bool = True) -> None:
        self.r = Replicator(ReplicatorConfig(creatorid=ME, reliable=reliable), random.Random(3))
        self.reliable = reliable
        self.seq = 0
        self.now = 0.0
        self.r.started(self.now)
        if bulk_first:
            self.bulk()

    def bulk(self) -> None:
        """The peer answers our bulk request (with nothing we do not hold already)."""
        bus = tuple(BulkStatus(PEER_CID, 0, s) for s in BusStatus)
        self.frame(Section(Act.BUS, bus))
        assert self.r.ready

    def tick(self, dt: float = 0.01) -> None:
        self.now += dt

    def frame(self, *secs: Section) -> list[Action]:
        self.tick()
        head: tuple[Section, ...] = ()
        if self.reliable:
            self.seq += 1
            head = (Section(Act.XSEQ, (SeqHeader(PEER_EPOCH, self.seq, 1, 0, 0),)),)
        return self.r.frame_received(self.now, encode_frame(Frame((*head, *secs))))

    def local(self, rec: StateRecord) -> list[Action]:
        self.tick()
        return self.r.local_updated(self.now, replace(rec, creatorid=0, id=0))

    def flush(self) -> None:
        self.tick(0.2)
        self.r.on_timer(self.now)

    def peer_state(self, rec: StateRecord) -> None:
        out = self.frame(Section(Act.INS, (rec,)))
        assert InstallStates((rec,)) in out
        self.local(replace(rec, packets=(0, 0), bytes_=(0, 0)))  # the kernel's echo

    def owner(self) -> Owner:
        return self.r.own.owner(K, K in self.r.table)

    def cur(self) -> StateRecord:
        rec = self.r.table.get(K)
        assert rec is not None
        return rec


def establish(h: Harness, owner: Owner, origin: str, tcp: TcpState) -> None:
    if owner is Owner.ABSENT:
        return
    if owner is Owner.PEER or origin == "peer":
        h.peer_state(StateRecord(K, creatorid=PEER_CID, id=7, tcp_state=tcp, timeout=60))
    if owner is Owner.PEER:
        return
    if origin == "peer":
        h.local(replace(h.cur(), tcp_state=TcpState.LAST_ACK))  # our kernel moves it: ours now
    else:
        h.local(StateRecord(K, tcp_state=tcp, timeout=60))
    h.flush()
    if owner is Owner.CLAIMED:
        cur = h.cur()
        h.local(replace(cur, packets=(cur.packets[0] + 5, cur.packets[1] + 5)))


def _upd_c(h: Harness, tcp: TcpState | None, flags: int = 0) -> Section:
    if K not in h.r.table:
        return Section(
            Act.UPD_C, (CompressedUpdate(*UNKNOWN, TcpState.TIME_WAIT, 30, 0, 0, flags),)
        )
    cur = h.cur()
    u = CompressedUpdate(cur.creatorid, cur.id, tcp or cur.tcp_state, 30, cur.status, 0, flags)
    return Section(Act.UPD_C, (u,))


def stimulus(h: Harness, inp: FlowInput) -> list[Action]:  # noqa: C901 - one branch per FlowInput member
    held = K in h.r.table
    if inp is FI.LOCAL_NEW:
        tcp = TcpState.NONE if held else TcpState.SYN_SENT  # backwards: the tuple was reused
        return h.local(StateRecord(K, tcp_state=tcp, timeout=60))
    if inp is FI.LOCAL_CHANGE:
        return h.local(replace(h.cur(), tcp_state=TcpState.CLOSE))
    if inp is FI.LOCAL_TRAFFIC:
        cur = h.cur()
        return h.local(replace(cur, packets=(cur.packets[0] + 9, cur.packets[1] + 9)))
    if inp is FI.LOCAL_DELETE:
        h.tick()
        return h.r.local_deleted(h.now, K)
    if inp is FI.PEER_STATE:
        if h.owner() in (Owner.LOCAL, Owner.CLAIMED):
            rec = StateRecord(K, creatorid=0xFFFFFFFF, id=1, tcp_state=TcpState.SYN_SENT)
        else:
            rec = StateRecord(K, creatorid=PEER_CID, id=7, tcp_state=TcpState.TIME_WAIT)
        return h.frame(Section(Act.INS, (rec,)))
    if inp is FI.PEER_COPY:
        return h.frame(Section(Act.INS, (replace(h.cur(), timeout=1),)))
    if inp is FI.PEER_KNOWN:  # the peer's identity for a flow we re-seeded after a restart
        elder = h.now * 1000 % 2 < 1  # our previous incarnation's id, or a larger one
        ident = {"creatorid": ME, "id": 12345} if elder else {"creatorid": 0xFFFFFFFF, "id": 1}
        rec = replace(h.cur(), packets=(0, 0), bytes_=(0, 0), **ident)  # type: ignore[arg-type]
        return h.frame(Section(Act.INS, (rec,)))
    if inp is FI.PEER_LOSER:
        return h.frame(Section(Act.INS, (StateRecord(K, creatorid=1, id=1),)))
    if inp is FI.PEER_PROGRESS:
        return h.frame(_upd_c(h, TcpState.TIME_WAIT))
    if inp is FI.PEER_TRAFFIC:
        return h.frame(_upd_c(h, None, UPDC_TRAFFIC))
    if inp is FI.PEER_REFRESH:
        return h.frame(_upd_c(h, None))
    if inp in (FI.PEER_DELETE, FI.PEER_DELETE_UNSHARED):
        cid, sid = (h.cur().creatorid, h.cur().id) if held else UNKNOWN
        if inp is FI.PEER_DELETE and h.owner() in (Owner.LOCAL, Owner.CLAIMED):
            h.frame(_upd_c(h, None))  # the peer reports driving it too (KEEP_DRIVING)
            assert K in h.r.own.shared
        return h.frame(Section(Act.DEL_C, (StateRef(cid, sid),)))
    assert inp is FI.PEER_CLEAR
    return h.frame(Section(Act.CLR, (Clear(h.cur().creatorid),)))


def check_effect(h: Harness, effect: Effect, before: StateRecord | None, out: list[Action]) -> None:  # noqa: C901 - one branch per Effect member
    r = h.r
    after = r.table.get(K)
    ident = None if before is None else (before.creatorid, before.id)
    installed = [rec for a in out if isinstance(a, InstallStates) for rec in a.records]
    if effect is Effect.RETIRE:
        assert after is None
        assert ident in r.outbox.dels
        assert ident in r.flows.tombstones
    elif effect is Effect.FORGET:
        assert after is None
        assert ident not in r.outbox.dels
        assert K not in r.own.local
        assert K not in r.own.announce
        assert K not in r.own.claims
        if any(isinstance(a, RemoveStates) for a in out):
            assert any(K in a.keys for a in out if isinstance(a, RemoveStates))
    elif effect is Effect.ANNOUNCE_NEW:
        assert after is not None
        assert after.creatorid == ME
        assert r.own.announce[K] == Act.INS
        if before is not None:
            assert ident in r.outbox.dels  # the replaced identity ends on the peer too
    elif effect is Effect.ANNOUNCE:
        assert after is not None
        assert (after.creatorid, after.id) == ident
        assert K in r.own.announce
    elif effect is Effect.CLAIM:
        assert K in r.own.traffic
    elif effect in (Effect.APPLY, Effect.HAND_OVER):
        assert after is not None
        assert after in installed
    elif effect is Effect.ADOPT:
        assert after is not None
        assert before is not None
        assert (after.creatorid, after.id) in {(0xFFFFFFFF, 1), (ME, 12345)}
        assert replace(after, creatorid=before.creatorid, id=before.id) == before
        assert r.own.announce[K] == Act.INS
        assert ident in r.outbox.dels
        assert ident in r.flows.tombstones
    elif effect is Effect.REFUSE:
        assert after == before
        assert installed == []
    elif effect is Effect.KEEP_DRIVING:
        assert after is not None
        assert r.own.local[K] == h.now
    elif effect is Effect.REQUEST:
        assert UNKNOWN in r.outbox.reqs
    else:
        assert effect is Effect.IGNORE
        assert after == before


REACHABLE = sorted(
    ((o, i) for (o, i), rule in FLOW_RULES.items() if rule.reachable),
    key=lambda p: (p[0].value, p[1].value),
)


def test_the_table_covers_every_pair() -> None:
    assert set(FLOW_RULES) == {(o, i) for o in Owner for i in FlowInput}
    for (owner, _inp), rule in FLOW_RULES.items():
        if not rule.reachable:
            assert rule.effect is Effect.IGNORE
            assert rule.targets == {owner}


@pytest.mark.parametrize(("owner", "inp"), REACHABLE, ids=lambda x: x.value)
@settings(max_examples=12, deadline=None)
@given(
    origin=st.sampled_from(["ours", "peer"]),
    tcp=st.sampled_from([TcpState.ESTABLISHED, TcpState.FIN_WAIT, TcpState.CLOSE_WAIT]),
    reliable=st.booleans(),
)
def test_every_owner_and_input(
    owner: Owner, inp: FlowInput, origin: str, tcp: TcpState, reliable: bool
) -> None:
    if inp is FI.PEER_CLEAR and origin == "ours" and owner is not Owner.PEER:
        origin = "peer"  # a peer's CLR never names states we created
    if inp is FI.PEER_KNOWN:
        origin = "ours"  # only a state we created has a previous incarnation's copy
    # A restarted node re-seeds its kernel's states before its first bulk completes.
    reseed = inp is FI.PEER_KNOWN
    h = Harness(reliable, bulk_first=not reseed)
    establish(h, owner, origin, tcp)
    if reseed:
        h.bulk()
    assert h.owner() is owner
    before = h.r.table.get(K)
    out = stimulus(h, inp)
    rule = FLOW_RULES[owner, inp]
    assert h.owner() in rule.targets, f"{owner} x {inp} -> {h.owner()}, rule {rule}"
    check_effect(h, rule.effect, before, out)
