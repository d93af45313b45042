"""Wire-exact CARP codec: the 36-byte advertisement, its IPv4 carrier, and the HMAC.

Everything here follows OpenBSD/FreeBSD ip_carp.c. Decoding raises only `DecodeError` whose
reason is a `DropReason` value, so a driver can count drops by name without a translation table.
The hot paths (HMAC, checksum, header parsing) are written for speed because the simulator and
the daemon run them on every advert: the HMAC prefix state is precomputed per VHID (`CarpAuth`)
and checksums use one `struct` unpack instead of a Python loop.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

from carpsim.errors import DecodeError
from carpsim.protocol.constants import (
    CARP_AUTHLEN,
    CARP_DFLTTL,
    CARP_HEADER_LEN,
    CARP_TOS,
    CARP_TYPE_ADVERTISEMENT,
    CARP_VERSION,
    IPPROTO_CARP,
    IPV4_HEADER_LEN,
    MAX_PASSWORD_LEN,
    DropReason,
)
from carpsim.protocol.timers import advert_interval

VipLike = IPv4Address | IPv6Address | IPv4Interface | IPv6Interface

COUNTER_LEN = 8
MD_LEN = 20
IP_FLAG_DF = 0x4000
VRRP_V3 = 3

_ADVERT_HEAD = struct.Struct("!BBBBBBH")  # ver/type, vhid, advskew, authlen, demote, advbase, cksum
_VER_TYPE = (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT
_WORDS_36 = struct.Struct("!18H")
_WORDS_20 = struct.Struct("!10H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")


# --------------------------------------------------------------------------------------------
# checksums


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def carp_checksum(carp36: bytes) -> int:
    """RFC 1071 checksum over exactly 36 CARP bytes (no pseudo-header, as OpenBSD carp_cksum).

    Returns 0 for a header whose embedded checksum is correct.
    """
    return _fold(sum(_WORDS_36.unpack(carp36)))


def ipv4_header_checksum(header20: bytes) -> int:
    return _fold(sum(_WORDS_20.unpack(header20)))


# --------------------------------------------------------------------------------------------
# HMAC (BSD ip_carp.c carp_hmac_prepare, ucarp carp.c)


def _address(vip: VipLike) -> IPv4Address | IPv6Address:
    if isinstance(vip, IPv4Interface | IPv6Interface):
        return vip.ip
    return vip


def hmac_prefix(vhid: int, vips: Iterable[VipLike], *, include_link_local: bool = False) -> bytes:
    """Rows 1-6 of the HMAC message: 0x02 0x01 vhid, sorted IPv4, sorted IPv6.

    OpenBSD sends without IPv6 link-locals (HMAC_NOV6LL) and accepts either variant; FreeBSD
    includes them. The KAME scope word is never part of a Python address, so nothing to zero.
    """
    addrs = {_address(v) for v in vips}
    v4 = sorted(int(a) for a in addrs if isinstance(a, IPv4Address))
    v6 = sorted(
        a.packed
        for a in addrs
        if isinstance(a, IPv6Address) and (include_link_local or not a.is_link_local)
    )
    return b"\x02\x01" + bytes([vhid]) + b"".join(x.to_bytes(4, "big") for x in v4) + b"".join(v6)


def hmac_key(password: bytes) -> bytes:
    """BSD strlcpy keeps at most 19 bytes (setcarp_passwd); trailing zeros do not change HMAC."""
    return password[:MAX_PASSWORD_LEN]


def compute_hmac(
    password: bytes,
    vhid: int,
    vips: Iterable[VipLike],
    counter: bytes,
    *,
    include_link_local: bool = False,
) -> bytes:
    """The 20-byte md of an advert (OpenBSD carp_hmac_prepare). `include_link_local` gives
    the receive-side HMAC_ORIG variant that OpenBSD also accepts."""
    prefix = hmac_prefix(vhid, vips, include_link_local=include_link_local)
    return hmac.new(hmac_key(password), prefix + counter, hashlib.sha1).digest()


class CarpAuth:
    """Per-VHID HMAC state with the fixed prefix already absorbed.

    Copying a primed HMAC object and feeding only the 8 counter bytes is several times faster
    than `hmac.new` per packet.
    """

    __slots__ = ("_primed",)

    def __init__(self, password: bytes, vhid: int, vips: Iterable[VipLike]) -> None:
        vip_list = list(vips)
        key = hmac_key(password)
        variants = [hmac_prefix(vhid, vip_list)]
        with_ll = hmac_prefix(vhid, vip_list, include_link_local=True)
        if with_ll != variants[0]:
            variants.append(with_ll)
        self._primed = [hmac.new(key, p, hashlib.sha1) for p in variants]

    def sign(self, counter: bytes) -> bytes:
        h = self._primed[0].copy()
        h.update(counter)
        return h.digest()

    def verify(self, counter: bytes, md: bytes) -> bool:
        """Constant-time compare against every accepted variant (OpenBSD tries both)."""
        ok = False
        for primed in self._primed:
            h = primed.copy()
            h.update(counter)
            ok |= hmac.compare_digest(h.digest(), md)
        return ok


# --------------------------------------------------------------------------------------------
# dataclasses


@dataclass(frozen=True, slots=True)
class CarpAdvert:
    """The 36-byte CARP header, field for field (struct carp_header, ip_carp.h)."""

    version: int
    type: int
    vhid: int
    advskew: int
    authlen: int
    demote: int
    """OpenBSD demote count; FreeBSD/ucarp send 0 and ignore it."""
    advbase: int
    checksum: int
    counter: bytes
    md: bytes

    @property
    def interval(self) -> float:
        """Sender's advert period; OpenBSD uses 1/256 s when advbase and advskew are both 0."""
        return advert_interval(self.advbase, self.advskew)

    @property
    def is_bow_out(self) -> bool:
        return self.advbase == 255 and self.advskew == 255


