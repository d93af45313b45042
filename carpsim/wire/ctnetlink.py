"""ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK) conntrack messages, packed and parsed (PURE).

pyroute2 builds a conntrack message in ~2 ms of pure Python, which caps injection at ~500
entries/s (bench_conntrack.py). These encoders pack the same attributes with `struct` directly
into a bytearray so a batch of a few hundred messages is one sendmsg, and the decoder reads only
the attributes a `StateRecord` needs.

The create message is what conntrackd (netlink.c) and libnetfilter_conntrack send:
the reply tuple is the *plain inverse* of the original and NAT travels as CTA_NAT_SRC/DST, so the
kernel sets up the translation itself; CTA_STATUS always includes IPS_CONFIRMED (otherwise
ctnetlink answers EBUSY).

ICMP has no ports: a FlowKey for ICMP carries the echo id as `sport` and (type << 8 | code) as
`dport`, and a NAT mapping's port is the translated id.

Only bytes live here; the socket that sends and receives them is `carpsim.net.conntrack`.
Malformed kernel messages raise `DecodeError` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from carpsim.errors import DecodeError
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS = 5
MSG_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
MSG_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
MSG_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
MSG_GET_STATS = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# Multicast groups (NFNLGRP_CONNTRACK_NEW/UPDATE/DESTROY = 1, 2, 3) as an nl_groups bitmask.
GROUPS_CONNTRACK = 0x1 | 0x2 | 0x4

AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_NAT_SRC = 6
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_ID = 12
CTA_NAT_DST = 13
CTA_ZONE = 18
CTA_STATS_GLOBAL_ENTRIES = 1

CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4
CTA_PROTOINFO_TCP_FLAGS_REPLY = 5
CTA_NAT_V4_MINIP = 1
CTA_NAT_V4_MAXIP = 2
CTA_NAT_PROTO = 3
CTA_NAT_V6_MINIP = 4
CTA_NAT_V6_MAXIP = 5
CTA_PROTONAT_PORT_MIN = 1
CTA_PROTONAT_PORT_MAX = 2
CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2
CTA_COUNTERS32_PACKETS = 3
CTA_COUNTERS32_BYTES = 4

IPS_EXPECTED = 0x1
IPS_SEEN_REPLY = 0x2
IPS_ASSURED = 0x4
IPS_CONFIRMED = 0x8
IPS_SRC_NAT = 0x10
IPS_DST_NAT = 0x20
# The only status bits a replica may carry over: everything else is either set by the kernel
# itself (NAT bits, CONFIRMED) or refused by ctnetlink (EXPECTED, DYING, TEMPLATE...).
IPS_SYNCABLE = IPS_SEEN_REPLY | IPS_ASSURED

TCP_FLAG_SACK_PERM = 0x02
TCP_FLAG_BE_LIBERAL = 0x08
# Per-entry BE_LIBERAL (what conntrackd sends): ctnetlink carries no sequence numbers or windows,
# so a mid-stream entry cannot seed the window tracker; liberal tracking still rejects
# out-of-window RSTs. Chosen over the namespace-wide nf_conntrack_tcp_be_liberal=1, which would
# also weaken tracking of every locally created flow.
TCP_INJECT_FLAGS = TCP_FLAG_SACK_PERM | TCP_FLAG_BE_LIBERAL

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
_PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, 33, 132, 136})  # + DCCP, SCTP, UDPLITE

# ICMP request -> reply types (nf_conntrack_proto_icmp.c invmap), both ways.
_ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
_ICMPV6_INVERSE = {128: 129, 129: 128, 139: 140, 140: 139}

_NLMSGHDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_NLA = struct.Struct("=HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_ERR = struct.Struct("=i")
HEADER_LEN = _NLMSGHDR.size + _NFGEN.size


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size & 3)


def _nest(kind: int, *children: bytes) -> bytes:
    body = b"".join(children)
    return _NLA.pack(4 + len(body), kind | NLA_F_NESTED) + body


def _family(addr: bytes) -> int:
    if len(addr) == 4:
        return AF_INET
    if len(addr) == 16:
        return AF_INET6
    raise ValueError(f"address must be 4 or 16 bytes, got {len(addr)}")


def _is_icmp(proto: int) -> bool:
    return proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)


def _tuple(key: FlowKey) -> bytes:
    proto, src, sport, dst, dport, zone = (
        key.proto,
        key.src,
        key.sport,
        key.dst,
        key.dport,
        key.zone,
    )
    if len(src) == 4:
        ip = _nest(CTA_TUPLE_IP, _attr(CTA_IP_V4_SRC, src), _attr(CTA_IP_V4_DST, dst))
    else:
        ip = _nest(CTA_TUPLE_IP, _attr(CTA_IP_V6_SRC, src), _attr(CTA_IP_V6_DST, dst))
    parts = [_attr(CTA_PROTO_NUM, bytes((proto,)))]
    if proto in _PORT_PROTOS:
        parts += [
            _attr(CTA_PROTO_SRC_PORT, _U16.pack(sport)),
            _attr(CTA_PROTO_DST_PORT, _U16.pack(dport)),
        ]
    elif proto == IPPROTO_ICMP:
        parts += [
            _attr(CTA_PROTO_ICMP_ID, _U16.pack(sport)),
            _attr(CTA_PROTO_ICMP_TYPE, bytes((dport >> 8,))),
            _attr(CTA_PROTO_ICMP_CODE, bytes((dport & 0xFF,))),
        ]
    elif proto == IPPROTO_ICMPV6:
        parts += [
            _attr(CTA_PROTO_ICMPV6_ID, _U16.pack(sport)),
            _attr(CTA_PROTO_ICMPV6_TYPE, bytes((dport >> 8,))),
            _attr(CTA_PROTO_ICMPV6_CODE, bytes((dport & 0xFF,))),
        ]
    out = ip + _nest(CTA_TUPLE_PROTO, *parts)
    if zone:
        out += _attr(CTA_TUPLE_ZONE, _U16.pack(zone))
    return out


def orig_tuple(key: FlowKey) -> bytes:
    return _nest(CTA_TUPLE_ORIG, _tuple(key))


def inverse_tuple(key: FlowKey) -> bytes:
    """The reply tuple conntrack would compute if no NAT applied (libnetfilter_conntrack's)."""
    if _is_icmp(key.proto):
        table = _ICMP_INVERSE if key.proto == IPPROTO_ICMP else _ICMPV6_INVERSE
        itype = key.dport >> 8
        rtype = table.get(itype, itype)
        inverse = FlowKey(
            key.proto, key.dst, key.sport, key.src, rtype << 8 | key.dport & 0xFF, key.zone
        )
    else:
        inverse = FlowKey(key.proto, key.dst, key.dport, key.src, key.sport, key.zone)
    body = _tuple(inverse)
    return _nest(CTA_TUPLE_REPLY, body)


def _nat(kind: int, addr: bytes, port: int, proto: int) -> bytes:
    if len(addr) == 4:
        parts = [_attr(CTA_NAT_V4_MINIP, addr), _attr(CTA_NAT_V4_MAXIP, addr)]
    else:
        parts = [_attr(CTA_NAT_V6_MINIP, addr), _attr(CTA_NAT_V6_MAXIP, addr)]
    if proto in _PORT_PROTOS or _is_icmp(proto):
        p = _U16.pack(port)
        parts.append(
            _nest(CTA_NAT_PROTO, _attr(CTA_PROTONAT_PORT_MIN, p), _attr(CTA_PROTONAT_PORT_MAX, p))
        )
    return _nest(kind, *parts)


def _tcp_protoinfo(state: TcpState) -> bytes:
    flags = bytes((TCP_INJECT_FLAGS, TCP_INJECT_FLAGS))
    return _nest(
        CTA_PROTOINFO,
        _nest(
            CTA_PROTOINFO_TCP,
            _attr(CTA_PROTOINFO_TCP_STATE, bytes((int(state),))),
            _attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, flags),
            _attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, flags),
        ),
    )


