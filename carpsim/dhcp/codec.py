"""BOOTP/DHCP message codec (RFC 951 header, RFC 2131 options area, RFC 3396 long options).

A message is the fixed 236-byte BOOTP header, the magic cookie and a TLV options area. On
decode, options spread over several instances of the same code (RFC 3396) are joined in the
order the RFC gives (options field, then ``file``, then ``sname`` when option 52 overloads
them), pad and end are dropped, and option 52 itself is consumed: a decoded message holds each
option once, as the bytes the client meant. On encode, values longer than 255 bytes are split
into consecutive instances, and when a ``max_size`` is given and the options do not fit, the
rest spills into ``file`` and ``sname`` with option 52, as RFC 2131 §4.1 allows.

Everything the server does not interpret (option 82 from a relay, vendor options) is kept as
bytes so it can be echoed verbatim.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from carpsim.dhcp import options as o
from carpsim.errors import DecodeError

BOOTREQUEST = 1
BOOTREPLY = 2
HEADER_LEN = 236
MAGIC = b"\x63\x82\x53\x63"
MIN_LEN = HEADER_LEN + len(MAGIC)
MAX_LEN = 8192
"""Longest message accepted: far above any DHCP packet on Ethernet; bounds what we parse."""
MIN_REPLY_LEN = 300
"""BOOTP's minimum message size: replies are padded to it as dhcpd does (some clients insist)."""
FLAG_BROADCAST = 0x8000
SNAME_LEN = 64
FILE_LEN = 128
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
ZERO = IPv4Address(0)


@dataclass(frozen=True)
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes
    """The first ``hlen`` bytes of the 16-byte field (the MAC for Ethernet)."""
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    """Without trailing NULs; empty when the field carried options."""
    file: bytes = b""
    options: tuple[tuple[int, bytes], ...] = field(default=())
    """(code, value) in first-seen order, each code once, pad/end/overload excluded."""

    def opt(self, code: int) -> bytes | None:
        for c, v in self.options:
            if c == code:
                return v
        return None

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    @property
    def message_type(self) -> o.MessageType | None:
        """Option 53, or None for plain BOOTP or a type this server has no rule for."""
        value = self.opt(o.MESSAGE_TYPE)
        if value is None or len(value) != 1:
            return None
        try:
            return o.MessageType(value[0])
        except ValueError:
            return None

    @property
    def requested_ip(self) -> IPv4Address | None:
        value = self.opt(o.REQUESTED_IP)
        return None if value is None else o.ip(value)

    @property
    def server_id(self) -> IPv4Address | None:
        value = self.opt(o.SERVER_ID)
        return None if value is None else o.ip(value)

    @property
    def client_id(self) -> bytes | None:
        value = self.opt(o.CLIENT_ID)
        return value or None

    @property
    def hostname(self) -> str | None:
        value = self.opt(o.HOSTNAME)
        return None if not value else o.text(value)

    @property
    def lease_time(self) -> int | None:
        value = self.opt(o.LEASE_TIME)
        return None if value is None else o.u32(value)

    @property
    def parameter_request_list(self) -> tuple[int, ...]:
        value = self.opt(o.PARAMETER_REQUEST_LIST)
        return tuple(value) if value else ()

    @property
    def relay_agent(self) -> bytes | None:
        return self.opt(o.RELAY_AGENT)

    @property
    def client_key(self) -> bytes:
        """What identifies the client: option 61 if present, else chaddr (ISC's choice)."""
        return self.client_id or self.chaddr


def _parse_area(data: bytes, where: str, into: dict[int, bytearray]) -> None:
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == o.PAD:
            i += 1
            continue
        if code == o.END:
            return
        if i + 1 >= n:
            raise DecodeError("badopt", f"option {code} without length in {where}")
        length = data[i + 1]
        end = i + 2 + length
        if end > n:
            raise DecodeError("badopt", f"option {code} runs past {where}")
        into.setdefault(code, bytearray()).extend(data[i + 2 : end])
        i = end
    # A missing end option is tolerated: several embedded clients omit it.


