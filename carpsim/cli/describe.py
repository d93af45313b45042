"""Presentation: JSON-able summaries of captured sync frames and VRRP packets for `carpsim decode`.

The codecs own the byte rules; this module only turns their decoded values into display dicts.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

from carpsim.errors import DecodeError
from carpsim.protocol.codec import VRRP_V3, looks_like_vrrp, split_ipv4
from carpsim.protocol.constants import IPPROTO_CARP
from carpsim.statesync.codec import (
    BulkStatus,
    Clear,
    CompressedUpdate,
    Item,
    NackRange,
    SeqHeader,
    StateRef,
    decode_frame,
)
from carpsim.statesync.constants import IPPROTO_PFSYNC, PFSYNC_VERSION, Act
from carpsim.statesync.record import StateRecord


def describe_vrrp(data: bytes) -> dict[str, Any] | None:
    """If `data` (an IPv4 packet) is VRRPv2/v3 rather than CARP, summarise it; else None."""
    try:
        fields, payload = split_ipv4(data)
    except DecodeError:
        return None
    if fields[6] != IPPROTO_CARP or not looks_like_vrrp(payload) or len(payload) < 8:
        return None
    version = payload[0] >> 4
    count = payload[3]
    addrs = [
        str(IPv4Address(payload[8 + 4 * i : 12 + 4 * i]))
        for i in range(count)
        if len(payload) >= 12 + 4 * i
    ]
    info: dict[str, Any] = {
        "type": "vrrp",
        "version": version,
        "vrid": payload[1],
        "priority": payload[2],
        "addresses": addrs,
        "src": str(IPv4Address(fields[8])),
        "dst": str(IPv4Address(fields[9])),
        "ttl": fields[5],
    }
    if version == VRRP_V3:
        info["interval_s"] = (int.from_bytes(payload[4:6], "big") & 0x0FFF) / 100
    else:
        info["interval_s"] = float(payload[5])
    return info


def _addr(raw: bytes) -> str:
    return str(ip_address(raw))


def _item_summary(item: Item) -> dict[str, object]:
    if isinstance(item, StateRecord):
        k = item.key
        out: dict[str, object] = {
            "id": f"{item.id:016x}",
            "creatorid": f"{item.creatorid:08x}",
            "proto": k.proto,
            "src": f"{_addr(k.src)}:{k.sport}",
            "dst": f"{_addr(k.dst)}:{k.dport}",
            "tcp_state": item.tcp_state.name,
            "expire": item.timeout,
        }
        if item.nat_src:
            out["nat_src"] = f"{_addr(item.nat_src[0])}:{item.nat_src[1]}"
        if item.nat_dst:
            out["nat_dst"] = f"{_addr(item.nat_dst[0])}:{item.nat_dst[1]}"
        return out
    if isinstance(item, CompressedUpdate):
        return {
            "id": f"{item.id:016x}",
            "creatorid": f"{item.creatorid:08x}",
            "tcp_state": item.tcp_state.name,
            "expire": item.timeout,
        }
    if isinstance(item, StateRef):
        return {"id": f"{item.id:016x}", "creatorid": f"{item.creatorid:08x}"}
    if isinstance(item, Clear):
        return {"creatorid": f"{item.creatorid:08x}", "ifname": item.ifname}
    if isinstance(item, BulkStatus):
        return {"creatorid": f"{item.creatorid:08x}", "endtime": item.endtime,
                "status": item.status.name}  # fmt: skip
    if isinstance(item, SeqHeader):
        return {
            "epoch": f"{item.epoch:08x}",
            "seq": item.seq,
            "oldest": item.oldest,
            "ack_epoch": f"{item.ack_epoch:08x}",
            "ack": item.ack,
            "flags": item.flags,
        }
    if isinstance(item, NackRange):
        return {"first": item.first, "last": item.last}
    return {"bytes": len(item.data)}


def _action_name(action: int) -> str:
    try:
        return Act(action).name
    except ValueError:
        return str(action)


def describe_frame(data: bytes) -> dict[str, object]:
    """JSON-able summary for `carpsim decode`; accepts an IPv4 packet or a bare pfsync payload."""
    payload = data
    if len(data) >= 20 and data[0] >> 4 == 4 and data[9] == IPPROTO_PFSYNC:
        payload = data[(data[0] & 0x0F) * 4 :]
    try:
        frame = decode_frame(payload)
    except DecodeError as exc:
        return {"protocol": "pfsync", "error": exc.reason, "detail": exc.detail}
    return {
        "protocol": "pfsync",
        "version": PFSYNC_VERSION,
        "length": len(payload),
        "sections": [
            {
                "action": _action_name(s.action),
                "count": len(s.items),
                "items": [_item_summary(i) for i in s.items],
            }
            for s in frame.sections
        ],
    }