def _message(msg_type: int, flags: int, seq: int, family: int, body: bytes) -> bytes:
    return (
        _NLMSGHDR.pack(HEADER_LEN + len(body), msg_type, flags, seq, 0)
        + _NFGEN.pack(family, 0, 0)
        + body
    )


def _timeout(record: StateRecord) -> int:
    # CTA_TIMEOUT is mandatory on create; a record taken at the very end of its life still
    # deserves a moment in the table rather than an EINVAL.
    return max(1, record.timeout)


def create_message(record: StateRecord, seq: int, flags: int = 0) -> bytes:
    """IPCTNL_MSG_CT_NEW that creates the entry (NLM_F_CREATE|EXCL: EEXIST if present)."""
    key = record.key
    body = [
        orig_tuple(key),
        inverse_tuple(key),
        _attr(CTA_STATUS, _U32.pack((record.status & IPS_SYNCABLE) | IPS_CONFIRMED)),
        _attr(CTA_TIMEOUT, _U32.pack(_timeout(record))),
    ]
    if record.mark:
        body.append(_attr(CTA_MARK, _U32.pack(record.mark)))
    if key.zone:
        body.append(_attr(CTA_ZONE, _U16.pack(key.zone)))
    if record.nat_src is not None:
        body.append(_nat(CTA_NAT_SRC, record.nat_src[0], record.nat_src[1], key.proto))
    if record.nat_dst is not None:
        body.append(_nat(CTA_NAT_DST, record.nat_dst[0], record.nat_dst[1], key.proto))
    if key.proto == IPPROTO_TCP:
        body.append(_tcp_protoinfo(record.tcp_state))
    return _message(
        MSG_NEW,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | flags,
        seq,
        _family(key.src),
        b"".join(body),
    )


