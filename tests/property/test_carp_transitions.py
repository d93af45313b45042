"""Sweep the CARP transition table: every (state, input) pair, and random input sequences.

Invariants checked after every input:
- the new state is one the table allows for that (state, input);
- VIPs are held (AddVip without a later DelVip) exactly while the machine is MASTER;
- only a MASTER transmits, except the single 255/255 bow-out on shutdown;
- the timer is armed iff the machine is not in INIT.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address, ip_interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.protocol.codec import (
    CarpPacket,
    build_advert,
    compute_hmac,
    decode_packet,
    encode_packet,
)
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import Action, AddVip, DelVip, Transmit
from carpsim.protocol.machine import TRANSITIONS, CarpMachine
from carpsim.protocol.transitions import CarpInput

VIP = ip_interface("10.1.1.254/24")
PW = b"pw"


def advert(advbase: int, advskew: int, demote: int) -> CarpPacket:
    body = build_advert(
        vhid=1,
        advbase=advbase,
        advskew=advskew,
        demote=demote,
        counter=b"\x01" * 8,
        md=compute_hmac(PW, 1, [VIP], b"\x01" * 8),
    )
    return decode_packet(
        encode_packet(
            src=IPv4Address("10.1.1.9"),
            dst=IPv4Address("224.0.0.18"),
            ip_id=1,
            advert_bytes=body,
        )
    )


ADVERTS = [advert(b, s, d) for b, s, d in [
    (1, 0, 0), (1, 50, 0), (1, 200, 0), (255, 255, 0), (1, 50, 1), (1, 50, 5), (0, 10, 0),
]]  # fmt: skip


class Checked:
    """A machine plus the invariant bookkeeping."""

    def __init__(self, skew: int = 50, preempt: bool = False, demote: int = 0) -> None:
        config = CarpConfig(
            vhid=1,
            vips=(VIP,),
            srcip=IPv4Address("10.1.1.2"),
            password=PW,
            advskew=skew,
            preempt=preempt,
            demote=demote,
        )
        self.m = CarpMachine(config, random.Random(skew))
        self.now = 0.0
        self.vips_held = False

    def apply(self, event: CarpInput, call: Callable[[float], list[Action]]) -> list[Action]:
        before = self.m.state
        actions = call(self.now)
        after = self.m.state
        rule = TRANSITIONS[(before, event)]
        assert after in rule.targets, (before, event, after)
        for action in actions:
            if isinstance(action, AddVip):
                assert not self.vips_held
                self.vips_held = True
            elif isinstance(action, DelVip):
                assert self.vips_held
                self.vips_held = False
            elif isinstance(action, Transmit):
                adv = decode_packet(action.packet).advert
                if adv.is_bow_out:
                    assert before is CarpState.MASTER
                    assert event is CarpInput.SHUTDOWN
                else:
                    assert after is CarpState.MASTER
        assert self.vips_held == (after is CarpState.MASTER)
        assert (self.m.next_deadline() is None) == (after is CarpState.INIT)
        return actions

    def feed(self, op: tuple[str, int], dt: float) -> None:
        self.now += dt
        name, arg = op
        m = self.m
        if name == "timer":
            deadline = m.next_deadline()
            if deadline is not None:
                self.now = max(self.now, deadline)
            self.apply(CarpInput.TIMER, m.on_timer)
        elif name == "advert":
            self.apply(CarpInput.ADVERT, lambda now: m.packet_received(now, ADVERTS[arg]))
        elif name == "demote":
            self.apply(CarpInput.DEMOTE, lambda now: m.set_demote(now, arg))
        elif name == "skew":
            self.apply(CarpInput.DEMOTE, lambda now: m.set_skew_demotion(now, arg * 40))
        else:
            event = CarpInput(name)
            self.apply(event, getattr(m, name))


def drive_to(state: CarpState, **kw: object) -> Checked:
    c = Checked(**kw)  # type: ignore[arg-type]
    if state is not CarpState.INIT:
        c.feed(("link_up", 0), 0.0)
    if state is CarpState.MASTER:
        c.feed(("timer", 0), 0.0)
    assert c.m.state is state
    return c


SIMPLE = {
    CarpInput.LINK_UP: ("link_up", 0),
    CarpInput.LINK_DOWN: ("link_down", 0),
    CarpInput.TIMER: ("timer", 0),
    CarpInput.SHUTDOWN: ("shutdown", 0),
    CarpInput.FORCE_BACKUP: ("force_backup", 0),
    CarpInput.FORCE_MASTER: ("force_master", 0),
}


@pytest.mark.parametrize("key", list(TRANSITIONS), ids=lambda k: f"{k[0].name}-{k[1].value}")
@pytest.mark.parametrize("preempt", [False, True])
def test_every_state_input_pair(key: tuple[CarpState, CarpInput], preempt: bool) -> None:
    state, event = key
    if event is CarpInput.ADVERT:
        ops = [("advert", i) for i in range(len(ADVERTS))]
    elif event is CarpInput.DEMOTE:
        ops = [("demote", 0), ("demote", 3), ("skew", 1), ("skew", 9)]
    else:
        ops = [SIMPLE[event]]
    for op in ops:
        for demote in (0, 2):
            checked = drive_to(state, preempt=preempt, demote=demote)
            checked.feed(op, 0.25)


def test_the_sweep_reaches_every_allowed_target() -> None:
    """Each non-trivial target in the table is actually produced by some input."""
    seen: set[tuple[CarpState, CarpInput, CarpState]] = set()
    for state, event in TRANSITIONS:
        ops = {
            CarpInput.ADVERT: [("advert", i) for i in range(len(ADVERTS))],
            CarpInput.DEMOTE: [("demote", 3)],
        }.get(event, [SIMPLE.get(event, ("timer", 0))])
        for op in ops:
            for preempt in (False, True):
                for demote in (0, 2):
                    c = drive_to(state, preempt=preempt, demote=demote)
                    c.feed(op, 0.25)
                    seen.add((state, event, c.m.state))
    expected = {(s, e, t) for (s, e), rule in TRANSITIONS.items() for t in rule.targets}
    assert expected == seen


OPS = st.one_of(
    st.sampled_from(
        [
            ("link_up", 0),
            ("link_down", 0),
            ("timer", 0),
            ("shutdown", 0),
            ("force_backup", 0),
            ("force_master", 0),
        ]
    ),
    st.tuples(st.just("advert"), st.integers(0, len(ADVERTS) - 1)),
    st.tuples(st.just("demote"), st.integers(0, 300)),
    st.tuples(st.just("skew"), st.integers(0, 8)),
)


@settings(max_examples=300)
@given(
    ops=st.lists(st.tuples(OPS, st.floats(0, 5, allow_nan=False)), max_size=60),
    skew=st.integers(0, 254),
    preempt=st.booleans(),
)
def test_random_input_sequences_keep_invariants(
    ops: list[tuple[tuple[str, int], float]], skew: int, preempt: bool
) -> None:
    checked = Checked(skew=skew, preempt=preempt)
    for op, dt in ops:
        checked.feed(op, dt)
