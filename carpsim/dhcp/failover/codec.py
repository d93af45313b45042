"""Failover messages: the 12-byte header, option TLVs, typed messages, and a TCP stream framer.

Header (big-endian): length including itself, type, payload offset (ISC sends 12 and skips
anything between 12 and the offset), sender's Unix time, xid. Options are (code, length,
data). Receive rules are ISC's: a length outside 12..2048, a type outside 1..12, the same
option twice, or a fixed-size option of the wrong length is a protocol error (`DecodeError`,
and the machine drops the link); an unknown option, or one this type does not use, is skipped.

Each message type is a frozen dataclass whose optional fields are its options; `encode` writes
them in the order dhcpd 4.4 does, so a decoded dhcpd message re-encodes to the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from typing import ClassVar

from carpsim.dhcp.failover.constants import (
    FIXED_SIZE,
    HEADER_SIZE,
    MAX_MESSAGE,
    MIN_MESSAGE,
    MessageType,
    Opt,
)
from carpsim.errors import DecodeError

_HEADER = struct.Struct(">HBBII")
_TLV = struct.Struct(">HH")

# How a field's option data is read and written.
U8, U16, U32, IP, RAW, TEXT = "u8", "u16", "u32", "ip", "raw", "text"


@dataclass(frozen=True)
class Message:
    """Common header fields; subclasses add their options as optional fields."""

    time: int = 0
    xid: int = 0

    TYPE: ClassVar[MessageType]
    OPTIONS: ClassVar[tuple[tuple[str, Opt, str], ...]] = ()
    """(field, option, kind) in dhcpd's send order."""

    @property
    def name(self) -> str:
        return self.TYPE.name


@dataclass(frozen=True)
class PoolReq(Message):
    TYPE = MessageType.POOLREQ


@dataclass(frozen=True)
class PoolResp(Message):
    addresses_transferred: int | None = None
    TYPE = MessageType.POOLRESP
    OPTIONS = (("addresses_transferred", Opt.ADDRESSES_TRANSFERRED, U32),)


@dataclass(frozen=True)
class BndUpd(Message):
    assigned_ip: IPv4Address | None = None
    binding_status: int | None = None
    client_id: bytes | None = None
    chaddr: bytes | None = None
    """ARP hardware type byte followed by the address (7 bytes for Ethernet)."""
    lease_expiration: int | None = None
    potential_expiration: int | None = None
    stos: int | None = None
    cltt: int | None = None
    ip_flags: int | None = None
    TYPE = MessageType.BNDUPD
    OPTIONS = (
        ("assigned_ip", Opt.ASSIGNED_IP, IP),
        ("binding_status", Opt.BINDING_STATUS, U8),
        ("client_id", Opt.CLIENT_ID, RAW),
        ("chaddr", Opt.CHADDR, RAW),
        ("lease_expiration", Opt.LEASE_EXPIRATION, U32),
        ("potential_expiration", Opt.POTENTIAL_EXPIRATION, U32),
        ("stos", Opt.STOS, U32),
        ("cltt", Opt.CLTT, U32),
        ("ip_flags", Opt.IP_FLAGS, U16),
    )


@dataclass(frozen=True)
class BndAck(Message):
    assigned_ip: IPv4Address | None = None
    reject_reason: int | None = None
    message: str | None = None
    TYPE = MessageType.BNDACK
    OPTIONS = (
        ("assigned_ip", Opt.ASSIGNED_IP, IP),
        ("reject_reason", Opt.REJECT_REASON, U8),
        ("message", Opt.MESSAGE, TEXT),
    )


@dataclass(frozen=True)
class Connect(Message):
    relationship_name: str | None = None
    max_unacked: int | None = None
    receive_timer: int | None = None
    vendor_class: str | None = None
    protocol_version: int | None = None
    tls_request: int | None = None
    mclt: int | None = None
    hba: bytes | None = None
    TYPE = MessageType.CONNECT
    OPTIONS = (
        ("relationship_name", Opt.RELATIONSHIP_NAME, TEXT),
        ("max_unacked", Opt.MAX_UNACKED, U32),
        ("receive_timer", Opt.RECEIVE_TIMER, U32),
        ("vendor_class", Opt.VENDOR_CLASS, TEXT),
        ("protocol_version", Opt.PROTOCOL_VERSION, U8),
        ("tls_request", Opt.TLS_REQUEST, U8),
        ("mclt", Opt.MCLT, U32),
        ("hba", Opt.HBA, RAW),
    )


