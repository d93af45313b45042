"""Who drives each flow, as data: owner states x flow inputs -> rule (docs/statesync-protocol.md).

A node *drives* a state when its kernel forwards the flow: it announces the state's changes and
decides its end. Every key of the mirror is in one `Owner` state:

* ABSENT  - not in the mirror.
* PEER    - we hold the peer's copy; the peer decides its life (our expiry is not replicated).
* LOCAL   - we drive it: our changes go out, our delete goes out as DEL_C.
* CLAIMED - LOCAL, and we forwarded traffic the peer may not have processed yet (seen but not
  refreshed, or refreshed with UPDC_TRAFFIC in a frame the peer has not acknowledged). A peer
  refresh with UPDC_TRAFFIC takes a LOCAL state but not a CLAIMED one, so two nodes that both
  forward a flow cannot each hand it to the other and leave it driven by nobody.

The replicator classifies every local event and every received record into a `FlowInput`,
looks the pair up in `FLOW_RULES` and carries out the rule's `Effect`; nothing else moves a key
between owners. `Ownership.forget(key)` is the one place that drops a key's bookkeeping.

Expected kernel echoes (`Echoes`) and deleted identities (`Tombstones`) deliberately outlive a
forget: they describe what the kernel or the peer may still report about a key we let go.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from carpsim.statesync.record import FlowKey, TcpState
from carpsim.statesync.serial import seq_le

Ident = tuple[int, int]
"""(creatorid, id): a state's cluster-wide pfsync identity."""


class Owner(enum.Enum):
    ABSENT = "absent"
    PEER = "peer"
    LOCAL = "local"
    CLAIMED = "claimed"


class FlowInput(enum.Enum):
    LOCAL_NEW = "local_new"
    """A local event for a key we hold under another identity, or not at all (new flow, or a
    tuple reused by a new connection: its TCP state went backwards)."""
    LOCAL_CHANGE = "local_change"
    """Same identity, TCP state or NAT moved."""
    LOCAL_TRAFFIC = "local_traffic"
    """Same identity, only the packet counters moved (the kernel refreshed its timeout)."""
    LOCAL_DELETE = "local_delete"
    """conntrack destroyed the entry (expiry, or a flush)."""
    PEER_STATE = "peer_state"
    """A full record from the peer that is news (not a copy of ours, not a collision loser)."""
    PEER_COPY = "peer_copy"
    """A full record naming our identity with no TCP progress beyond ours (e.g. in a bulk)."""
    PEER_KNOWN = "peer_known"
    """The peer knew a flow we re-announced after a restart under another identity: the one
    our previous incarnation gave it, or a larger one (ours was given before our first bulk
    completed), with no TCP progress beyond ours."""
    PEER_LOSER = "peer_loser"
    """A full record with a smaller identity for the same tuple (split brain)."""
    PEER_PROGRESS = "peer_progress"
    """A compressed update with TCP progress: the peer sees the flow move."""
    PEER_TRAFFIC = "peer_traffic"
    """A compressed update flagged UPDC_TRAFFIC: the peer forwards the flow."""
    PEER_REFRESH = "peer_refresh"
    """A compressed update without progress or traffic (an idle peer's sweep)."""
    PEER_DELETE = "peer_delete"
    """DEL_C of the state's identity (for a state we drive: one the peer has shown it drives
    too, by a refresh we kept driving through)."""
    PEER_DELETE_UNSHARED = "peer_delete_unshared"
    """DEL_C naming a state only we drive: the peer never reported forwarding it."""
    PEER_CLEAR = "peer_clear"
    """CLR of the state's creator."""


class Effect(enum.Enum):
    IGNORE = "ignore"
    """Nothing to do (already the case, or not ours to say)."""
    ANNOUNCE_NEW = "announce_new"
    """Store under a (new) identity and send INS; a previous identity of the key is retired."""
    ANNOUNCE = "announce"
    """Store and send UPD; we drive the state from now on."""
    CLAIM = "claim"
    """Store; refresh with UPDC_TRAFFIC at the next refresh tick."""
    FORGET = "forget"
    """Drop the key (the kernel or the peer already did)."""
    RETIRE = "retire"
    """Forget, and DEL_C the identity we drove (refused if it comes back)."""
    APPLY = "apply"
    """Apply the peer's record by the pfsync rules; the peer drives it."""
    HAND_OVER = "hand_over"
    """Apply the peer's record and give the state to the peer (retire ours if it lost)."""
    ADOPT = "adopt"
    """Keep driving, under the peer's identity: announce it and retire ours."""
    REFUSE = "refuse"
    """Keep ours; the peer's record is stale or a collision loser (counted)."""
    KEEP_DRIVING = "keep_driving"
    """Apply the peer's timeout but keep driving (both forward, or an idle peer's sweep)."""
    REQUEST = "request"
    """We do not know the identity: ask the peer for the full state (UPD_REQ)."""


