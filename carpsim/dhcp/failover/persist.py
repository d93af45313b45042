"""The failover state block as the lease file keeps it, both ways.

`carpsim.dhcp.leasefile` stores ISC's words (``my state normal at ...``); the machine works with
`StateRecord`. An unknown word (a file from something newer) restarts as RECOVER, the state
ISC itself starts in when it knows nothing.
"""

from __future__ import annotations

from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.failover.events import StateRecord
from carpsim.dhcp.leasefile import FailoverStateRecord

_BY_WORD = {s.word: s for s in FailoverState}


def to_lease_file(name: str, record: StateRecord) -> FailoverStateRecord:
    partner = record.partner_state.word if record.partner_state is not None else "unknown-state"
    return FailoverStateRecord(
        name, record.my_state.word, record.my_stos, partner, record.partner_stos, record.mclt
    )


def from_lease_file(rec: FailoverStateRecord, wall: int) -> StateRecord:
    mine = _BY_WORD.get(rec.my_state, FailoverState.RECOVER)
    since = rec.my_since if rec.my_since is not None else wall
    return StateRecord(mine, since, _BY_WORD.get(rec.partner_state), rec.partner_since, rec.mclt)