@dataclass(frozen=True)
class ConnectAck(Message):
    relationship_name: str | None = None
    max_unacked: int | None = None
    receive_timer: int | None = None
    vendor_class: str | None = None
    protocol_version: int | None = None
    tls_reply: int | None = None
    reject_reason: int | None = None
    message: str | None = None
    TYPE = MessageType.CONNECTACK
    OPTIONS = (
        ("relationship_name", Opt.RELATIONSHIP_NAME, TEXT),
        ("max_unacked", Opt.MAX_UNACKED, U32),
        ("receive_timer", Opt.RECEIVE_TIMER, U32),
        ("vendor_class", Opt.VENDOR_CLASS, TEXT),
        ("protocol_version", Opt.PROTOCOL_VERSION, U8),
        ("tls_reply", Opt.TLS_REPLY, U8),
        ("reject_reason", Opt.REJECT_REASON, U8),
        ("message", Opt.MESSAGE, TEXT),
    )


@dataclass(frozen=True)
class UpdReqAll(Message):
    TYPE = MessageType.UPDREQALL


@dataclass(frozen=True)
class UpdDone(Message):
    TYPE = MessageType.UPDDONE


@dataclass(frozen=True)
class UpdReq(Message):
    TYPE = MessageType.UPDREQ


@dataclass(frozen=True)
class State(Message):
    server_state: int | None = None
    server_flags: int | None = None
    stos: int | None = None
    TYPE = MessageType.STATE
    OPTIONS = (
        ("server_state", Opt.SERVER_STATE, U8),
        ("server_flags", Opt.SERVER_FLAGS, U8),
        ("stos", Opt.STOS, U32),
    )


@dataclass(frozen=True)
class Contact(Message):
    TYPE = MessageType.CONTACT


@dataclass(frozen=True)
class Disconnect(Message):
    reject_reason: int | None = None
    message: str | None = None
    TYPE = MessageType.DISCONNECT
    OPTIONS = (
        ("reject_reason", Opt.REJECT_REASON, U8),
        ("message", Opt.MESSAGE, TEXT),
    )


MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        PoolReq, PoolResp, BndUpd, BndAck, Connect, ConnectAck,
        UpdReqAll, UpdDone, UpdReq, State, Contact, Disconnect,
    )
}  # fmt: skip

_MAX_INT = {U8: 0xFF, U16: 0xFFFF, U32: 0xFFFFFFFF}


def _put(kind: str, value: object) -> bytes:
    if kind in _MAX_INT:
        assert isinstance(value, int)
        return value.to_bytes({U8: 1, U16: 2, U32: 4}[kind], "big")
    if kind == IP:
        assert isinstance(value, IPv4Address)
        return value.packed
    if kind == TEXT:
        assert isinstance(value, str)
        return value.encode("utf-8", "surrogateescape")
    assert isinstance(value, bytes)
    return value


def _get(kind: str, data: bytes) -> object:
    if kind in _MAX_INT:
        return int.from_bytes(data, "big")
    if kind == IP:
        return IPv4Address(data)
    if kind == TEXT:
        # surrogateescape keeps any byte string, so a decoded name re-encodes unchanged.
        return data.decode("utf-8", "surrogateescape")
    return bytes(data)


def encode(msg: Message) -> bytes:
    """The message's wire bytes (payload offset 12, as ISC sends)."""
    body = bytearray()
    for name, opt, kind in msg.OPTIONS:
        value = getattr(msg, name)
        if value is None:
            continue
        data = _put(kind, value)
        body += _TLV.pack(opt, len(data)) + data
    length = HEADER_SIZE + len(body)
    if length > MAX_MESSAGE:
        raise ValueError(f"{msg.name} would be {length} bytes, over {MAX_MESSAGE}")
    return _HEADER.pack(length, msg.TYPE, HEADER_SIZE, msg.time, msg.xid) + bytes(body)


