"""A streaming reader for pcap and pcapng captures, enough for `carpsim decode`.

It reads from bytes or from a binary stream (the caller opens the file), one record at a time:
memory stays bounded by the largest record it accepts (`MAX_RECORD` captured bytes,
`MAX_BLOCK` for a pcapng block it parses), whatever the file's size. Blocks it does not
interpret are skipped in chunks without being held. Both byte orders, microsecond and
nanosecond pcap, and pcapng with several sections and interfaces are supported; Ethernet (with
802.1Q tags), Linux cooked v1/v2 and raw-IP link types are unwrapped down to the network-layer
packet. Every malformed file (bad magic, truncated or garbage records, lengths that contradict
themselves or exceed the caps) raises `PcapError`, a `DecodeError` (reason ``badpcap``), so the
CLI prints one line.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

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

MAX_RECORD = 262_144
"""Most captured bytes one packet may carry: tcpdump's largest snap length."""
MAX_BLOCK = MAX_RECORD + 64 * 1024
"""Largest pcapng block this reader parses (an EPB at `MAX_RECORD` plus room for options)."""
_SKIP_CHUNK = 64 * 1024

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
_PARSED_BLOCKS = (_PCAPNG_SHB, _PCAPNG_IDB, _PCAPNG_EPB, _PCAPNG_SPB)


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


class _Stream:
    """Exact-length reads with the file offset kept for error messages."""

    def __init__(self, source: BinaryIO) -> None:
        self._src = source
        self.pos = 0

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end of the file."""
        parts: list[bytes] = []
        left = n
        while left:
            try:
                chunk = self._src.read(left)
            except OSError as exc:
                raise PcapError(f"read error at offset {self.pos}: {exc.strerror or exc}") from exc
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def exact(self, n: int, what: str) -> bytes:
        start = self.pos
        data = self.read(n)
        if len(data) != n:
            raise PcapError(f"truncated {what} at offset {start} ({len(data)} of {n} bytes)")
        return data

    def skip(self, n: int, what: str) -> None:
        start = self.pos
        left = n
        while left:
            got = len(self.read(min(left, _SKIP_CHUNK)))
            if not got:
                raise PcapError(f"truncated {what} at offset {start} ({n - left} of {n} bytes)")
            left -= got


def read_frames(source: bytes | bytearray | memoryview | BinaryIO) -> Iterator[Frame]:
    """Yield every captured frame of a pcap or pcapng file, reading it record by record."""
    stream = _Stream(
        io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else source
    )
    head = stream.read(4)
    if head in _PCAP_MAGICS:
        reader = _read_pcap(stream, head)
    elif len(head) == 4 and int.from_bytes(head, "little") == _PCAPNG_SHB:
        reader = _read_pcapng(stream, head)
    else:
        raise PcapError("not a pcap or pcapng file (unknown magic number)")
    try:
        yield from reader
    except (struct.error, IndexError) as exc:
        # A block shorter than its own fixed fields: one error type for every malformed file.
        raise PcapError(f"malformed capture ({exc})") from exc


def _read_pcap(stream: _Stream, magic: bytes) -> Iterator[Frame]:
    endian, units = _PCAP_MAGICS[magic]
    header = stream.read(20)
    if len(header) < 20:
        raise PcapError("truncated pcap global header")
    linktype = struct.unpack_from(endian + "I", header, 16)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    while True:
        start = stream.pos
        rec = stream.read(record.size)
        if not rec:
            return
        if len(rec) < record.size:
            raise PcapError(f"truncated pcap record header at offset {start}")
        sec, frac, incl, _orig = record.unpack(rec)
        if incl > MAX_RECORD:
            raise PcapError(
                f"pcap record at offset {start} claims {incl} bytes (more than {MAX_RECORD})"
            )
        data = stream.exact(incl, "pcap record")
        yield Frame(sec + frac / units, linktype, data)


@dataclass(frozen=True)
class _Block:
    btype: int
    start: int
    endian: str
    body: bytes | None
    """None for a block type this reader skips."""


def _next_block(stream: _Stream, endian: str, pending: bytes) -> _Block | None:
    """Read one block (header, body, trailer), or None at a clean end of file."""
    start = stream.pos - len(pending)
    head = pending + stream.read(8 - len(pending))
    if not head:
        return None
    if len(head) < 8:
        raise PcapError(f"truncated pcapng block header at offset {start}")
    # The SHB type is a byte palindrome, so it is recognisable before the byte order is known.
    btype = struct.unpack_from(endian + "I", head, 0)[0]
    prefix = b""
    if btype == _PCAPNG_SHB:
        prefix = stream.exact(4, "pcapng section header")
        if int.from_bytes(prefix, "little") == _PCAPNG_BYTE_ORDER:
            endian = "<"
        elif int.from_bytes(prefix, "big") == _PCAPNG_BYTE_ORDER:
            endian = ">"
        else:
            raise PcapError(f"bad pcapng byte-order magic {prefix.hex()} at offset {start}")
    blen = struct.unpack_from(endian + "I", head, 4)[0]
    if blen < 12 + len(prefix) or blen % 4:
        raise PcapError(f"bad pcapng block length {blen} at offset {start}")
    rest = blen - 12 - len(prefix)
    body: bytes | None = None
    if btype in _PARSED_BLOCKS:
        if blen > MAX_BLOCK:
            raise PcapError(
                f"pcapng block at offset {start} claims {blen} bytes (more than {MAX_BLOCK})"
            )
        body = prefix + stream.exact(rest, "pcapng block")
    else:
        stream.skip(rest, "pcapng block")
    _check_trailer(stream, endian, blen, start)
    return _Block(btype, start, endian, body)


def _read_pcapng(stream: _Stream, first: bytes) -> Iterator[Frame]:
    interfaces: list[tuple[int, int]] = []
    block = _next_block(stream, "<", first)
    while block is not None:
        endian, body = block.endian, block.body
        if block.btype == _PCAPNG_SHB:
            interfaces = []  # each section numbers its interfaces afresh
        elif block.btype == _PCAPNG_IDB and body is not None:
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _ts_units(body, endian)))
        elif block.btype == _PCAPNG_EPB and body is not None:
            yield _epb_frame(body, endian, interfaces, block.start)
        elif block.btype == _PCAPNG_SPB and body is not None and interfaces:
            yield Frame(0.0, interfaces[0][0], body[4:])
        block = _next_block(stream, endian, b"")


def _epb_frame(body: bytes, endian: str, interfaces: list[tuple[int, int]], start: int) -> Frame:
    iface, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(endian + "IIIII", body, 0)
    if iface >= len(interfaces):
        raise PcapError(f"packet refers to undeclared interface {iface}")
    if caplen > len(body) - 20:
        raise PcapError(f"packet at offset {start} overruns its block ({caplen} bytes)")
    lt, units = interfaces[iface]
    ticks = (ts_hi << 32) | ts_lo
    # Split whole seconds off first so the float matches a pcap's sec + usec/1e6.
    return Frame(ticks // units + (ticks % units) / units, lt, body[20 : 20 + caplen])


def _check_trailer(stream: _Stream, endian: str, blen: int, start: int) -> None:
    """A block repeats its length at the end: a mismatch means the framing is lost."""
    trailer = struct.unpack(endian + "I", stream.exact(4, "pcapng block"))[0]
    if trailer != blen:
        raise PcapError(
            f"pcapng block at offset {start}: trailing length {trailer} != leading {blen}"
        )


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
