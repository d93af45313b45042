"""A VHID updated by a config change keeps its state: no flap, no takeover (issue 11)."""

from __future__ import annotations

import dataclasses

import pytest

from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import StateChanged, Transmit
from tests.unit.test_carp_machine import make, peer_advert, to_master


def test_master_keeps_mastership_and_advertises_the_new_skew_at_once() -> None:
    m = make(0)
    start = to_master(m)
    actions = m.reconfigure(start + 0.2, dataclasses.replace(m.config, advskew=10))
    assert [type(a) for a in actions] == [Transmit]
    assert decode_packet(actions[0].packet).advert.advskew == 10  # type: ignore[attr-defined]
    assert m.state is CarpState.MASTER
    assert m.advert_interval == 1 + 10 / 256


def test_backup_stays_backup_and_uses_the_new_password() -> None:
    m = make(100)
    m.link_up(0.0)
    m.packet_received(0.1, peer_advert())
    assert m.state is CarpState.BACKUP
    deadline = m.next_deadline()
    actions = m.reconfigure(0.2, dataclasses.replace(m.config, advskew=110, password=b"new-pw"))
    assert not any(isinstance(a, StateChanged) for a in actions)
    assert m.state is CarpState.BACKUP
    assert m.next_deadline() == deadline  # the running wait is not restarted
    # the old password is now refused, the new one accepted
    assert [type(a).__name__ for a in m.packet_received(0.3, peer_advert())] == ["CountDrop"]
    m.packet_received(0.4, peer_advert(password=b"new-pw"))
    assert m.state is CarpState.BACKUP
    assert m.master_down_interval == 3 + 110 / 256


def test_addresses_cannot_change_in_place() -> None:
    m = make(0)
    with pytest.raises(ValueError, match="addresses"):
        m.reconfigure(0.0, dataclasses.replace(m.config, vhid=2))
