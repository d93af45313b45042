"""The neutral connection-state record both table backends (in-memory, kernel conntrack) share.

Addresses are raw network-order bytes (4 for IPv4, 16 for IPv6) so codecs and the ctnetlink
encoder copy them without parsing. The *original* tuple is the flow as the initiator sent it
(pfsync's stack key); `nat_src`/`nat_dst` say how the firewall rewrote it (the wire key side).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TcpState(enum.IntEnum):
    """Linux conntrack TCP states (nf_conntrack_tcp.h numbering), the lab's source of truth.

    Ordered so a larger value is never "earlier" in a connection's life, except SYN_SENT2
    (simultaneous open, after SYN_SENT): the apply order is `tcp_progress`.
    """

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9


# A strict order, as conntrack moves (SYN_SENT -> SYN_SENT2 on a SYN from the responder,
# FIN_WAIT -> CLOSE_WAIT on the ACK of the FIN, never back) and as pf's per-peer levels of the
# wire mapping do. Two distinct states of equal rank would make "never backwards" accept either
# over the other: crossing updates would swap on the two nodes and never converge.
_PROGRESS = {
    TcpState.NONE: 0,
    TcpState.SYN_SENT: 1,
    TcpState.SYN_SENT2: 2,
    TcpState.SYN_RECV: 3,
    TcpState.ESTABLISHED: 4,
    TcpState.FIN_WAIT: 5,
    TcpState.CLOSE_WAIT: 6,
    TcpState.LAST_ACK: 7,
    TcpState.TIME_WAIT: 8,
    TcpState.CLOSE: 9,
}


def tcp_progress(state: TcpState) -> int:
    """Rank used by "TCP state never moves backwards" (pfsync apply rule)."""
    return _PROGRESS[state]


@dataclass(frozen=True, slots=True)
class FlowKey:
    """Original-direction 5-tuple plus conntrack zone: how both backends identify a state."""

    proto: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    zone: int = 0


@dataclass(frozen=True, slots=True)
class StateRecord:
    key: FlowKey
    creatorid: int = 0
    """32-bit id of the node that created the state (pfsync creatorid)."""
    id: int = 0
    """64-bit per-creator state id (pfsync id); with creatorid the cluster-wide identity."""
    nat_src: tuple[bytes, int] | None = None
    """SNAT: the original source is rewritten to (address, port) on the way out."""
    nat_dst: tuple[bytes, int] | None = None
    """DNAT: the original destination is rewritten to (address, port)."""
    tcp_state: TcpState = TcpState.NONE
    timeout: int = 0
    """Seconds of life left when the record was taken."""
    status: int = 0
    """Linux conntrack status bits (IPS_*), e.g. ASSURED | SEEN_REPLY | SRC_NAT."""
    mark: int = 0
    packets: tuple[int, int] = (0, 0)
    """(original, reply) direction packet counters."""
    bytes_: tuple[int, int] = (0, 0)
    """(original, reply) direction byte counters."""
