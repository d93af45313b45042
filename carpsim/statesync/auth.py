"""Keyed state sync (`[statesync] key`): every frame authenticated, replays refused.

pfsync has no authentication (it relies on an isolated link or IPsec). With a shared key,
carpsim seals each frame with an XAUTH subheader (action 0xF2, one 32-byte record) placed last,
right before EOF:

    0  u32 epoch    the sender's incarnation (the XSEQ epoch; random, odd)
    4  u32 pad      0
    8  u64 counter  per-epoch frame counter, 1, 2, ... (every frame, sequenced or not)
    16 16  mac      HMAC-SHA256(key, frame bytes from the pfsync header up to this field)[:16]

The MAC covers the header (whose length field includes XAUTH and EOF) and every subheader
before it, so nothing can be added, removed or changed. The receiver checks the MAC before it
decodes anything (`badauth`), then the counter against a per-epoch replay window
(`ReplayWindow`, `replay`). Without a key no XAUTH is sent and the frame is plain pfsync.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from carpsim.errors import DecodeError
from carpsim.statesync.constants import HEADER_LEN, SUBHEADER_LEN, Act, SyncDropReason

XAUTH_LEN = 32
MAC_LEN = 16
_SUB = struct.Struct("!BBH")
_HEAD = struct.Struct("!IIQ")
_EOF = _SUB.pack(Act.EOF, 0, 0)
SEAL_OVERHEAD = SUBHEADER_LEN + XAUTH_LEN
REPLAY_WINDOW = 1024
"""Counters this far below the highest seen are still accepted once (reordering)."""
RETIRED_EPOCHS = 16


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


def seal(frame: bytes, key: bytes, epoch: int, counter: int) -> bytes:
    """`frame` (header ... EOF) with an XAUTH section inserted before its EOF."""
    head = bytearray(frame[:-SUBHEADER_LEN])
    head += _SUB.pack(Act.XAUTH, XAUTH_LEN // 4, 1) + _HEAD.pack(epoch, 0, counter)
    head[2:4] = (len(head) + MAC_LEN + SUBHEADER_LEN).to_bytes(2, "big")
    return bytes(head) + _mac(key, bytes(head)) + _EOF


def unseal(data: bytes, key: bytes) -> tuple[int, int]:
    """(epoch, counter) of an authentic frame; `DecodeError("badauth")` otherwise."""
    n = len(data)
    if n < HEADER_LEN + SEAL_OVERHEAD + SUBHEADER_LEN:
        raise DecodeError(SyncDropReason.BADAUTH, "no XAUTH")
    total = int.from_bytes(data[2:4], "big")
    if total != n or data[n - SUBHEADER_LEN :] != _EOF:
        raise DecodeError(SyncDropReason.BADAUTH, f"length {total} of {n}")
    at = n - SUBHEADER_LEN - SEAL_OVERHEAD
    if data[at] != Act.XAUTH or data[at + 2 : at + 4] != b"\x00\x01":
        raise DecodeError(SyncDropReason.BADAUTH, "XAUTH is not the last subheader")
    mac_at = n - SUBHEADER_LEN - MAC_LEN
    if not hmac.compare_digest(_mac(key, data[:mac_at]), data[mac_at : mac_at + MAC_LEN]):
        raise DecodeError(SyncDropReason.BADAUTH, "wrong MAC")
    epoch, _pad, counter = _HEAD.unpack_from(data, at + SUBHEADER_LEN)
    return epoch, counter


class ReplayWindow:
    """Per sender epoch: the highest counter and a bitmap of the `REPLAY_WINDOW` below it.

    A new epoch (the peer restarted) opens a new window; the epochs left behind are remembered
    (the last `RETIRED_EPOCHS`), so a recorded frame of an earlier incarnation cannot flip the
    receiver back to it. Bounded: one integer bitmap and a short list.
    """

    __slots__ = ("_bits", "_retired", "epoch", "top")

    def __init__(self) -> None:
        self.epoch = 0
        self.top = 0
        self._bits = 0
        self._retired: list[int] = []

    def check(self, epoch: int, counter: int) -> bool:
        """True (and recorded) if this (epoch, counter) has not been seen."""
        if counter == 0:
            return False
        if epoch != self.epoch:
            if epoch in self._retired:
                return False
            if self.epoch:
                self._retired = [*self._retired, self.epoch][-RETIRED_EPOCHS:]
            self.epoch, self.top, self._bits = epoch, counter, 1
            return True
        if counter > self.top:
            shift = counter - self.top
            self._bits = ((self._bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = counter
            return True
        back = self.top - counter
        if back >= REPLAY_WINDOW or self._bits >> back & 1:
            return False
        self._bits |= 1 << back
        return True
