"""The statesync status' "recent" list (the page's Recent states): bounded, newest first, and
each state's origin read from its creator, fed through the service's real input paths."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address

from carpsim.runtime.nodeconfig import StateSyncConfig
from carpsim.runtime.statesync_service import RECENT, StateSyncService
from carpsim.statesync.codec import BulkStatus, Frame, Section, SeqHeader, encode_frame
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import Act, BusStatus
from carpsim.statesync.events import Action, CtChange, InstallStates, LocalEvent
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.statesync.replicator import Replicator

OWN, PEER = 0xA1, 0xB2


def key(i: int, proto: int = 6) -> FlowKey:
    return FlowKey(proto, bytes([192, 168, 110, i]), 40000 + i, bytes([203, 0, 113, 10]), 5001)


def service() -> StateSyncService:
    cfg = ReplicatorConfig(creatorid=OWN)
    svc = StateSyncService(
        StateSyncConfig("sync", IPv4Address("172.16.1.6"), cfg), lambda _r, _why: None
    )
    svc.replicator = Replicator(cfg, random.Random(1))
    svc.replicator.started(0.0)
    return svc


def peer_frame(seq: int, *secs: Section) -> bytes:
    hdr = Section(Act.XSEQ, (SeqHeader(0x51515151, seq, 1, 0, 0),))
    return encode_frame(Frame((hdr, *secs)))


def from_peer(svc: StateSyncService, now: float, seq: int, recs: tuple[StateRecord, ...]) -> None:
    """A peer's UPD frame through the replicator; its installs through the service."""
    rep = svc.replicator
    assert rep is not None
    out = rep.frame_received(now, peer_frame(seq, Section(Act.UPD, recs)))
    installs: list[Action] = [a for a in out if isinstance(a, InstallStates)]
    assert installs, out
    svc.execute(installs)  # (no kernel or loop here: the writes only queue)


def test_recent_lists_own_and_peer_states_newest_first_with_their_origin() -> None:
    svc = service()
    rep = svc.replicator
    assert rep is not None
    bus = Section(Act.BUS, (BulkStatus(PEER, 0, BusStatus.START),))
    rep.frame_received(0.01, peer_frame(1, bus))
    peer = StateRecord(key(1), creatorid=PEER, id=7, tcp_state=TcpState.ESTABLISHED, timeout=90)
    from_peer(svc, 0.02, 2, (peer,))
    udp = StateRecord(key(2, proto=17), timeout=60)
    svc._local_events(0.03, [(CtChange.NEW, udp)])
    # The kernel's echo of the install arrives as a local event: still the peer's state.
    echo = StateRecord(key(1), tcp_state=TcpState.ESTABLISHED, timeout=90)
    svc._local_events(0.04, [(CtChange.NEW, echo)])
    recent = svc.status()["recent"]
    assert recent == [
        {"proto": "tcp", "src": "192.168.110.1:40001", "dst": "203.0.113.10:5001",
         "state": "ESTABLISHED", "origin": "peer"},
        {"proto": "udp", "src": "192.168.110.2:40002", "dst": "203.0.113.10:5001",
         "state": None, "origin": "own"},
    ]  # fmt: skip
    json.dumps(recent)  # the control socket answers it as JSON


def test_recent_is_bounded_and_drops_states_that_are_gone() -> None:
    svc = service()
    many: list[LocalEvent] = [
        (CtChange.NEW, StateRecord(key(i), timeout=60)) for i in range(1, 3 * RECENT)
    ]
    svc._local_events(0.1, many)
    recent = svc.status()["recent"]
    assert len(recent) == RECENT
    assert recent[0]["src"] == f"192.168.110.{3 * RECENT - 1}:{40000 + 3 * RECENT - 1}"
    svc._local_events(0.2, [(CtChange.DESTROY, key(3 * RECENT - 1))])
    assert all(r["src"] != recent[0]["src"] for r in svc.status()["recent"])
    assert len(svc.status()["recent"]) == RECENT - 1
