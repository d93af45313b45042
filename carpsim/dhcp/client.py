"""Client-side message builders: what a DHCP client sends, as typed messages.

Used by the tests, by scripted probes (a lab client asking for a lease) and anywhere a
well-formed DISCOVER/REQUEST/DECLINE/RELEASE/INFORM is needed without a real dhclient.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from carpsim.dhcp import codec
from carpsim.dhcp import options as o
from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.options import MessageType


def mac(n: int) -> bytes:
    """A locally administered MAC numbered `n` (02:00:00:00:hi:lo)."""
    return bytes((2, 0, 0, 0, n >> 8, n & 0xFF))


def client_msg(
    mtype: MessageType,
    chaddr: bytes,
    *,
    xid: int = 1,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    ciaddr: IPv4Address = codec.ZERO,
    giaddr: IPv4Address = codec.ZERO,
    flags: int = 0,
    client_id: bytes | None = None,
    hostname: str | None = None,
    lease_time: int | None = None,
    extra: tuple[tuple[int, bytes], ...] = (),
) -> DhcpMessage:
    """A client message of type `mtype` with the usual parameter request list."""
    opts: list[tuple[int, bytes]] = [(o.MESSAGE_TYPE, bytes((mtype,)))]
    if requested is not None:
        opts.append((o.REQUESTED_IP, requested.packed))
    if server_id is not None:
        opts.append((o.SERVER_ID, server_id.packed))
    if client_id is not None:
        opts.append((o.CLIENT_ID, client_id))
    if hostname is not None:
        opts.append((o.HOSTNAME, o.enc_text(hostname)))
    if lease_time is not None:
        opts.append((o.LEASE_TIME, o.enc_u32(lease_time)))
    opts.append((o.PARAMETER_REQUEST_LIST, bytes((1, 3, 6, 15))))
    opts.extend(extra)
    return DhcpMessage(
        op=codec.BOOTREQUEST,
        xid=xid,
        chaddr=chaddr,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        options=tuple(opts),
    )
