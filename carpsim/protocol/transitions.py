"""The CARP transition table (carp-spec §3.1), as data.

Every (state, input) pair maps to the name of the `CarpMachine` method that handles it and the
set of states that handler may leave the machine in. The machine dispatches through this table
only, and a property test sweeps every pair checking the outcome stays inside `targets`, so the
table is the single place to read what the machine can do.

Drop paths (bad HMAC, our own cookie, wrong vhid) are not transitions: they happen before
dispatch, identically in every state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from carpsim.protocol.constants import CarpState

INIT, BACKUP, MASTER = CarpState.INIT, CarpState.BACKUP, CarpState.MASTER


class CarpInput(enum.Enum):
    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    ADVERT = "advert"
    """A valid advert from a peer (after HMAC, loop and vhid checks)."""
    TIMER = "timer"
    """The single timer fired: master-down in BACKUP, advert in MASTER."""
    DEMOTE = "demote"
    """The OpenBSD demote count or the FreeBSD skew demotion changed."""
    SHUTDOWN = "shutdown"
    FORCE_BACKUP = "force_backup"
    FORCE_MASTER = "force_master"


@dataclass(frozen=True)
class Rule:
    handler: str
    targets: frozenset[CarpState]
    why: str


def _rule(handler: str, *targets: CarpState, why: str) -> Rule:
    return Rule(handler, frozenset(targets), why)


TRANSITIONS: dict[tuple[CarpState, CarpInput], Rule] = {
    # INIT: nothing happens until the interface is usable; no direct INIT -> MASTER.
    (INIT, CarpInput.LINK_UP): _rule("_start_backup", BACKUP, why="arm master-down"),
    (INIT, CarpInput.LINK_DOWN): _rule("_ignore", INIT, why="already down"),
    (INIT, CarpInput.ADVERT): _rule("_ignore", INIT, why="not running"),
    (INIT, CarpInput.TIMER): _rule("_ignore", INIT, why="no timer in INIT"),
    (INIT, CarpInput.DEMOTE): _rule("_ignore", INIT, why="value stored, nothing to send"),
    (INIT, CarpInput.SHUTDOWN): _rule("_ignore", INIT, why="already down"),
    (INIT, CarpInput.FORCE_BACKUP): _rule("_ignore", INIT, why="not running"),
    (INIT, CarpInput.FORCE_MASTER): _rule("_ignore", INIT, why="not running"),
    # BACKUP
    (BACKUP, CarpInput.LINK_UP): _rule("_ignore", BACKUP, why="already up"),
    (BACKUP, CarpInput.LINK_DOWN): _rule("_to_init", INIT, why="carp-spec §3.7"),
    (BACKUP, CarpInput.ADVERT): _rule("_backup_advert", BACKUP, MASTER, why="carp-spec §3.3"),
    (BACKUP, CarpInput.TIMER): _rule("_master_down", MASTER, why="master-down expired"),
    (BACKUP, CarpInput.DEMOTE): _rule("_ignore", BACKUP, why="only masters re-advertise"),
    (BACKUP, CarpInput.SHUTDOWN): _rule("_to_init", INIT, why="no bow-out from a backup"),
    (BACKUP, CarpInput.FORCE_BACKUP): _rule("_ignore", BACKUP, why="already backup"),
    (BACKUP, CarpInput.FORCE_MASTER): _rule("_master_down", MASTER, why="admin state master"),
    # MASTER
    (MASTER, CarpInput.LINK_UP): _rule("_ignore", MASTER, why="already up"),
    (MASTER, CarpInput.LINK_DOWN): _rule("_to_init", INIT, why="carp-spec §3.7"),
    (MASTER, CarpInput.ADVERT): _rule("_master_advert", MASTER, BACKUP, why="carp-spec §3.3"),
    (MASTER, CarpInput.TIMER): _rule("_send_advert", MASTER, why="advert period"),
    (MASTER, CarpInput.DEMOTE): _rule("_send_advert", MASTER, why="advertise change at once"),
    (MASTER, CarpInput.SHUTDOWN): _rule("_bow_out", INIT, why="carp-spec §3.10"),
    (MASTER, CarpInput.FORCE_BACKUP): _rule("_step_down", BACKUP, why="admin state backup"),
    (MASTER, CarpInput.FORCE_MASTER): _rule("_ignore", MASTER, why="already master"),
}