@dataclass(frozen=True)
class Rule:
    effect: Effect
    targets: frozenset[Owner]
    why: str
    reachable: bool = True
    """False: the replicator's classifier never produces this pair (the sweep checks it)."""


ABSENT, PEER, LOCAL, CLAIMED = Owner.ABSENT, Owner.PEER, Owner.LOCAL, Owner.CLAIMED
DRIVEN = (LOCAL, CLAIMED)


def _rule(effect: Effect, *targets: Owner, why: str) -> Rule:
    return Rule(effect, frozenset(targets), why)


def _never(owner: Owner, why: str) -> Rule:
    return Rule(Effect.IGNORE, frozenset({owner}), why, reachable=False)


def _build() -> dict[tuple[Owner, FlowInput], Rule]:
    i = FlowInput
    e = Effect
    t: dict[tuple[Owner, FlowInput], Rule] = {}
    # ABSENT: only the peer's full record or our own kernel can bring a key in.
    t[ABSENT, i.LOCAL_NEW] = _rule(e.ANNOUNCE_NEW, LOCAL, why="a new local flow")
    t[ABSENT, i.PEER_STATE] = _rule(e.APPLY, PEER, why="the peer's new state")
    t[ABSENT, i.PEER_PROGRESS] = _rule(e.REQUEST, ABSENT, why="unknown id: fetch it")
    t[ABSENT, i.PEER_TRAFFIC] = _rule(e.REQUEST, ABSENT, why="unknown id: fetch it")
    t[ABSENT, i.PEER_REFRESH] = _rule(e.REQUEST, ABSENT, why="unknown id: fetch it")
    t[ABSENT, i.LOCAL_DELETE] = _rule(e.IGNORE, ABSENT, why="echo of a removal, or never ours")
    t[ABSENT, i.PEER_DELETE] = _rule(e.IGNORE, ABSENT, why="deletes are idempotent")
    for inp, why in (
        (i.LOCAL_CHANGE, "no identity to keep"),
        (i.LOCAL_TRAFFIC, "no identity to keep"),
        (i.PEER_COPY, "a copy needs a state of ours"),
        (i.PEER_LOSER, "a collision needs a state of ours"),
        (i.PEER_KNOWN, "only checked against a state of ours"),
        (i.PEER_CLEAR, "CLR only names held states"),
    ):
        t[ABSENT, inp] = _never(ABSENT, why)
    # Every held state: a local event with a new identity, a delete, a CLR.
    for own in (PEER, LOCAL, CLAIMED):
        # (a claim already on the wire stays pending until the peer acknowledges it)
        t[own, i.LOCAL_NEW] = _rule(e.ANNOUNCE_NEW, LOCAL, CLAIMED, why="the tuple was reused here")
        t[own, i.LOCAL_CHANGE] = _rule(
            e.ANNOUNCE, LOCAL, CLAIMED, why="our kernel moved it: we drive"
        )
        t[own, i.LOCAL_TRAFFIC] = _rule(e.CLAIM, CLAIMED, why="we forward it")
    t[PEER, i.PEER_DELETE] = _rule(e.FORGET, ABSENT, why="the owner ended it")
    t[PEER, i.PEER_CLEAR] = _rule(e.FORGET, ABSENT, why="the owner cleared its states")
    # PEER: the peer decides; every record of it is applied by the pfsync rules.
    t[PEER, i.LOCAL_DELETE] = _rule(e.FORGET, ABSENT, why="expiry of the peer's copy")
    t[PEER, i.PEER_STATE] = _rule(e.APPLY, PEER, why="the owner's news")
    t[PEER, i.PEER_COPY] = _never(PEER, "only states we drive have copies")
    t[PEER, i.PEER_LOSER] = _never(PEER, "only states we drive can win")
    t[PEER, i.PEER_KNOWN] = _never(PEER, "only checked against a state of ours")
    for inp in (i.PEER_PROGRESS, i.PEER_TRAFFIC, i.PEER_REFRESH):
        t[PEER, inp] = _rule(e.APPLY, PEER, why="the owner's refresh")
    t[PEER, i.PEER_DELETE_UNSHARED] = _never(PEER, "only states we drive are unshared")
    t[ABSENT, i.PEER_DELETE_UNSHARED] = _never(ABSENT, "only states we drive are unshared")
    # LOCAL and CLAIMED: ours unless the peer shows it drives the flow now.
    for own in DRIVEN:
        t[own, i.LOCAL_DELETE] = _rule(e.RETIRE, ABSENT, why="ours ended: DEL_C")
        # Our kernel forwards the flow, so only our kernel ends it. One DEL_C (or CLR) naming
        # our ids used to delete live connections here; ignored, the state either lives on
        # (and our refresh re-announces it) or our kernel expires it and our DEL_C goes out.
        # When both forward the flow (a refresh we kept driving through) either one's delete
        # ends it on both, or it would outlive its end on one node.
        t[own, i.PEER_DELETE_UNSHARED] = _rule(e.IGNORE, own, why="only we drive it")
        t[own, i.PEER_DELETE] = _rule(e.FORGET, ABSENT, why="both drove it: the peer ended it")
        t[own, i.PEER_CLEAR] = _rule(e.IGNORE, own, why="we drive it: our kernel decides")
        t[own, i.PEER_STATE] = _rule(e.HAND_OVER, PEER, why="the peer saw it progress")
        t[own, i.PEER_COPY] = _rule(e.REFUSE, own, why="our own state coming back")
        t[own, i.PEER_LOSER] = _rule(e.REFUSE, own, why="split brain: the larger id wins")
        # Our re-announcement (new id) replaces it on the peer; taking it instead would retire
        # ours there while the peer drops its copy for ours: the flow would vanish on both.
        # Handing it over instead would retire our identity while the peer replaces its copy
        # with it: the peer would end up with nothing. One identity, announced by us, converges.
        t[own, i.PEER_KNOWN] = _rule(e.ADOPT, LOCAL, CLAIMED, why="keep the peer's identity")
        t[own, i.PEER_PROGRESS] = _rule(e.HAND_OVER, PEER, why="failover: the peer drives")
        t[own, i.PEER_REFRESH] = _rule(e.KEEP_DRIVING, own, why="an idle peer's sweep")
    t[LOCAL, i.PEER_TRAFFIC] = _rule(e.HAND_OVER, PEER, why="the peer forwards, we stopped")
    t[CLAIMED, i.PEER_TRAFFIC] = _rule(
        e.KEEP_DRIVING, CLAIMED, why="both forward: our claim is pending"
    )
    return t


