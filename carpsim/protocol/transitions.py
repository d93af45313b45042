"""The vocabulary of the CARP transition table (ip_carp.c's INIT/BACKUP/MASTER): inputs and rules.

The table itself, `carpsim.protocol.machine.TRANSITIONS`, sits right below `CarpMachine`
because its rules point at the machine's handler methods (function references, not names).
Every (state, input) pair maps to the handler that acts on it and the set of states that
handler may leave the machine in. The machine dispatches through that table only, and a
property test sweeps every pair checking the outcome stays inside `targets`, so the table is
the single place to read what the machine can do.

Drop paths (bad HMAC, our own cookie, wrong vhid) are not transitions: they happen before
dispatch, identically in every state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carpsim.protocol.constants import CarpState

if TYPE_CHECKING:
    from carpsim.protocol.codec import CarpPacket
    from carpsim.protocol.events import Action
    from carpsim.protocol.machine import CarpMachine

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


Handler = Callable[["CarpMachine", float, str, "CarpPacket | None"], "list[Action]"]
"""(machine, now, reason, packet): the packet is the advert for ADVERT, None otherwise."""


@dataclass(frozen=True)
class Rule:
    handler: Handler
    targets: frozenset[CarpState]
    why: str


def rule(handler: Handler, *targets: CarpState, why: str) -> Rule:
    return Rule(handler, frozenset(targets), why)
