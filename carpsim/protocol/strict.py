"""CARP strict mode (`[carp] strict = true`, carpsim-only clusters; docs/security.md).

The protocol's HMAC covers version, type, vhid, the counter and the VIPs, but not advskew,
advbase or demote, and nothing makes an advert fresh: a captured advert, rewritten to a worse
skew or replayed, makes a master step down. Strict mode keeps the 36-byte advert layout but:

* the 20-byte md is HMAC-SHA256(password, "carpsim-strict-v1" | version/type | vhid | advskew |
  advbase | demote | counter | VIPs)[:20]: every field that steers the election is covered;
* the 8-byte counter is (incarnation u32 random per process, seq u32 from 1 per advert), and
  each receiver keeps, per source address, the incarnation and the last seq it accepted: an
  advert whose seq does not increase is a replay (`replay`). A restarted peer comes back with
  a new incarnation and is accepted from its first advert; the incarnations a source left
  are remembered (`RETIRED`) so recorded adverts of an earlier life cannot be replayed.

A non-strict peer (ucarp, BSD) computes the md the protocol's way, so strict and non-strict
nodes refuse each other's adverts (`badauth`): strict clusters are carpsim-only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from carpsim.protocol.codec import VipLike, hmac_prefix

_TAG = b"carpsim-strict-v1"
RETIRED = 16
MAX_SOURCES = 64


def strict_md(
    password: bytes, vhid: int, vips: Iterable[VipLike], *, advskew: int, advbase: int,
    demote: int, counter: bytes,
) -> bytes:  # fmt: skip
    prefix = hmac_prefix(vhid, vips)
    data = _TAG + prefix[:3] + bytes([advskew, advbase, demote]) + counter + prefix[3:]
    return hmac.new(password, data, hashlib.sha256).digest()[:20]


class Freshness:
    """Per source: (incarnation, last seq) and the incarnations it left (bounded)."""

    __slots__ = ("_by_src",)

    def __init__(self) -> None:
        self._by_src: dict[str, tuple[bytes, int, list[bytes]]] = {}

    def fresh(self, src: str, counter: bytes) -> bool:
        """True (and recorded) if `counter` moves `src` forward."""
        inc, seq = counter[:4], int.from_bytes(counter[4:], "big")
        cur = self._by_src.get(src)
        if cur is None:
            if len(self._by_src) >= MAX_SOURCES:
                del self._by_src[next(iter(self._by_src))]
            self._by_src[src] = (inc, seq, [])
            return True
        last_inc, last_seq, retired = cur
        if inc == last_inc:
            if seq <= last_seq:
                return False
            self._by_src[src] = (inc, seq, retired)
            return True
        if inc in retired:
            return False
        self._by_src[src] = (inc, seq, [*retired, last_inc][-RETIRED:])
        return True