FLOW_RULES: dict[tuple[Owner, FlowInput], Rule] = _build()


@dataclass(frozen=True, slots=True)
class Echo:
    """A kernel event we expect because we asked for the change (InstallStates/RemoveStates)."""

    when: float
    tcp: TcpState | None
    """None: the echo of a removal."""
    nat_src: tuple[bytes, int] | None
    nat_dst: tuple[bytes, int] | None


class Echoes:
    """Per key, the echoes still expected. Events are asynchronous at the edge, so by the time
    one arrives the mirror may have moved on; matching it here keeps it from being mistaken for
    a new local flow (and replicated back as a zombie)."""

    __slots__ = ("_by_key", "overflow", "per_key", "window")

    def __init__(self, window: float, per_key: int = 8) -> None:
        self.window = window
        self.per_key = per_key
        self._by_key: dict[FlowKey, list[Echo]] = {}
        self.overflow = 0
        """Echoes forgotten because a key had `per_key` already (a stream of updates for one
        key once grew its list to 50,000 entries). The kernel reports our writes of a key in
        order, so only the newest ones can still come; an older echo that does arrive is
        taken for a local change and re-sent once, which the apply rules make harmless."""

    def __len__(self) -> int:
        return len(self._by_key)

    def expect(self, key: FlowKey, echo: Echo) -> None:
        expected = self._by_key.setdefault(key, [])
        expected.append(echo)
        if len(expected) > self.per_key:
            del expected[0]
            self.overflow += 1

    def entries(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def consume(self, now: float, key: FlowKey, seen: tuple[object, object, object]) -> bool:
        """True (and dropped with every older one) if the event `seen` = (tcp state, NAT
        source, NAT destination) matches an expected echo. Takes a plain tuple: this runs for
        every local conntrack event, most with no echo pending."""
        expected = self._by_key.get(key)
        if expected is None:
            return False
        horizon = now - self.window
        for n, e in enumerate(expected):
            if e.when >= horizon and (e.tcp, e.nat_src, e.nat_dst) == seen:
                del expected[: n + 1]
                if not expected:
                    del self._by_key[key]
                return True
        return False

    def expire(self, now: float) -> None:
        horizon = now - self.window
        for k in [k for k, v in self._by_key.items() if v[-1].when < horizon]:
            del self._by_key[k]


class Tombstones:
    """Identities we deleted locally -> when: a record for one of them that crossed our DEL_C
    on the wire (e.g. in the peer's bulk) must not resurrect the state here."""

    __slots__ = ("_when", "limit", "overflow", "window")

    def __init__(self, window: float, limit: int = 1 << 18) -> None:
        self.window = window
        self.limit = limit
        self.overflow = 0
        """Identities forgotten before their window ended (more than `limit` deletes within
        one window): such an identity coming back from the peer would be accepted again."""
        self._when: dict[Ident, float] = {}

    def __len__(self) -> int:
        return len(self._when)

    def __bool__(self) -> bool:
        return bool(self._when)

    def __contains__(self, ident: object) -> bool:
        return ident in self._when

    def add(self, ident: Ident, now: float) -> None:
        tomb = self._when
        tomb.pop(ident, None)  # re-added: moves to the end, keeping insertion = time order
        tomb[ident] = now
        if len(tomb) > self.limit:
            del tomb[next(iter(tomb))]
            self.overflow += 1

    def expire(self, now: float) -> None:
        horizon = now - self.window
        tomb = self._when
        while tomb:  # insertion order is time order
            ident, when = next(iter(tomb.items()))
            if when >= horizon:
                break
            del tomb[ident]


class Ownership:
    """Per-key bookkeeping of the states we drive; `owner()` reads the implicit state back."""

    __slots__ = ("announce", "claims", "local", "peer_ack", "shared", "traffic")

    def __init__(self) -> None:
        self.local: dict[FlowKey, float] = {}
        """Keys we drive -> when their timeout was last read."""
        self.traffic: dict[FlowKey, None] = {}
        """Keys whose counters moved since their last refresh (refreshed with UPDC_TRAFFIC)."""
        self.claims: dict[FlowKey, int] = {}
        """Key -> seq of the frame that carried our last UPDC_TRAFFIC refresh (0 in plain
        mode: no ACKs, a claim settles at once)."""
        self.announce: dict[FlowKey, int] = {}
        """Keys whose full state is due (Act.INS or Act.UPD), coalesced until the next flush."""
        self.shared: dict[FlowKey, None] = {}
        """Keys we drive that the peer reported driving too (KEEP_DRIVING): its DEL_C counts."""
        self.peer_ack = 0
        """The peer's cumulative ACK of our stream: everything up to it was processed there."""

    def owner(self, key: FlowKey, held: bool) -> Owner:
        if not held:
            return ABSENT
        if key not in self.local:
            return PEER
        return CLAIMED if self.claiming(key) else LOCAL

    def claiming(self, key: FlowKey) -> bool:
        """Traffic not yet refreshed, or our last refresh reporting traffic not yet processed
        by the peer. Two crossing claims cannot each take the state: node A gives up only after
        B processed A's last claim, so B processed A's claim before A processed B's."""
        if key in self.traffic:
            return True
        seq = self.claims.get(key)
        if seq is None:
            return False
        if seq_le(seq, self.peer_ack):
            del self.claims[key]
            return False
        return True

    def drive(self, key: FlowKey, now: float) -> None:
        self.local[key] = now

    def forget(self, key: FlowKey) -> bool:
        """The one place that drops a key's bookkeeping; True if we drove it."""
        self.traffic.pop(key, None)
        self.claims.pop(key, None)
        self.announce.pop(key, None)
        self.shared.pop(key, None)
        return self.local.pop(key, None) is not None

    def hand_over(self, key: FlowKey) -> bool:
        """The peer drives this state from now on; True if we drove it.

        Traffic we saw but did not refresh yet goes with it: refreshed with UPDC_TRAFFIC after
        we gave the state up, it would take the state from the peer while we no longer drive it.
        """
        self.claims.pop(key, None)
        self.traffic.pop(key, None)
        self.shared.pop(key, None)
        return self.local.pop(key, None) is not None

    def settle(self) -> None:
        """Drop claims the peer has processed (called on the refresh tick)."""
        ack = self.peer_ack
        for k in [k for k, seq in self.claims.items() if seq_le(seq, ack)]:
            del self.claims[k]