def update_message(record: StateRecord, seq: int, flags: int = 0) -> bytes:
    """IPCTNL_MSG_CT_NEW without CREATE: changes an existing entry (ENOENT if absent).

    NAT attributes are left out because ctnetlink only accepts them on creation (EOPNOTSUPP
    otherwise); NAT cannot change during a flow's life anyway.
    """
    key = record.key
    body = [
        orig_tuple(key),
        _attr(CTA_STATUS, _U32.pack((record.status & IPS_SYNCABLE) | IPS_CONFIRMED)),
        _attr(CTA_TIMEOUT, _U32.pack(_timeout(record))),
        _attr(CTA_MARK, _U32.pack(record.mark)),
    ]
    if key.zone:
        body.append(_attr(CTA_ZONE, _U16.pack(key.zone)))
    if key.proto == IPPROTO_TCP:
        body.append(_tcp_protoinfo(record.tcp_state))
    return _message(MSG_NEW, NLM_F_REQUEST | flags, seq, _family(key.src), b"".join(body))


def delete_message(key: FlowKey, seq: int, flags: int = 0) -> bytes:
    body = orig_tuple(key)
    if key.zone:
        body += _attr(CTA_ZONE, _U16.pack(key.zone))
    return _message(MSG_DELETE, NLM_F_REQUEST | flags, seq, _family(key.src), body)


def get_message(key: FlowKey, seq: int) -> bytes:
    body = orig_tuple(key)
    if key.zone:
        body += _attr(CTA_ZONE, _U16.pack(key.zone))
    return _message(MSG_GET, NLM_F_REQUEST, seq, _family(key.src), body)


def dump_message(seq: int, family: int = AF_UNSPEC) -> bytes:
    return _message(MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, b"")


def flush_message(seq: int, family: int = AF_UNSPEC) -> bytes:
    """IPCTNL_MSG_CT_DELETE without a tuple empties the table (of one family, or all)."""
    return _message(MSG_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, b"")


def stats_message(seq: int) -> bytes:
    return _message(MSG_GET_STATS, NLM_F_REQUEST, seq, AF_UNSPEC, b"")


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class NlMessage:
    msg_type: int
    flags: int
    seq: int
    payload: memoryview
    """Bytes after the netlink header (nfgenmsg + attributes, or nlmsgerr)."""


