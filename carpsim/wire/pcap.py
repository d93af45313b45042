"""A small reader for pcap and pcapng captures, enough for `carpsim decode`.

It parses bytes only (the caller reads the file), supports both byte orders, microsecond and
nanosecond pcap, pcapng with several interfaces, and unwraps Ethernet (with 802.1Q tags),
Linux cooked v1/v2 and raw-IP link types down to the network-layer packet. Malformed files
raise `PcapError`, a `DecodeError` (reason ``badpcap``), so the CLI prints one line.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from carpsim.errors import DecodeError

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_DLT_RAW_ALIASES = (12, 14)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
_VLAN_TAGS = (0x8100, 0x88A8)

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 1
_PCAPNG_EPB = 6
_PCAPNG_SPB = 3
_PCAPNG_BYTE_ORDER = 0x1A2B3C4D


class PcapError(DecodeError):
    """The file is not a capture this reader understands."""

    def __init__(self, detail: str) -> None:
        super().__init__("badpcap", detail)

    def __str__(self) -> str:
        # The CLI prints this line as is; the reason is for counters, not for people.
        return self.detail


@dataclass(frozen=True)
class Frame:
    time: float
    linktype: int
    data: bytes


def read_frames(blob: bytes) -> Iterator[Frame]:
    """Yield every captured frame of a pcap or pcapng file's contents."""
    if len(blob) >= 4 and blob[:4] in _PCAP_MAGICS:
        reader = _read_pcap(blob)
    elif len(blob) >= 12 and int.from_bytes(blob[:4], "little") == _PCAPNG_SHB:
        reader = _read_pcapng(blob)
    else:
        raise PcapError("not a pcap or pcapng file (unknown magic number)")
    try:
        yield from reader
    except (struct.error, IndexError) as exc:
        # A block shorter than its own fixed fields: one error type for every malformed file.
        raise PcapError(f"malformed capture ({exc})") from exc


def _read_pcap(blob: bytes) -> Iterator[Frame]:
    endian, units = _PCAP_MAGICS[blob[:4]]
    if len(blob) < 24:
        raise PcapError("truncated pcap global header")
    linktype = struct.unpack_from(endian + "I", blob, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    pos = 24
    while pos + record.size <= len(blob):
        sec, frac, incl, _orig = record.unpack_from(blob, pos)
        pos += record.size
        if pos + incl > len(blob):
            raise PcapError(f"truncated pcap record at offset {pos - record.size}")
        yield Frame(sec + frac / units, linktype, blob[pos : pos + incl])
        pos += incl


def _read_pcapng(blob: bytes) -> Iterator[Frame]:
    endian = "<"
    interfaces: list[tuple[int, int]] = []
    pos = 0
    while pos + 12 <= len(blob):
        # The SHB type is a byte palindrome, so it is recognisable before the byte order is known.
        btype = struct.unpack_from(endian + "I", blob, pos)[0]
        if btype == _PCAPNG_SHB:
            magic = blob[pos + 8 : pos + 12]
            endian = "<" if int.from_bytes(magic, "little") == _PCAPNG_BYTE_ORDER else ">"
            interfaces = []  # each section numbers its interfaces afresh
        blen = struct.unpack_from(endian + "I", blob, pos + 4)[0]
        if blen < 12 or blen % 4 or pos + blen > len(blob):
            raise PcapError(f"bad pcapng block length {blen} at offset {pos}")
        body = blob[pos + 8 : pos + blen - 4]
        if btype == _PCAPNG_IDB:
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _ts_units(body, endian)))
        elif btype == _PCAPNG_EPB:
            iface, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(endian + "IIIII", body, 0)
            if iface >= len(interfaces):
                raise PcapError(f"packet refers to undeclared interface {iface}")
            lt, units = interfaces[iface]
            ticks = (ts_hi << 32) | ts_lo
            # Split whole seconds off first so the float matches a pcap's sec + usec/1e6.
            yield Frame(ticks // units + (ticks % units) / units, lt, body[20 : 20 + caplen])
        elif btype == _PCAPNG_SPB and interfaces:
            yield Frame(0.0, interfaces[0][0], body[4:])
        pos += blen


def _ts_units(idb_body: bytes, endian: str) -> int:
    """Timestamp ticks per second from the if_tsresol option (default microseconds)."""
    pos = 8
    while pos + 4 <= len(idb_body):
        code, length = struct.unpack_from(endian + "HH", idb_body, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            res = idb_body[pos + 4]
            return int(2 ** (res & 0x7F) if res & 0x80 else 10**res)
        pos += 4 + ((length + 3) & ~3)
    return 1_000_000


def network_payload(frame: Frame) -> tuple[int, bytes] | None:
    """(ethertype, L3 bytes) of a frame, or None for link types we do not unwrap."""
    data, lt = frame.data, frame.linktype
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        etype, pos = int.from_bytes(data[12:14], "big"), 14
        while etype in _VLAN_TAGS and len(data) >= pos + 4:
            etype, pos = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        return etype, data[pos:]
    if lt == LINKTYPE_LINUX_SLL:
        return (int.from_bytes(data[14:16], "big"), data[16:]) if len(data) >= 16 else None
    if lt == LINKTYPE_LINUX_SLL2:
        return (int.from_bytes(data[0:2], "big"), data[20:]) if len(data) >= 20 else None
    if lt in (LINKTYPE_RAW, LINKTYPE_IPV4, *_DLT_RAW_ALIASES):
        if data and data[0] >> 4 == 4:
            return ETHERTYPE_IPV4, data
        return None
    return None


def gratuitous_arp_ip(arp: bytes) -> str | None:
    """Sender IP of an Ethernet/IPv4 ARP packet whose sender IP equals its target IP."""
    if len(arp) < 28 or arp[0:4] != b"\x00\x01\x08\x00" or arp[4:6] != b"\x06\x04":
        return None
    sender, target = arp[14:18], arp[24:28]
    if sender != target or sender == b"\x00\x00\x00\x00":
        return None
    return ".".join(str(b) for b in sender)