def decode(data: bytes) -> DhcpMessage:
    """Parse one BOOTP/DHCP message; anything malformed raises `DecodeError`."""
    if len(data) < MIN_LEN:
        raise DecodeError("short", f"{len(data)} bytes")
    if len(data) > MAX_LEN:
        raise DecodeError("long", f"{len(data)} bytes")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file) = (
        _HEADER.unpack_from(data)
    )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DecodeError("badop", f"op {op}")
    if hlen > 16:
        raise DecodeError("badhlen", f"hlen {hlen}")
    if data[HEADER_LEN:MIN_LEN] != MAGIC:
        raise DecodeError("badcookie", data[HEADER_LEN:MIN_LEN].hex())
    found: dict[int, bytearray] = {}
    _parse_area(data[MIN_LEN:], "options", found)
    overload = found.pop(o.OVERLOAD, None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DecodeError("badopt", "option overload value")
        # RFC 3396 §7: the concatenation order is options, file, sname.
        if overload[0] & o.OVERLOAD_FILE:
            _parse_area(file, "file", found)
            file = b""
        if overload[0] & o.OVERLOAD_SNAME:
            _parse_area(sname, "sname", found)
            sname = b""
        found.pop(o.OVERLOAD, None)
    mtype = found.get(o.MESSAGE_TYPE)
    if mtype is not None and len(mtype) != 1:
        raise DecodeError("badtype", f"option 53 of {len(mtype)} bytes")
    return DhcpMessage(
        op=op,
        htype=htype,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ci),
        yiaddr=IPv4Address(yi),
        siaddr=IPv4Address(si),
        giaddr=IPv4Address(gi),
        chaddr=chaddr[:hlen],
        sname=sname.rstrip(b"\0"),
        file=file.rstrip(b"\0"),
        options=tuple((code, bytes(value)) for code, value in found.items()),
    )


def _tlvs(code: int, value: bytes) -> list[bytes]:
    if not value:
        return [bytes((code, 0))]
    return [
        bytes((code, len(chunk))) + chunk
        for chunk in (value[i : i + 255] for i in range(0, len(value), 255))
    ]


def encode(msg: DhcpMessage, max_size: int | None = None, pad_to: int = 0) -> bytes:
    """Serialise `msg`; with `max_size` (the client's option 57) overload file/sname if needed."""
    if len(msg.chaddr) > 16:
        raise ValueError("chaddr longer than 16 bytes")
    if len(msg.sname) > SNAME_LEN or len(msg.file) > FILE_LEN:
        raise ValueError("sname/file too long")
    pieces = [t for code, value in msg.options for t in _tlvs(code, value)]
    sname, file = msg.sname, msg.file
    room = None if max_size is None else max_size - 28 - MIN_LEN - 1  # 28: IP + UDP headers
    main: list[bytes] = pieces
    if room is not None and sum(map(len, pieces)) > room and not sname and not file:
        main, rest = _split(pieces, room - 3)
        file_part, rest = _split(rest, FILE_LEN - 1)
        sname_part, rest = _split(rest, SNAME_LEN - 1)
        if rest:
            raise ValueError("options do not fit in max_size even with overload")
        flag = (o.OVERLOAD_FILE if file_part else 0) | (o.OVERLOAD_SNAME if sname_part else 0)
        if flag:
            main = [bytes((o.OVERLOAD, 1, flag)), *main]
            file = b"".join(file_part) + bytes((o.END,)) if file_part else b""
            sname = b"".join(sname_part) + bytes((o.END,)) if sname_part else b""
    header = _HEADER.pack(
        msg.op,
        msg.htype,
        len(msg.chaddr),
        msg.hops,
        msg.xid,
        msg.secs,
        msg.flags,
        msg.ciaddr.packed,
        msg.yiaddr.packed,
        msg.siaddr.packed,
        msg.giaddr.packed,
        msg.chaddr,
        sname,
        file,
    )
    out = header + MAGIC + b"".join(main) + bytes((o.END,))
    if len(out) < pad_to:
        out += bytes(pad_to - len(out))
    return out


def _split(pieces: list[bytes], room: int) -> tuple[list[bytes], list[bytes]]:
    used = 0
    for i, piece in enumerate(pieces):
        if used + len(piece) > room:
            return pieces[:i], pieces[i:]
        used += len(piece)
    return pieces, []
