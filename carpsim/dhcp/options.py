"""DHCP option codes and the value encodings the server uses (RFC 2132, 3046, 3396).

Options travel as raw bytes in `carpsim.dhcp.codec.DhcpMessage`; these helpers turn the few
the server reads or writes into Python values and back. A helper given a value of the wrong
shape raises `DecodeError` with reason ``badopt``, so a client's odd option is a counted drop.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from ipaddress import IPv4Address

from carpsim.errors import DecodeError

PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOSTNAME = 12
DOMAIN_NAME = 15
BROADCAST_ADDRESS = 28
REQUESTED_IP = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_REQUEST_LIST = 55
MESSAGE = 56
MAX_MESSAGE_SIZE = 57
RENEWAL_TIME = 58
REBINDING_TIME = 59
VENDOR_CLASS = 60
CLIENT_ID = 61
RELAY_AGENT = 82
END = 255

OVERLOAD_FILE = 1
OVERLOAD_SNAME = 2
OVERLOAD_BOTH = 3


class MessageType(enum.IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


def ip(value: bytes) -> IPv4Address:
    if len(value) != 4:
        raise DecodeError("badopt", f"address option of {len(value)} bytes")
    return IPv4Address(value)


def ips(value: bytes) -> tuple[IPv4Address, ...]:
    if not value or len(value) % 4:
        raise DecodeError("badopt", f"address list of {len(value)} bytes")
    return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4))


def u32(value: bytes) -> int:
    if len(value) != 4:
        raise DecodeError("badopt", f"u32 option of {len(value)} bytes")
    return int.from_bytes(value, "big")


def u16(value: bytes) -> int:
    if len(value) != 2:
        raise DecodeError("badopt", f"u16 option of {len(value)} bytes")
    return int.from_bytes(value, "big")


def text(value: bytes) -> str:
    # Hostnames arrive NUL-padded from some clients; they are shown, never trusted.
    return value.rstrip(b"\0").decode("utf-8", errors="replace")


def enc_ip(address: IPv4Address) -> bytes:
    return address.packed


def enc_ips(addresses: Iterable[IPv4Address]) -> bytes:
    return b"".join(a.packed for a in addresses)


def enc_u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def enc_text(value: str) -> bytes:
    return value.encode("utf-8")
