"""pfsync v5 (FreeBSD/pfSense) frame codec with 1400-layout states and carpsim's extension.

Frame = 20-byte header, subheaders each followed by `count` fixed-size records, EOF subheader
(FreeBSD if_pfsync.h). Decoding raises only `DecodeError(reason)` with a `SyncDropReason` value.

StateRecord <-> pfsync 1400 state mapping (docs/statesync-protocol.md §2):
key[0] (wire) = original tuple with SNAT/DNAT applied, key[1] (stack) = original tuple; the
conntrack TCP state goes into the two peer `state` bytes through a fixed injective table;
conntrack `status` and `mark` ride in the src/dst peers' scrub `ts_mod` with `scrub_flag` = 0,
which pf ignores; zone rides in `rtableid`; pf-only fields are "none" (-1) or 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from carpsim.errors import DecodeError
from carpsim.statesync.constants import (
    AF_INET,
    AF_INET6_FREEBSD,
    HEADER_LEN,
    IPPROTO_PFSYNC,
    PF_IN,
    PF_OUT,
    PF_RULE_NONE,
    PFSYNC_DFLTTL,
    PFSYNC_VERSION,
    PFTM_ICMP_ERROR_REPLY,
    PFTM_MAX,
    PFTM_OTHER_MULTIPLE,
    PFTM_TCP_ESTABLISHED,
    PFTM_UDP_MULTIPLE,
    RECORD_LEN,
    SUBHEADER_LEN,
    ZERO_CKSUM,
    Act,
    BusStatus,
    PfTcpLevel,
    SyncDropReason,
)
from carpsim.statesync.items import (
    BulkStatus,
    Clear,
    CompressedUpdate,
    Frame,
    Item,
    NackRange,
    RawRecord,
    Section,
    SeqHeader,
    StateRef,
)
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

__all__ = [
    "BulkStatus",
    "Clear",
    "CompressedUpdate",
    "Frame",
    "Item",
    "NackRange",
    "RawRecord",
    "Section",
    "SeqHeader",
    "StateRef",
]

# --- structs ---------------------------------------------------------------------------------

_HEADER = struct.Struct("!BBH16s")
_SUBHEADER = struct.Struct("!BBH")
_PEER = "HBBIIIIHHBB6x"  # scrub(flags, ttl, scrub_flag, ts_mod), seqlo, seqhi, seqdiff, ...
# One unpack/pack per 1400 state: id, ifname, key0 (a0 a1 p0 p1), key1, src peer, dst peer,
# rt_addr, rule anchor nat_rule, creation expire, packets[4], bytes[4], creatorid, af proto dir,
# state_flags, log, spare, timeout, sync_flags, updates, qid pqid dnpipe dnrpipe, rtableid,
# min_ttl set_tos max_mss, set_prio[2], rt, rt_ifname.
# packets[2][2] / bytes[2][2] are hi/lo u32 pairs; big-endian, each pair is exactly a u64.
_STATE_1400 = struct.Struct(
    "!Q16s16s16sHH16s16sHH" + _PEER + _PEER + "16sIIIIIQQQQIBBBHBBBBBHHHHiBBHBBB16s"
)


def _decoder(alen: int) -> struct.Struct:
    """Only the fields a StateRecord needs, addresses cut to `alen` by the format itself."""
    a = f"{alen}s{16 - alen}x" if alen < 16 else "16s"
    peer = "4xI12x4xB7x"  # ts_mod, state
    return struct.Struct(
        "!Q16x" + a + a + "HH" + a + a + "HH" + peer + peer + "16x12x4xIQQQQIxBB4xB10xi23x"
    )


_DEC4 = _decoder(4)
_DEC6 = _decoder(16)
_UPD_C = struct.Struct("!Q" + _PEER + _PEER + "IIBB2x")
_REF = struct.Struct("!QI")
_CLR = struct.Struct("!16sI")
_BUS = struct.Struct("!IIB3x")
_XSEQ = struct.Struct("!IIIIIB3x")
_XNACK = struct.Struct("!II")
assert _STATE_1400.size == 277
assert _UPD_C.size == 84
assert _XSEQ.size == 24

_EOF_SUBHEADER = _SUBHEADER.pack(Act.EOF, 0, 0)

# --- conntrack TCP state <-> pf peer levels ------------------------------------------------

L = PfTcpLevel
TCP_TO_PEERS: dict[TcpState, tuple[int, int]] = {
    TcpState.NONE: (L.CLOSED, L.CLOSED),
    TcpState.SYN_SENT: (L.SYN_SENT, L.CLOSED),
    TcpState.SYN_SENT2: (L.SYN_SENT, L.SYN_SENT),
    TcpState.SYN_RECV: (L.SYN_SENT, L.SYN_RECEIVED),
    TcpState.ESTABLISHED: (L.ESTABLISHED, L.ESTABLISHED),
    TcpState.FIN_WAIT: (L.FIN_WAIT_1, L.ESTABLISHED),
    TcpState.CLOSE_WAIT: (L.FIN_WAIT_2, L.CLOSE_WAIT),
    TcpState.LAST_ACK: (L.FIN_WAIT_2, L.LAST_ACK),
    TcpState.TIME_WAIT: (L.TIME_WAIT, L.TIME_WAIT),
    TcpState.CLOSE: (L.CLOSING, L.CLOSING),
}
PEERS_TO_TCP: dict[tuple[int, int], TcpState] = {v: k for k, v in TCP_TO_PEERS.items()}
assert len(PEERS_TO_TCP) == len(TCP_TO_PEERS)


def peers_to_tcp(src: int, dst: int) -> TcpState:
    """Exact inverse of TCP_TO_PEERS; other pairs (from a real pf) by the further-along peer."""
    exact = PEERS_TO_TCP.get((src, dst))
    if exact is not None:
        return exact
    pair = {src, dst}
    if L.TIME_WAIT in pair:
        return TcpState.TIME_WAIT
    if L.LAST_ACK in pair:
        return TcpState.LAST_ACK
    if L.FIN_WAIT_2 in pair or L.CLOSE_WAIT in pair:
        return TcpState.CLOSE_WAIT
    if L.FIN_WAIT_1 in pair or L.CLOSING in pair:
        return TcpState.FIN_WAIT
    if L.ESTABLISHED in pair or L.PROXY_SRC in pair or L.PROXY_DST in pair:
        return TcpState.ESTABLISHED
    if L.SYN_RECEIVED in pair:
        return TcpState.SYN_RECV
    if L.SYN_SENT in pair or L.LISTEN in pair:
        return TcpState.SYN_SENT
    return TcpState.NONE


def _timeout_class(proto: int) -> int:
    if proto == 6:
        return PFTM_TCP_ESTABLISHED
    if proto == 17:
        return PFTM_UDP_MULTIPLE
    if proto in (1, 58):
        return PFTM_ICMP_ERROR_REPLY
    return PFTM_OTHER_MULTIPLE


_TCLASS = [_timeout_class(p) for p in range(256)]
_PROXY_DST = int(L.PROXY_DST)
_M32 = 0xFFFFFFFF
_ZERO16 = bytes(16)
_ZERO12 = bytes(12)

# --- record packing --------------------------------------------------------------------------


def _pad(addr: bytes) -> bytes:
    return addr if len(addr) == 16 else addr + _ZERO12 if len(addr) == 4 else addr.ljust(16, b"\0")


def pack_state(rec: StateRecord) -> bytes:
    """One 1400-layout state (277 bytes)."""
    k = rec.key
    src = _pad(k.src)
    dst = _pad(k.dst)
    ns = rec.nat_src
    nd = rec.nat_dst
    wsrc, wsport = (_pad(ns[0]), ns[1]) if ns is not None else (src, k.sport)
    wdst, wdport = (_pad(nd[0]), nd[1]) if nd is not None else (dst, k.dport)
    sl, dl = TCP_TO_PEERS[rec.tcp_state]
    pk = rec.packets
    by = rec.bytes_
    return _STATE_1400.pack(
        rec.id, _ZERO16,
        wsrc, wdst, wsport, wdport,
        src, dst, k.sport, k.dport,
        0, 0, 0, rec.status & _M32, 0, 0, 0, 0, 0, sl, 0,
        0, 0, 0, rec.mark & _M32, 0, 0, 0, 0, 0, dl, 0,
        _ZERO16, PF_RULE_NONE, PF_RULE_NONE, PF_RULE_NONE, 0, rec.timeout & _M32,
        pk[0], pk[1], by[0], by[1],
        rec.creatorid,
        AF_INET if len(k.src) == 4 else AF_INET6_FREEBSD, k.proto,
        PF_OUT if ns is not None else PF_IN,
        0, 0, 0, _TCLASS[k.proto], 0, 0,
        0, 0, 0, 0,
        k.zone,
        0, 0, 0,
        0, 0,
        0, _ZERO16,
    )  # fmt: skip


def unpack_state(data: bytes | memoryview, off: int = 0) -> StateRecord:
    af = data[off + 232]
    if af == AF_INET:
        dec = _DEC4
    elif af == AF_INET6_FREEBSD:
        dec = _DEC6
    else:
        raise DecodeError(SyncDropReason.BADAF, f"address family {af}")
    (sid, wsrc, wdst, wp0, wp1, src, dst, sport, dport, status, slevel, mark, dlevel, expire,
     p0, p1, b0, b1, creatorid, proto, direction, tclass, zone) = dec.unpack_from(
        data, off)  # fmt: skip
    if direction != PF_IN and direction != PF_OUT:  # noqa: PLR1714 - hot path
        raise DecodeError(SyncDropReason.BADDIR, f"direction {direction}")
    if slevel > _PROXY_DST or dlevel > _PROXY_DST:
        raise DecodeError(SyncDropReason.BADSTATE, f"peer levels {slevel}/{dlevel}")
    if tclass >= PFTM_MAX:
        raise DecodeError(SyncDropReason.BADTIMEOUT, f"timeout class {tclass}")
    tcp = PEERS_TO_TCP.get((slevel, dlevel))
    return StateRecord(
        # pf's "no routing table" is -1; other values outside a conntrack zone's 0..65535
        # decode as they are and are refused (badfield) before they reach the kernel.
        FlowKey(proto, src, sport, dst, dport, 0 if zone == -1 else zone),
        creatorid,
        sid,
        (wsrc, wp0) if wp0 != sport or wsrc != src else None,
        (wdst, wp1) if wp1 != dport or wdst != dst else None,
        peers_to_tcp(slevel, dlevel) if tcp is None else tcp,
        expire,
        status,
        mark,
        (p0, p1),
        (b0, b1),
    )


def pack_upd_c(u: CompressedUpdate) -> bytes:
    sl, dl = TCP_TO_PEERS[u.tcp_state]
    return _UPD_C.pack(
        u.id,
        0, 0, 0, u.status & _M32, 0, 0, 0, 0, 0, sl, 0,
        0, 0, 0, u.mark & _M32, 0, 0, 0, 0, 0, dl, 0,
        u.creatorid, u.timeout & _M32, PFTM_TCP_ESTABLISHED, u.flags & 0xFF,
    )  # fmt: skip


def unpack_upd_c(data: bytes | memoryview, off: int) -> CompressedUpdate:
    f = _UPD_C.unpack_from(data, off)
    sl, dl = f[10], f[21]
    if sl > L.PROXY_DST or dl > L.PROXY_DST:
        raise DecodeError(SyncDropReason.BADSTATE, f"peer levels {sl}/{dl}")
    if f[25] >= PFTM_MAX:
        raise DecodeError(SyncDropReason.BADTIMEOUT, f"timeout class {f[25]}")
    return CompressedUpdate(
        creatorid=f[23],
        id=f[0],
        tcp_state=peers_to_tcp(sl, dl),
        timeout=f[24],
        status=f[4],
        mark=f[15],
        flags=f[26],
    )


def _pack_item(action: int, item: Item) -> bytes:
    if isinstance(item, StateRecord) and action in (Act.INS, Act.UPD):
        return pack_state(item)
    if isinstance(item, CompressedUpdate) and action == Act.UPD_C:
        return pack_upd_c(item)
    if isinstance(item, StateRef) and action in (Act.UPD_REQ, Act.DEL_C, Act.INS_ACK):
        return _REF.pack(item.id, item.creatorid)
    if isinstance(item, Clear) and action == Act.CLR:
        return _CLR.pack(item.ifname.encode()[:15], item.creatorid)
    if isinstance(item, BulkStatus) and action == Act.BUS:
        return _BUS.pack(item.creatorid, item.endtime, item.status)
    if isinstance(item, SeqHeader) and action == Act.XSEQ:
        return _XSEQ.pack(item.epoch, item.seq, item.oldest, item.ack_epoch, item.ack, item.flags)
    if isinstance(item, NackRange) and action == Act.XNACK:
        return _XNACK.pack(item.first, item.last)
    if isinstance(item, RawRecord) and len(item.data) == RECORD_LEN.get(action, -1):
        return item.data
    raise ValueError(f"cannot encode {type(item).__name__} under action {action}")


# --- frames ----------------------------------------------------------------------------------


def section_bytes(action: int, records: Sequence[bytes]) -> bytes:
    """A subheader plus its already-packed records (records must all have the action's size)."""
    # v5 leaves the second byte as padding; our extension codes put the record length / 4
    # there (the v6 convention) so a tolerant parser can skip them.
    second = RECORD_LEN[action] // 4 if action >= Act.XSEQ else 0
    return _SUBHEADER.pack(action, second, len(records)) + b"".join(records)


def assemble(body: Iterable[bytes], pfcksum: bytes = ZERO_CKSUM) -> bytes:
    """Header + the given encoded sections + EOF."""
    payload = b"".join(body)
    total = HEADER_LEN + len(payload) + SUBHEADER_LEN
    return _HEADER.pack(PFSYNC_VERSION, 0, total, pfcksum) + payload + _EOF_SUBHEADER


def encode_frame(frame: Frame) -> bytes:
    return assemble(
        (
            section_bytes(s.action, [_pack_item(s.action, i) for i in s.items])
            for s in frame.sections
        ),
        frame.pfcksum,
    )


def _states(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    return [unpack_state(data, off + i * size) for i in range(count)]


def _upd_cs(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    return [unpack_upd_c(data, off + i * size) for i in range(count)]


def _refs(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    unpack = _REF.unpack_from
    return [StateRef(cid, sid) for sid, cid in (unpack(data, off + i * size) for i in range(count))]


def _clears(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    out: list[Item] = []
    for i in range(count):
        name, cid = _CLR.unpack_from(data, off + i * size)
        out.append(Clear(cid, name.split(b"\0", 1)[0].decode("ascii", "replace")))
    return out


def _buses(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    out: list[Item] = []
    for i in range(count):
        cid, endtime, st = _BUS.unpack_from(data, off + i * size)
        if st not in (BusStatus.START, BusStatus.END):
            raise DecodeError(SyncDropReason.BADBUS, f"bus status {st}")
        out.append(BulkStatus(cid, endtime, BusStatus(st)))
    return out


def _seq(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    if count != 1:
        raise DecodeError(SyncDropReason.BADEXT, f"XSEQ count {count}")
    return [SeqHeader(*_XSEQ.unpack_from(data, off))]


def _nacks(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    out: list[Item] = []
    for i in range(count):
        first, last = _XNACK.unpack_from(data, off + i * size)
        if first == 0 or first > last:
            raise DecodeError(SyncDropReason.BADEXT, f"NACK range {first}..{last}")
        out.append(NackRange(first, last))
    return out


def _raw(data: memoryview, off: int, count: int, size: int) -> list[Item]:
    return [RawRecord(bytes(data[off + i * size : off + (i + 1) * size])) for i in range(count)]


_ItemDecoder = Callable[[memoryview, int, int, int], list[Item]]
_DECODERS: dict[int, _ItemDecoder] = {
    Act.INS: _states,
    Act.UPD: _states,
    Act.UPD_C: _upd_cs,
    Act.UPD_REQ: _refs,
    Act.DEL_C: _refs,
    Act.INS_ACK: _refs,
    Act.CLR: _clears,
    Act.BUS: _buses,
    Act.XSEQ: _seq,
    Act.XNACK: _nacks,
}
"""Per action, how its records decode; every other known action is skipped as raw records."""


def decode_frame(data: bytes) -> Frame:
    """Parse a pfsync payload (starting at the pfsync header, no IP header)."""
    n = len(data)
    if n < HEADER_LEN:
        raise DecodeError(SyncDropReason.BADLEN, f"{n} bytes < header")
    version, _pad_byte, total, cksum = _HEADER.unpack_from(data, 0)
    if version != PFSYNC_VERSION:
        raise DecodeError(SyncDropReason.BADVER, f"version {version}")
    if total < HEADER_LEN or total > n:
        raise DecodeError(SyncDropReason.BADLEN, f"header len {total}, packet {n}")
    view = memoryview(data)
    off = HEADER_LEN
    sections: list[Section] = []
    while True:
        if off + SUBHEADER_LEN > total:
            raise DecodeError(SyncDropReason.NOEOF, f"frame ends at {off} without EOF")
        action, _second, count = _SUBHEADER.unpack_from(data, off)
        off += SUBHEADER_LEN
        if action == Act.EOF:
            break
        size = RECORD_LEN.get(action)
        if size is None:
            raise DecodeError(SyncDropReason.BADACT, f"action {action}")
        if action == Act.XSEQ and sections:
            raise DecodeError(SyncDropReason.BADEXT, "XSEQ must be the first subheader")
        end = off + size * count
        if end > total:
            raise DecodeError(SyncDropReason.BADLEN, f"action {action} x{count} overruns frame")
        items = _DECODERS.get(action, _raw)(view, off, count, size)
        sections.append(Section(action, tuple(items)))
        off = end
    return Frame(tuple(sections), bytes(cksum))


# --- fast encoders for the replicator ----------------------------------------------------------
# The replicator sends pre-packed records (one struct call each) instead of building Frame objects:
# a bulk of 100k states would otherwise allocate a Section per frame only to flatten it again.


def encode_refs(idents: Iterable[tuple[int, int]]) -> list[bytes]:
    """(creatorid, id) pairs as UPD_REQ / DEL_C / INS_ACK records."""
    pack = _REF.pack
    return [pack(sid, cid) for cid, sid in idents]


def encode_bus(creatorid: int, endtime: int, status: BusStatus) -> bytes:
    """One BUS section (bulk update status)."""
    return section_bytes(Act.BUS, [_BUS.pack(creatorid, endtime, status)])


def encode_seq(header: SeqHeader) -> bytes:
    """The XSEQ section that opens every frame of the reliable extension."""
    h = header
    return section_bytes(
        Act.XSEQ, [_XSEQ.pack(h.epoch, h.seq, h.oldest, h.ack_epoch, h.ack, h.flags)]
    )


def encode_nacks(ranges: Iterable[NackRange]) -> bytes:
    """One XNACK section listing missing seq ranges."""
    return section_bytes(Act.XNACK, [_XNACK.pack(r.first, r.last) for r in ranges])


def pack_frames(groups: Iterable[tuple[int, Sequence[bytes]]], budget: int) -> list[bytes]:
    """Fill frame bodies of at most `budget` bytes with (action, packed records) groups, in order.

    A group larger than the room left continues in the next body; each body is a run of sections
    ready for `assemble` (after an optional XSEQ section).
    """
    bodies: list[bytes] = []
    parts: list[bytes] = []
    used = 0
    for action, records in groups:
        size = RECORD_LEN[action]
        i = 0
        while i < len(records):
            room = (budget - used - SUBHEADER_LEN) // size
            if room <= 0:
                bodies.append(b"".join(parts))
                parts, used = [], 0
                continue
            chunk = records[i : i + room]
            parts.append(section_bytes(action, chunk))
            used += SUBHEADER_LEN + size * len(chunk)
            i += len(chunk)
    if parts:
        bodies.append(b"".join(parts))
    return bodies


# --- the IPv4 packet around a frame ------------------------------------------------------------

_IPV4 = struct.Struct("!BBHHHBBH4s4s")


@dataclass(frozen=True, slots=True)
class SyncPacket:
    """A received IPv4 packet that passed pfsync_input's header checks."""

    src: bytes
    dst: bytes
    payload: bytes
    """From the pfsync header on (IP header and any trailing padding removed)."""


def decode_packet(data: bytes, *, check_ttl: bool = True) -> SyncPacket:
    """Check an IPv4 packet carrying pfsync (as pfsync_input): length, IHL, protocol and
    TTL exactly 255 (an on-link-only check: any routed packet arrives with less).

    Raises only `DecodeError` with a `SyncDropReason`; the frame itself is `decode_frame`'s.
    """
    n = len(data)
    if n < _IPV4.size:
        raise DecodeError(SyncDropReason.BADLEN, f"{n}-byte packet")
    ver_ihl, _tos, total, _id, _frag, ttl, proto, _sum, src, dst = _IPV4.unpack_from(data)
    if ver_ihl >> 4 != 4:
        raise DecodeError(SyncDropReason.BADVER, f"IP version {ver_ihl >> 4}")
    ihl = (ver_ihl & 0x0F) * 4
    # Raw sockets hand over the packet as received; a total length of 0 comes from
    # segmentation offload, so only a length that contradicts the buffer is refused.
    end = total if total else n
    if ihl < _IPV4.size or end < ihl or end > n:
        raise DecodeError(SyncDropReason.BADLEN, f"IPv4 ihl {ihl} total length {total}, got {n}")
    if proto != IPPROTO_PFSYNC:
        raise DecodeError(SyncDropReason.BADPROTO, f"IP protocol {proto}")
    if check_ttl and ttl != PFSYNC_DFLTTL:
        raise DecodeError(SyncDropReason.BADTTL, f"ttl {ttl} from {_dotted(src)}")
    return SyncPacket(src, dst, data[ihl:end])


def _dotted(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)
