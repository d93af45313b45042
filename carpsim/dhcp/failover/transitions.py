"""The failover transition table (ISC dhcpd 4.4 `dhcp_failover_state_transition` and
`dhcp_failover_peer_state_changed`, with draft-12 §9 for the prose), as data.

Every (my state, input) pair maps to the `FailoverMachine` handler that runs and the states it
may leave the machine in. Inputs are the local events and one input per state the peer can
report in a STATE message. A property test drives the machine into every state and feeds every
input, checking the outcome stays inside `targets`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from carpsim.dhcp.failover.constants import FailoverState

S = FailoverState
STARTUP, NORMAL, COMM_INT, PARTNER_DOWN = (
    S.STARTUP,
    S.NORMAL,
    S.COMMUNICATIONS_INTERRUPTED,
    S.PARTNER_DOWN,
)
POT_CONFLICT, RECOVER, PAUSED, SHUTDOWN = S.POTENTIAL_CONFLICT, S.RECOVER, S.PAUSED, S.SHUTDOWN
RECOVER_DONE, RES_INT, CONFLICT_DONE, RECOVER_WAIT = (
    S.RECOVER_DONE, S.RESOLUTION_INTERRUPTED, S.CONFLICT_DONE, S.RECOVER_WAIT,
)  # fmt: skip

REPORTED = tuple(s for s in FailoverState if s is not STARTUP)
"""States a peer can report (STARTUP travels as a flag, never as a state)."""


class FoInput(enum.Enum):
    STARTUP_TIMEOUT = "startup_timeout"
    """15 s in STARTUP without the peer's STATE."""
    LINK_LOST = "link_lost"
    """TCP closed or reset, or max-response-delay of silence."""
    AUTO_PARTNER_DOWN = "auto_partner_down"
    UPDDONE = "upddone"
    """The peer finished answering our UPDREQALL/UPDREQ."""
    RECOVER_WAIT_ELAPSED = "recover_wait_elapsed"
    """Own STOS + MCLT passed while in RECOVER-WAIT."""
    ADMIN_PARTNER_DOWN = "admin_partner_down"
    """The operator declares the peer down (omshell / lease-file edit in ISC)."""
    PEER_NORMAL = "peer_normal"
    PEER_COMMUNICATIONS_INTERRUPTED = "peer_communications_interrupted"
    PEER_PARTNER_DOWN = "peer_partner_down"
    PEER_POTENTIAL_CONFLICT = "peer_potential_conflict"
    PEER_RECOVER = "peer_recover"
    PEER_PAUSED = "peer_paused"
    PEER_SHUTDOWN = "peer_shutdown"
    PEER_RECOVER_DONE = "peer_recover_done"
    PEER_RESOLUTION_INTERRUPTED = "peer_resolution_interrupted"
    PEER_CONFLICT_DONE = "peer_conflict_done"
    PEER_RECOVER_WAIT = "peer_recover_wait"


def peer_input(state: FailoverState) -> FoInput:
    return FoInput["PEER_" + state.name]


@dataclass(frozen=True)
class Rule:
    handler: str
    targets: frozenset[FailoverState]
    why: str


# The peer-state rows of ISC's peer_state_changed: (my state) -> {peer state: outcome}.
# An outcome is a state to move to, or one of the handler names below; a missing entry stays.
ILLEGAL = "_illegal"
REQUEST_ALL = "_request_all"
REQUEST = "_request"
PEER_ROWS: dict[FailoverState, dict[FailoverState, FailoverState | str]] = {
    NORMAL: {
        PARTNER_DOWN: POT_CONFLICT, RECOVER: PARTNER_DOWN, SHUTDOWN: PARTNER_DOWN,
        PAUSED: COMM_INT, POT_CONFLICT: ILLEGAL, RES_INT: ILLEGAL, CONFLICT_DONE: ILLEGAL,
    },
    COMM_INT: {
        NORMAL: NORMAL, COMM_INT: NORMAL, RECOVER_DONE: NORMAL, RECOVER_WAIT: NORMAL,
        RECOVER: PARTNER_DOWN, SHUTDOWN: PARTNER_DOWN, PARTNER_DOWN: POT_CONFLICT,
        POT_CONFLICT: POT_CONFLICT, RES_INT: POT_CONFLICT, CONFLICT_DONE: POT_CONFLICT,
    },
    PARTNER_DOWN: {
        RECOVER_DONE: NORMAL, NORMAL: POT_CONFLICT, COMM_INT: POT_CONFLICT,
        PARTNER_DOWN: POT_CONFLICT, POT_CONFLICT: POT_CONFLICT, RES_INT: POT_CONFLICT,
        CONFLICT_DONE: POT_CONFLICT,
    },
    RECOVER: {
        POT_CONFLICT: POT_CONFLICT, RES_INT: POT_CONFLICT, CONFLICT_DONE: POT_CONFLICT,
        NORMAL: POT_CONFLICT, SHUTDOWN: PARTNER_DOWN, PARTNER_DOWN: REQUEST_ALL,
        COMM_INT: REQUEST_ALL, RECOVER: REQUEST_ALL,
        # Not in ISC's table: a peer that finished its own recovery while our request died
        # with the link must still answer ours, or the pair waits forever.
        RECOVER_DONE: REQUEST_ALL, RECOVER_WAIT: REQUEST_ALL,
    },
    RECOVER_WAIT: {},
    RECOVER_DONE: {NORMAL: NORMAL, RECOVER_DONE: NORMAL, SHUTDOWN: PARTNER_DOWN},
    POT_CONFLICT: {
        CONFLICT_DONE: REQUEST, RECOVER: RECOVER, SHUTDOWN: PARTNER_DOWN, NORMAL: ILLEGAL,
    },
    CONFLICT_DONE: {NORMAL: NORMAL, SHUTDOWN: SHUTDOWN},
    RES_INT: {
        **{s: POT_CONFLICT for s in REPORTED if s not in (SHUTDOWN, PAUSED)},
        SHUTDOWN: PARTNER_DOWN,
    },
    SHUTDOWN: {},
    PAUSED: {},
}  # fmt: skip

