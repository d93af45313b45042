"""Building OFFER/ACK/NAK messages and choosing where they go (RFC 2131 §4.1, §4.3)."""

from __future__ import annotations

from ipaddress import IPv4Address

from carpsim.dhcp import codec
from carpsim.dhcp import options as o
from carpsim.dhcp.actions import Transmit
from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.options import MessageType
from carpsim.dhcp.settings import DhcpServerSettings

BROADCAST_IP = IPv4Address("255.255.255.255")
BROADCAST_MAC = b"\xff" * 6
CLIENT_PORT = 68
SERVER_PORT = 67


def parameters(settings: DhcpServerSettings) -> list[tuple[int, bytes]]:
    """The configuration options every ACK and OFFER carries."""
    opts = [
        (o.SUBNET_MASK, settings.subnet.netmask.packed),
        (o.ROUTER, o.enc_ip(settings.router)),
        (o.DNS_SERVERS, o.enc_ips(settings.dns)),
    ]
    if settings.domain:
        opts.append((o.DOMAIN_NAME, o.enc_text(settings.domain)))
    return opts


def reply(
    request: DhcpMessage,
    mtype: MessageType,
    settings: DhcpServerSettings,
    *,
    yiaddr: IPv4Address = codec.ZERO,
    lease_secs: int | None = None,
    text: str = "",
) -> DhcpMessage:
    opts: list[tuple[int, bytes]] = [
        (o.MESSAGE_TYPE, bytes((mtype,))),
        (o.SERVER_ID, o.enc_ip(settings.interface_address)),
    ]
    if lease_secs is not None:
        opts += [
            (o.LEASE_TIME, o.enc_u32(lease_secs)),
            (o.RENEWAL_TIME, o.enc_u32(lease_secs // 2)),
            (o.REBINDING_TIME, o.enc_u32(lease_secs * 7 // 8)),
        ]
    if mtype is MessageType.NAK:
        if text:
            opts.append((o.MESSAGE, o.enc_text(text)))
    else:
        opts += parameters(settings)
    agent = request.relay_agent
    if agent is not None:
        # RFC 3046 §2.2: echoed unchanged, and last.
        opts.append((o.RELAY_AGENT, agent))
    nak = mtype is MessageType.NAK
    flags = request.flags
    if nak and request.giaddr != codec.ZERO:
        flags |= codec.FLAG_BROADCAST  # RFC 2131 §4.3.2: the relay must broadcast a NAK
    keep_ciaddr = mtype is MessageType.ACK and not nak
    return DhcpMessage(
        op=codec.BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        flags=flags,
        ciaddr=request.ciaddr if keep_ciaddr else codec.ZERO,
        yiaddr=yiaddr,
        giaddr=request.giaddr,
        options=tuple(opts),
    )


def transmit(request: DhcpMessage, message: DhcpMessage) -> Transmit:
    """RFC 2131 §4.1: relay, then ciaddr, then broadcast flag, else unicast to chaddr."""
    max_size: int | None = None
    raw = request.opt(o.MAX_MESSAGE_SIZE)
    if raw is not None and len(raw) == 2:
        max_size = max(576, o.u16(raw))
    nak = message.message_type is MessageType.NAK
    if request.giaddr != codec.ZERO:
        return Transmit(message, request.giaddr, SERVER_PORT, max_size=max_size)
    if nak:
        return Transmit(message, BROADCAST_IP, CLIENT_PORT, BROADCAST_MAC, True, max_size)
    if request.ciaddr != codec.ZERO:
        return Transmit(message, request.ciaddr, CLIENT_PORT, max_size=max_size)
    ethernet = request.htype == 1 and len(request.chaddr) == 6
    if request.broadcast or not ethernet or message.yiaddr == codec.ZERO:
        return Transmit(message, BROADCAST_IP, CLIENT_PORT, BROADCAST_MAC, True, max_size)
    return Transmit(message, message.yiaddr, CLIENT_PORT, request.chaddr, False, max_size)