@dataclass(frozen=True, slots=True)
class CarpPacket:
    """A CARP advert with the IPv4 fields a receiver (or a capture reader) cares about."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    tos: int
    ip_id: int
    advert: CarpAdvert
    carp_bytes: bytes
    """The 36 CARP bytes as received (the checksum and HMAC cover these)."""


# --------------------------------------------------------------------------------------------
# encoding


def build_advert(
    *, vhid: int, advbase: int, advskew: int, demote: int, counter: bytes, md: bytes
) -> bytes:
    """36 bytes with a correct checksum, from an md computed elsewhere (e.g. `CarpAuth.sign`)."""
    if len(counter) != COUNTER_LEN or len(md) != MD_LEN:
        raise ValueError("counter must be 8 bytes and md 20 bytes")
    head = _ADVERT_HEAD.pack(_VER_TYPE, vhid, advskew, CARP_AUTHLEN, demote, advbase, 0)
    raw = head + counter + md
    cksum = carp_checksum(raw)
    return raw[:6] + cksum.to_bytes(2, "big") + raw[8:]


def encode_packet(
    *,
    src: IPv4Address,
    dst: IPv4Address,
    ip_id: int,
    advert_bytes: bytes,
    ttl: int = CARP_DFLTTL,
    tos: int = CARP_TOS,
) -> bytes:
    """IPv4 header (DF, proto 112, correct header checksum) followed by the advert."""
    total = IPV4_HEADER_LEN + len(advert_bytes)
    header = _IPV4.pack(
        0x45, tos, total, ip_id & 0xFFFF, IP_FLAG_DF, ttl, IPPROTO_CARP, 0, src.packed, dst.packed
    )
    cksum = ipv4_header_checksum(header)
    return header[:10] + cksum.to_bytes(2, "big") + header[12:] + advert_bytes


# --------------------------------------------------------------------------------------------
# decoding


@lru_cache(maxsize=4096)
def _ipv4(packed: bytes) -> IPv4Address:
    # A LAN has few distinct addresses; caching avoids re-validating them on every advert.
    return IPv4Address(packed)


def _looks_like_vrrp(payload: bytes) -> bool:
    """VRRPv2 shares byte 0 (0x21) with CARP; VRRPv3 has 0x31 (RFC 3768, RFC 5798)."""
    if not payload:
        return False
    version, kind = payload[0] >> 4, payload[0] & 0x0F
    if kind != 1 or version not in (CARP_VERSION, VRRP_V3):
        return False
    if version == VRRP_V3:
        return True
    # Byte 3 is CARP's authlen (always 7) but VRRPv2's address count: a short packet that still
    # says authlen 7 is a truncated CARP advert (badlen), not VRRP.
    return len(payload) >= 4 and payload[3] != CARP_AUTHLEN


def _advert_from(data: bytes) -> CarpAdvert:
    ver_type, vhid, advskew, authlen, demote, advbase, cksum = _ADVERT_HEAD.unpack_from(data)
    return CarpAdvert(
        ver_type >> 4,
        ver_type & 0x0F,
        vhid,
        advskew,
        authlen,
        demote,
        advbase,
        cksum,
        data[8:16],
        data[16:36],
    )


def decode_advert(data: bytes, *, check_sum: bool = True) -> CarpAdvert:
    """Parse raw CARP bytes (no IP header): badlen, not_carp (VRRP), badsum, badver.

    `check_sum=False` lets a capture reader show (and flag) adverts with a bad checksum.
    """
    if _looks_like_vrrp(data):
        raise DecodeError(DropReason.NOT_CARP, "VRRP on protocol 112")
    if len(data) < CARP_HEADER_LEN:
        raise DecodeError(DropReason.BADLEN, f"{len(data)} CARP bytes, need 36")
    carp = data[:CARP_HEADER_LEN]
    if check_sum and carp_checksum(carp) != 0:
        raise DecodeError(DropReason.BADSUM, "CARP checksum mismatch")
    if carp[0] >> 4 != CARP_VERSION:
        raise DecodeError(DropReason.BADVER, f"version {carp[0] >> 4}")
    return _advert_from(carp)


def _split_ipv4(data: bytes) -> tuple[tuple[Any, ...], bytes]:
    """Return the unpacked IPv4 header fields and the protocol payload."""
    if len(data) < IPV4_HEADER_LEN:
        raise DecodeError(DropReason.BADLEN, f"{len(data)} bytes, shorter than an IPv4 header")
    fields = _IPV4.unpack_from(data)
    ver_ihl, total_len = fields[0], fields[2]
    if ver_ihl >> 4 != 4:
        raise DecodeError(DropReason.NOT_CARP, f"IP version {ver_ihl >> 4}")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN or total_len < ihl or total_len > len(data):
        raise DecodeError(DropReason.BADLEN, f"IPv4 ihl {ihl} total length {total_len}")
    return fields, data[ihl:total_len]


def decode_packet(data: bytes, *, check_ttl: bool = True, check_sum: bool = True) -> CarpPacket:
    """Parse an IPv4 packet carrying a CARP advert, checking in OpenBSD order (carp_proto_input_if):
    TTL, length, checksum, version. VRRP on protocol 112 is `not_carp`, never `badver`.

    `check_ttl=False` is FreeBSD's behaviour for unicast peers (and lets a capture reader
    show packets whose TTL was rewritten).
    """
    fields, payload = _split_ipv4(data)
    _, tos, _, ip_id, _, ttl, proto, _, src, dst = fields
    if proto != IPPROTO_CARP:
        raise DecodeError(DropReason.NOT_CARP, f"IP protocol {proto}")
    if check_ttl and ttl != CARP_DFLTTL:
        raise DecodeError(DropReason.BADTTL, f"ttl {ttl} != 255")
    advert = decode_advert(payload, check_sum=check_sum)
    return CarpPacket(_ipv4(src), _ipv4(dst), ttl, tos, ip_id, advert, payload[:CARP_HEADER_LEN])


def ip_protocol(data: bytes) -> int:
    """The IPv4 protocol number, for dispatching captures (112 CARP/VRRP, 240 pfsync...)."""
    fields, _ = _split_ipv4(data)
    return int(fields[6])


def split_ipv4(data: bytes) -> tuple[tuple[Any, ...], bytes]:
    """The unpacked IPv4 header fields and the payload, with `decode_packet`'s length checks."""
    return _split_ipv4(data)


def looks_like_vrrp(payload: bytes) -> bool:
    """Protocol-112 bytes that are VRRPv2/v3 rather than CARP (for presentation tools)."""
    return _looks_like_vrrp(payload)