def split_messages(buf: bytes | bytearray | memoryview) -> Iterator[NlMessage]:
    view = memoryview(buf)
    off = 0
    end = len(view)
    while off + 16 <= end:
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(view, off)
        if length < 16 or off + length > end:
            raise DecodeError("badlen", f"netlink message length {length} at {off}")
        yield NlMessage(mtype, flags, seq, view[off + 16 : off + length])
        off += (length + 3) & ~3


def error_code(msg: NlMessage) -> int:
    """The positive errno of an NLMSG_ERROR message (0 = ACK)."""
    if len(msg.payload) < 4:
        raise DecodeError("badlen", "short nlmsgerr")
    return -int(_ERR.unpack_from(msg.payload, 0)[0])


def _attrs(view: memoryview, off: int, end: int) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        size, kind = unpack(view, off)
        if size < 4 or off + size > end:
            raise DecodeError("badlen", f"attribute {kind & NLA_TYPE_MASK} size {size}")
        out[kind & NLA_TYPE_MASK] = (off + 4, off + size)
        off += (size + 3) & ~3
    return out


_Fields = tuple[int, bytes, int, bytes, int, int]


def _tuple_fields(view: memoryview, span: tuple[int, int]) -> _Fields:
    top = _attrs(view, *span)
    ip = _attrs(view, *top[CTA_TUPLE_IP]) if CTA_TUPLE_IP in top else {}
    if CTA_IP_V4_SRC in ip:
        s, d = ip[CTA_IP_V4_SRC], ip[CTA_IP_V4_DST]
    elif CTA_IP_V6_SRC in ip:
        s, d = ip[CTA_IP_V6_SRC], ip[CTA_IP_V6_DST]
    else:
        raise DecodeError("badtuple", "tuple without addresses")
    src = bytes(view[s[0] : s[1]])
    dst = bytes(view[d[0] : d[1]])
    if CTA_TUPLE_PROTO not in top:
        raise DecodeError("badtuple", "tuple without protocol")
    pr = _attrs(view, *top[CTA_TUPLE_PROTO])
    proto = view[pr[CTA_PROTO_NUM][0]] if CTA_PROTO_NUM in pr else 0
    sport = dport = 0
    if CTA_PROTO_SRC_PORT in pr:
        sport = _U16.unpack_from(view, pr[CTA_PROTO_SRC_PORT][0])[0]
        dport = _U16.unpack_from(view, pr[CTA_PROTO_DST_PORT][0])[0]
    else:
        for id_, type_, code in (
            (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE),
            (CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE),
        ):
            if id_ in pr:
                sport = _U16.unpack_from(view, pr[id_][0])[0]
                dport = view[pr[type_][0]] << 8 | view[pr[code][0]]
    zone = _U16.unpack_from(view, top[CTA_TUPLE_ZONE][0])[0] if CTA_TUPLE_ZONE in top else 0
    return proto, src, sport, dst, dport, zone


def _counters(view: memoryview, span: tuple[int, int] | None) -> tuple[int, int]:
    if span is None:
        return 0, 0
    c = _attrs(view, *span)
    if CTA_COUNTERS_PACKETS in c:
        return (
            _U64.unpack_from(view, c[CTA_COUNTERS_PACKETS][0])[0],
            _U64.unpack_from(view, c[CTA_COUNTERS_BYTES][0])[0],
        )
    if CTA_COUNTERS32_PACKETS in c:
        return (
            _U32.unpack_from(view, c[CTA_COUNTERS32_PACKETS][0])[0],
            _U32.unpack_from(view, c[CTA_COUNTERS32_BYTES][0])[0],
        )
    return 0, 0


_MALFORMED = (struct.error, KeyError, IndexError)
"""What reading a missing or truncated attribute raises; the public decoders turn it into
`DecodeError` so a caller has one exception to count (the hot path pays only a try block)."""


def decode_key(payload: memoryview) -> FlowKey:
    """The original-direction key of a conntrack message (payload after the netlink header)."""
    try:
        return _decode_key(payload)
    except _MALFORMED as exc:
        raise DecodeError("badattr", f"malformed conntrack tuple ({exc!r})") from exc


