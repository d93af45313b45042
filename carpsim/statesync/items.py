"""The typed values of a pfsync frame (what `codec.decode_frame` returns and `encode_frame` takes).

Field meanings follow BSD if_pfsync.h/pfvar.h and docs/statesync-protocol.md; the byte rules are
all in codec.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from carpsim.statesync.constants import ZERO_CKSUM, Act, BusStatus
from carpsim.statesync.record import StateRecord, TcpState


@dataclass(frozen=True, slots=True)
class StateRef:
    """(creatorid, id) reference: UPD_REQ (0/0 = "send everything"), DEL_C, INS_ACK."""

    creatorid: int
    id: int


@dataclass(frozen=True, slots=True)
class CompressedUpdate:
    """UPD_C: what changes during a flow's life (TCP level, remaining timeout, flags)."""

    creatorid: int
    id: int
    tcp_state: TcpState
    timeout: int
    status: int = 0
    mark: int = 0
    flags: int = 0
    """carpsim UPD_C flags (pad byte 0, zero from pf): UPDC_TRAFFIC."""


@dataclass(frozen=True, slots=True)
class Clear:
    """CLR: drop every state created by `creatorid` (on interface `ifname` if non-empty)."""

    creatorid: int
    ifname: str = ""


@dataclass(frozen=True, slots=True)
class BulkStatus:
    creatorid: int
    endtime: int
    status: BusStatus


@dataclass(frozen=True, slots=True)
class SeqHeader:
    """carpsim XSEQ: the sender's epoch and sequence number plus a piggybacked cumulative ACK.

    seq 0 = unsequenced (control only). `oldest`: the lowest seq the sender can still resend;
    a receiver expecting less skips forward (the sender covers such loss with a bulk push).
    """

    epoch: int
    seq: int
    oldest: int
    ack_epoch: int
    ack: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class NackRange:
    """carpsim XNACK: seqs first..last (inclusive) of the ack_epoch stream are missing."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record of a layout we only skip (1301 states, DEL, TDB)."""

    data: bytes


Item = (
    StateRecord
    | StateRef
    | CompressedUpdate
    | Clear
    | BulkStatus
    | SeqHeader
    | NackRange
    | RawRecord
)


@dataclass(frozen=True, slots=True)
class Section:
    action: int
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Frame:
    sections: tuple[Section, ...]
    pfcksum: bytes = ZERO_CKSUM

    @property
    def seq(self) -> SeqHeader | None:
        if self.sections and self.sections[0].action == Act.XSEQ:
            item = self.sections[0].items[0]
            assert isinstance(item, SeqHeader)
            return item
        return None
