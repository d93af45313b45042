"""The failover state block survives the lease file: machine record -> dhcpd.leases -> back."""

from __future__ import annotations

import pytest

from carpsim.dhcp import leasefile
from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.failover.events import StateRecord
from carpsim.dhcp.failover.persist import from_lease_file, to_lease_file

W = 1_790_000_000


@pytest.mark.parametrize("state", [s for s in FailoverState if s is not FailoverState.STARTUP])
def test_every_state_round_trips_through_the_lease_file(state: FailoverState) -> None:
    record = StateRecord(state, W - 5, FailoverState.PARTNER_DOWN, W - 9, 30)
    text = leasefile.format_file([], [to_lease_file("dhcp_lan", record)])
    assert f"my state {state.word} at " in text
    parsed = leasefile.parse(text).failover["dhcp_lan"]
    assert from_lease_file(parsed, W) == record


def test_unknown_words_restart_in_recover() -> None:
    rec = leasefile.FailoverStateRecord("x", "future-state", None, "unknown-state", None)
    assert from_lease_file(rec, W) == StateRecord(FailoverState.RECOVER, W, None, None, None)