def decode_record(payload: memoryview) -> StateRecord:
    """A conntrack entry (dump reply or event) as a StateRecord; NAT derived from the reply tuple.

    Original s:sp -> d:dp, reply rs:rsp -> rd:rdp. Without NAT the reply is the plain inverse;
    SNAT shows as (rd, rdp) != (s, sp), DNAT as (rs, rsp) != (d, dp).
    """
    try:
        return _decode_record(payload)
    except _MALFORMED as exc:
        raise DecodeError("badattr", f"malformed conntrack entry ({exc!r})") from exc


def decode_stats_entries(payload: memoryview) -> int:
    try:
        return _decode_stats_entries(payload)
    except _MALFORMED as exc:
        raise DecodeError("badattr", f"malformed conntrack stats ({exc!r})") from exc


def _decode_key(payload: memoryview) -> FlowKey:
    top = _attrs(payload, _NFGEN.size, len(payload))
    if CTA_TUPLE_ORIG not in top:
        raise DecodeError("badtuple", "message without an original tuple")
    proto, src, sport, dst, dport, zone = _tuple_fields(payload, top[CTA_TUPLE_ORIG])
    if CTA_ZONE in top:
        zone = _U16.unpack_from(payload, top[CTA_ZONE][0])[0]
    return FlowKey(proto, src, sport, dst, dport, zone)


def _decode_record(payload: memoryview) -> StateRecord:  # noqa: C901 - one branch per conntrack attribute
    view = payload
    top = _attrs(view, _NFGEN.size, len(view))
    if CTA_TUPLE_ORIG not in top:
        raise DecodeError("badtuple", "message without an original tuple")
    proto, src, sport, dst, dport, zone = _tuple_fields(view, top[CTA_TUPLE_ORIG])
    if CTA_ZONE in top:
        zone = _U16.unpack_from(view, top[CTA_ZONE][0])[0]
    nat_src: tuple[bytes, int] | None = None
    nat_dst: tuple[bytes, int] | None = None
    if CTA_TUPLE_REPLY in top:
        _, rsrc, rsport, rdst, rdport, _ = _tuple_fields(view, top[CTA_TUPLE_REPLY])
        if _is_icmp(proto):
            # Reply "sport" is the (possibly translated) echo id; the type is inverted.
            if rdst != src or rsport != sport:
                nat_src = (rdst, rsport)
            if rsrc != dst:
                nat_dst = (rsrc, 0)
        else:
            if rdst != src or rdport != sport:
                nat_src = (rdst, rdport)
            if rsrc != dst or rsport != dport:
                nat_dst = (rsrc, rsport)
    tcp_state = TcpState.NONE
    if CTA_PROTOINFO in top:
        pinfo = _attrs(view, *top[CTA_PROTOINFO])
        if CTA_PROTOINFO_TCP in pinfo:
            tcp = _attrs(view, *pinfo[CTA_PROTOINFO_TCP])
            if CTA_PROTOINFO_TCP_STATE in tcp:
                raw = view[tcp[CTA_PROTOINFO_TCP_STATE][0]]
                tcp_state = TcpState(raw) if raw <= TcpState.SYN_SENT2 else TcpState.NONE

    def u32(attr: int) -> int:
        span = top.get(attr)
        return _U32.unpack_from(view, span[0])[0] if span else 0

    po, bo = _counters(view, top.get(CTA_COUNTERS_ORIG))
    pr, br = _counters(view, top.get(CTA_COUNTERS_REPLY))
    return StateRecord(
        key=FlowKey(proto, src, sport, dst, dport, zone),
        nat_src=nat_src,
        nat_dst=nat_dst,
        tcp_state=tcp_state,
        timeout=u32(CTA_TIMEOUT),
        status=u32(CTA_STATUS),
        mark=u32(CTA_MARK),
        packets=(po, pr),
        bytes_=(bo, br),
    )


def _decode_stats_entries(payload: memoryview) -> int:
    top = _attrs(payload, _NFGEN.size, len(payload))
    span = top.get(CTA_STATS_GLOBAL_ENTRIES)
    if span is None:
        raise DecodeError("badstats", "no CTA_STATS_GLOBAL_ENTRIES")
    return int(_U32.unpack_from(payload, span[0])[0])
