"""A decoded DHCP message as one JSON-friendly dict, for `carpsim decode` lines.

Keys: ``kind`` = ``"dhcp"``, ``type`` (DISCOVER ... INFORM, or BOOTREQUEST/BOOTREPLY for
plain BOOTP), ``xid`` (int), ``chaddr`` (aa:bb:..), ``ciaddr``/``yiaddr``/``giaddr``,
``broadcast`` (the flag), and when present ``server_id``, ``requested``, ``router`` and
``dns`` (lists), ``lease_time``, ``hostname``, ``relay_agent`` (hex).
"""

from __future__ import annotations

from typing import Any

from carpsim.dhcp import codec
from carpsim.dhcp import options as o
from carpsim.dhcp.codec import DhcpMessage
from carpsim.errors import DecodeError


def describe(msg: DhcpMessage) -> dict[str, Any]:
    mtype = msg.message_type
    out: dict[str, Any] = {
        "kind": "dhcp",
        "type": mtype.name
        if mtype is not None
        else ("BOOTREQUEST" if msg.op == codec.BOOTREQUEST else "BOOTREPLY"),
        "xid": msg.xid,
        "chaddr": ":".join(f"{b:02x}" for b in msg.chaddr),
        "ciaddr": str(msg.ciaddr),
        "yiaddr": str(msg.yiaddr),
        "giaddr": str(msg.giaddr),
        "broadcast": msg.broadcast,
    }
    # A malformed option value is reported by name, the rest of the message still shows.
    fields: list[tuple[str, Any]] = [
        ("server_id", lambda: msg.server_id),
        ("requested", lambda: msg.requested_ip),
        ("router", lambda: _ips(msg.opt(o.ROUTER))),
        ("dns", lambda: _ips(msg.opt(o.DNS_SERVERS))),
        ("lease_time", lambda: msg.lease_time),
        ("hostname", lambda: msg.hostname),
    ]
    for key, get in fields:
        try:
            value = get()
        except DecodeError:
            out.setdefault("malformed", []).append(key)
            continue
        if value is None:
            continue
        out[key] = (
            [str(a) for a in value]
            if isinstance(value, tuple)
            else (str(value) if key in ("server_id", "requested") else value)
        )
    if msg.relay_agent is not None:
        out["relay_agent"] = msg.relay_agent.hex()
    return out


def _ips(value: bytes | None) -> tuple[Any, ...] | None:
    return None if value is None else o.ips(value)