def message_length(prefix: bytes) -> int:
    """The length field of a message starting at `prefix` (>= 2 bytes), range-checked."""
    length = int.from_bytes(prefix[:2], "big")
    if length < MIN_MESSAGE:
        raise DecodeError("short_length", f"length {length} < {MIN_MESSAGE}")
    if length > MAX_MESSAGE:
        raise DecodeError("long_length", f"length {length} > {MAX_MESSAGE}")
    return length


def decode(data: bytes) -> Message:
    """Parse exactly one message; anything malformed raises `DecodeError(reason)`."""
    if len(data) < HEADER_SIZE:
        raise DecodeError("truncated", f"{len(data)} bytes, header needs {HEADER_SIZE}")
    length = message_length(data)
    if length != len(data):
        raise DecodeError("bad_length", f"length field {length}, message {len(data)} bytes")
    _length, mtype, offset, time, xid = _HEADER.unpack_from(data)
    if not 1 <= mtype <= len(MessageType):
        raise DecodeError("bad_type", f"message type {mtype}")
    if offset < HEADER_SIZE or offset > length:
        raise DecodeError("bad_offset", f"payload offset {offset}")
    cls = MESSAGE_CLASSES[MessageType(mtype)]
    wanted = {int(opt): (name, kind) for name, opt, kind in cls.OPTIONS}
    values: dict[str, object] = {}
    seen: set[int] = set()
    pos = offset
    while pos < length:
        if pos + _TLV.size > length:
            raise DecodeError("truncated_option", f"option header at {pos}")
        code, size = _TLV.unpack_from(data, pos)
        pos += _TLV.size
        if pos + size > length:
            raise DecodeError("truncated_option", f"option {code} needs {size} bytes")
        chunk = data[pos : pos + size]
        pos += size
        if code not in wanted:
            continue  # unknown, or not one this type uses: ISC skips it
        if code in seen:
            raise DecodeError("duplicate_option", f"option {code} twice in {cls.TYPE.name}")
        seen.add(code)
        fixed = FIXED_SIZE.get(code)
        if fixed is not None and size != fixed:
            raise DecodeError("bad_option_length", f"option {code} has {size} bytes, not {fixed}")
        name, kind = wanted[code]
        values[name] = _get(kind, chunk)
    return cls(time=time, xid=xid, **values)


def describe(msg: Message) -> dict[str, object]:
    """JSON-friendly view (`carpsim decode`): type name plus every present option."""
    out: dict[str, object] = {"type": msg.name, "time": msg.time, "xid": msg.xid}
    for f in fields(msg):
        if f.name in ("time", "xid"):
            continue
        value = getattr(msg, f.name)
        if value is None:
            continue
        out[f.name] = (
            value.hex()
            if isinstance(value, bytes)
            else (str(value) if isinstance(value, IPv4Address) else value)
        )
    return out


class StreamFramer:
    """Cuts a TCP byte stream into messages on the length field.

    The buffer only ever holds one incomplete message (at most 2047 bytes) between calls. A
    bad length or a malformed message poisons the stream: the rest is unframeable, so the
    caller must drop the link, as ISC does.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> tuple[list[Message], DecodeError | None]:
        """Messages completed by `data`, and the error that poisoned the stream, if any."""
        if self.error is not None:
            return [], self.error
        out: list[Message] = []
        view = memoryview(data)
        pos = 0
        try:
            while pos < len(view):
                # The length is checked as soon as its two bytes are in, then the buffer is
                # topped up to exactly one message: never more than one is held.
                need = 2 if len(self._buf) < 2 else self._target()
                take = min(need - len(self._buf), len(view) - pos)
                self._buf += view[pos : pos + take]
                pos += take
                if len(self._buf) < 2:
                    break
                target = self._target()
                if len(self._buf) < target:
                    continue
                out.append(decode(bytes(self._buf)))
                self._buf.clear()
        except DecodeError as exc:
            self.error = exc
            self._buf.clear()
            return out, exc
        return out, None

    def _target(self) -> int:
        return message_length(bytes(self._buf[:2]))
