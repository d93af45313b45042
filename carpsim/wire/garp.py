"""Ethernet framing for CARP adverts and gratuitous ARP (PURE byte builders; the sender is in net/).

A new MASTER announces each IPv4 VIP with an ARP *request* whose sender and target IP are the
VIP and whose sender MAC is the virtual MAC (OpenBSD `carp_master_down` in ip_carp.c), sent
to broadcast. Switches learn the virtual MAC on the new master's port from the Ethernet source,
and hosts that already hold an ARP entry for the VIP keep it unchanged (same MAC).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from carpsim.errors import DecodeError

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ARP_REQUEST = 1


def mac_bytes(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` -> 6 bytes; anything else raises `DecodeError` (a ValueError)."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 and _is_hex(p) for p in parts):
        raise DecodeError("badmac", f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def multicast_mac(group: IPv4Address) -> bytes:
    """01:00:5e + the low 23 bits of the IPv4 group (RFC 1112 §6.4)."""
    low = int(group) & 0x7FFFFF
    return b"\x01\x00\x5e" + low.to_bytes(3, "big")


def ethernet_frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def garp_frame(mac: bytes, vip: IPv4Address) -> bytes:
    """An ARP request announcing `vip` at `mac`, broadcast (sender IP = target IP = VIP)."""
    ip = vip.packed
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARP_REQUEST) + mac + ip + b"\x00" * 6 + ip
    return ethernet_frame(BROADCAST, mac, ETH_P_ARP, arp)