STARTUP_OVERRIDES: dict[tuple[FailoverState, FailoverState], FailoverState] = {
    (NORMAL, PARTNER_DOWN): RECOVER,
}
"""Leaving STARTUP: a saved NORMAL facing a PARTNER-DOWN peer recovers (its data is stale)."""

LINK_LOST_MOVES = {NORMAL: COMM_INT, POT_CONFLICT: RES_INT}
"""Everything else keeps its state when the link drops (CONFLICT-DONE requeues updates)."""

_NAMES = {ILLEGAL: "illegal peer state for ours", REQUEST_ALL: "(re)send UPDREQALL",
          REQUEST: "peer resolved: send UPDREQ"}  # fmt: skip


def peer_outcome(mine: FailoverState, peer: FailoverState, startup: bool = False) -> FailoverState:
    """The state ISC's table moves `mine` to when the peer reports `peer`."""
    if startup and (mine, peer) in STARTUP_OVERRIDES:
        return STARTUP_OVERRIDES[(mine, peer)]
    out = PEER_ROWS[mine].get(peer, mine)
    if out == ILLEGAL:
        return SHUTDOWN
    return mine if isinstance(out, str) else out


def _build() -> dict[tuple[FailoverState, FoInput], Rule]:
    t: dict[tuple[FailoverState, FoInput], Rule] = {}
    live = [s for s in FailoverState if s is not STARTUP]
    for mine in live:
        for peer in REPORTED:
            out = PEER_ROWS[mine].get(peer, mine)
            if isinstance(out, str):
                handler, why = out, _NAMES[out]
                targets = {SHUTDOWN} if out == ILLEGAL else {mine}
            elif out is mine:
                handler, why, targets = "_stay", "no change for this peer state", {mine}
            else:
                handler, why, targets = "_goto", f"peer {peer.word}", {out}
            if mine is PARTNER_DOWN:
                # The peer's STARTUP flag makes partner-down ignore the report.
                handler, targets = "_partner_down_peer", targets | {mine}
            t[(mine, peer_input(peer))] = Rule(handler, frozenset(targets), why)
        lost = LINK_LOST_MOVES.get(mine, mine)
        t[(mine, FoInput.LINK_LOST)] = Rule("_link_lost", frozenset({lost}), "link lost (ISC)")
        t[(mine, FoInput.STARTUP_TIMEOUT)] = Rule("_stay", frozenset({mine}), "not in startup")
        apd = PARTNER_DOWN if mine is COMM_INT else mine
        t[(mine, FoInput.AUTO_PARTNER_DOWN)] = Rule(
            "_goto" if apd is not mine else "_stay", frozenset({apd}), "auto-partner-down"
        )
        admin = PARTNER_DOWN if mine in (COMM_INT, RES_INT) else mine
        t[(mine, FoInput.ADMIN_PARTNER_DOWN)] = Rule(
            "_goto" if admin is not mine else "_stay",
            frozenset({admin}),
            "operator: only while out of contact",
        )
        t[(mine, FoInput.RECOVER_WAIT_ELAPSED)] = Rule("_stay", frozenset({mine}), "no wait")
        t[(mine, FoInput.UPDDONE)] = Rule("_stay", frozenset({mine}), "nothing requested")
    t[(RECOVER, FoInput.UPDDONE)] = Rule(
        "_recover_updone",
        frozenset({RECOVER_WAIT, RECOVER_DONE, NORMAL}),
        "wait MCLT unless passed or the peer recovers too",
    )
    t[(POT_CONFLICT, FoInput.UPDDONE)] = Rule(
        "_conflict_updone",
        frozenset({POT_CONFLICT, CONFLICT_DONE, NORMAL}),
        "primary: conflict-done; secondary facing conflict-done: normal",
    )
    t[(RECOVER_WAIT, FoInput.RECOVER_WAIT_ELAPSED)] = Rule(
        "_recover_wait_over", frozenset({RECOVER_DONE, NORMAL}), "MCLT passed"
    )
    # STARTUP: the first peer STATE decides, from the saved state; 15 s alone acts as link lost.
    saved = [s for s in FailoverState if s is not STARTUP]
    for peer in REPORTED:
        outs = {peer_outcome(s, peer, startup=True) for s in saved}
        outs |= {s for s in saved if s is PARTNER_DOWN}
        t[(STARTUP, peer_input(peer))] = Rule(
            "_leave_startup", frozenset(outs), "first STATE: saved state, then its row"
        )
    for event in FoInput:
        if event.name.startswith("PEER_"):
            continue
        t.setdefault((STARTUP, event), Rule("_stay", frozenset({STARTUP}), "in startup"))
    t[(STARTUP, FoInput.STARTUP_TIMEOUT)] = Rule(
        "_startup_alone",
        frozenset(LINK_LOST_MOVES.get(s, s) for s in saved),
        "15 s without the peer: saved state as if the link dropped",
    )
    return t


TRANSITIONS: dict[tuple[FailoverState, FoInput], Rule] = _build()

SERVING = frozenset({NORMAL, COMM_INT, PARTNER_DOWN})
"""States in which ISC answers DHCP clients."""
PEER_DEMANDS_SILENCE = frozenset({PARTNER_DOWN, POT_CONFLICT, CONFLICT_DONE, RES_INT})
"""Peer states that stop our service (ISC `set_service_state`)."""
