"""pfsync wire constants (FreeBSD if_pfsync.h) and the carpsim reliability extension.

The extension is specified in docs/statesync-protocol.md §3.

FreeBSD/pfSense family: header version 5, EOF-terminated frames, "1400" state records.
"""

from __future__ import annotations

import enum

IPPROTO_PFSYNC = 240
PFSYNC_VERSION = 5
PFSYNC_GROUP_V4 = "224.0.0.240"
PFSYNC_DFLTTL = 255

HEADER_LEN = 20
SUBHEADER_LEN = 4
STATE_1400_LEN = 277
STATE_1301_LEN = 242
UPD_C_LEN = 84
REF_LEN = 12  # id u64 + creatorid u32 (INS_ACK, UPD_REQ, DEL_C)
CLR_LEN = 20
BUS_LEN = 12
TDB_LEN = 48
IFNAMSIZ = 16
ZERO_CKSUM = bytes(16)


class Act(enum.IntEnum):
    """Subheader action codes (FreeBSD v5 numbering) plus carpsim's vendor extension codes."""

    CLR = 0
    INS_1301 = 1
    INS_ACK = 2
    UPD_1301 = 3
    UPD_C = 4
    UPD_REQ = 5
    DEL = 6
    DEL_C = 7
    INS_F = 8
    DEL_F = 9
    BUS = 10
    TDB = 11
    EOF = 12
    INS = 13  # 1400 layout
    UPD = 14  # 1400 layout
    INS_1500 = 15
    UPD_1500 = 16
    # carpsim extension (docs/statesync-protocol.md): only ever sent between carpsim nodes.
    XSEQ = 0xF0
    XNACK = 0xF1
    XAUTH = 0xF2  # keyed mode only (statesync/auth.py)


XSEQ_LEN = 24
XNACK_LEN = 8
XSEQ_RESTART = 0x01  # sender's first frames of an epoch (informational; receivers key on epoch)
XSEQ_BULK = 0x02  # frame belongs to a bulk transfer (informational, for dissectors/metrics)
# UPD_C flags, in the first of its three pad bytes (pf ignores the pad; a pf peer sends 0):
UPDC_TRAFFIC = 0x01  # the sender forwarded traffic of this state since its previous refresh

# Record sizes for the actions we can at least skip over; None = size unknown -> badact.
RECORD_LEN: dict[int, int] = {
    Act.CLR: CLR_LEN,
    Act.INS_1301: STATE_1301_LEN,
    Act.INS_ACK: REF_LEN,
    Act.UPD_1301: STATE_1301_LEN,
    Act.UPD_C: UPD_C_LEN,
    Act.UPD_REQ: REF_LEN,
    Act.DEL: STATE_1301_LEN,
    Act.DEL_C: REF_LEN,
    Act.BUS: BUS_LEN,
    Act.TDB: TDB_LEN,
    Act.EOF: 0,
    Act.INS: STATE_1400_LEN,
    Act.UPD: STATE_1400_LEN,
    Act.XSEQ: XSEQ_LEN,
    Act.XNACK: XNACK_LEN,
    Act.XAUTH: 32,
}


class BusStatus(enum.IntEnum):
    START = 1
    END = 2


class PfTcpLevel(enum.IntEnum):
    """pf's per-peer TCP FSM level (TCPS_* plus the two syn-proxy levels)."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    CLOSE_WAIT = 5
    FIN_WAIT_1 = 6
    CLOSING = 7
    LAST_ACK = 8
    FIN_WAIT_2 = 9
    TIME_WAIT = 10
    PROXY_SRC = 11
    PROXY_DST = 12


# pf timeout classes (PFTM_*); receivers reject >= PFTM_MAX.
PFTM_TCP_ESTABLISHED = 2
PFTM_UDP_MULTIPLE = 8
PFTM_ICMP_ERROR_REPLY = 10
PFTM_OTHER_MULTIPLE = 13
PFTM_MAX = 22

PF_IN = 1
PF_OUT = 2
AF_INET = 2
AF_INET6_FREEBSD = 28
PF_RULE_NONE = 0xFFFFFFFF
SCRUB_FLAG_VALID = 0x01


class SyncDropReason(enum.StrEnum):
    """Counter names for dropped sync input (decode reasons first, then machine reasons)."""

    BADIF = "badif"
    """Arrived on another interface than the sync link (the edge's only check)."""
    BADTTL = "badttl"
    BADPROTO = "badproto"
    BADLEN = "badlen"
    BADVER = "badver"
    BADACT = "badact"
    NOEOF = "noeof"
    BADAF = "badaf"
    BADDIR = "baddir"
    BADSTATE = "badstate"
    BADTIMEOUT = "badtimeout"
    BADEXT = "badext"
    LOOP = "loop"
    DUPLICATE = "duplicate"
    STALE = "stale"
    COLLISION = "collision"
    LINK_DOWN = "link_down"
    WINDOW = "window"
    """Further ahead than the reorder window (seqs or bytes): not held, comes again."""
    BADACK = "badack"
    """An XSEQ ACK covering seqs we never sent: not obeyed."""
    BADNACK = "badnack"
    """An XNACK range above the last seq we sent: not obeyed."""
    RESYNC = "resync"
    """The sender's `oldest` lies far below our position: re-based on it (a forged skip)."""
    BADPEER = "badpeer"
    """From an address that is not the configured sync peer (or, with the group, not on the
    sync subnet)."""
    BADAUTH = "badauth"
    """Keyed mode: no, or a wrong, authentication subheader."""
    REPLAY = "replay"
    """Keyed mode: an authenticated frame seen before (or older than the replay window)."""
    NOTYOURS = "notyours"
    """A DEL_C naming a state only this node drives: not obeyed (only our kernel ends it)."""
    BADFIELD = "badfield"
    """A state field out of range for the kernel (zone beyond 0..65535...): record dropped."""
    BADBUS = "badbus"
